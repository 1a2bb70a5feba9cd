# One aliased provider per region: Terraform 1.11 has no for_each on provider blocks.
# Adding a region to geoshard means adding a provider here, a module block in main.tf,
# and the name to the region map in variables.tf.

locals {
  provider_tags = merge(var.tags, { Project = var.project, ManagedBy = "terraform" })
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"

  default_tags {
    tags = local.provider_tags
  }
}

provider "aws" {
  alias  = "eu_central_1"
  region = "eu-central-1"

  default_tags {
    tags = local.provider_tags
  }
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"

  default_tags {
    tags = local.provider_tags
  }
}

provider "aws" {
  alias  = "us_west_2"
  region = "us-west-2"

  default_tags {
    tags = local.provider_tags
  }
}

provider "aws" {
  alias  = "ap_southeast_1"
  region = "ap-southeast-1"

  default_tags {
    tags = local.provider_tags
  }
}

provider "aws" {
  alias  = "ap_northeast_1"
  region = "ap-northeast-1"

  default_tags {
    tags = local.provider_tags
  }
}
