# Plan-only tests of the global example with one mocked provider per alias.
# Run from terraform/examples/global: terraform init -backend=false -plugin-dir=... && terraform test

mock_provider "aws" {
  alias  = "eu_west_1"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }
}

mock_provider "aws" {
  alias  = "eu_central_1"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "eu-central-1"
    }
  }
}

mock_provider "aws" {
  alias  = "us_east_1"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }
}

mock_provider "aws" {
  alias  = "us_west_2"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "us-west-2"
    }
  }
}

mock_provider "aws" {
  alias  = "ap_southeast_1"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "ap-southeast-1"
    }
  }
}

mock_provider "aws" {
  alias  = "ap_northeast_1"
  source = "./tests/mocks"

  mock_data "aws_region" {
    defaults = {
      name = "ap-northeast-1"
    }
  }
}

# The committed example tfvars is exactly what `geoshard terraform examples/global.yaml`
# writes (a unit test keeps it so), and the runs below plan it as it is: every region
# with milvus.external_endpoint empty runs Milvus standalone, one task.
variables {
  project       = jsondecode(file("terraform.example.tfvars.json")).project
  jurisdictions = jsondecode(file("terraform.example.tfvars.json")).jurisdictions
  regions       = jsondecode(file("terraform.example.tfvars.json")).regions
}

run "an_external_milvus_endpoint_replaces_standalone_milvus" {
  command = plan

  variables {
    regions = {
      for name, region in jsondecode(file("terraform.example.tfvars.json")).regions :
      name => merge(region, { milvus = merge(region.milvus, { external_endpoint = "milvus.${region.aws_region}.geoshard.internal:19530" }) })
    }
  }

  assert {
    condition     = length(output.region_names) == 6
    error_message = "Every tfvars region is deployed with an external Milvus too."
  }

  assert {
    condition     = output.regions["eu-west"].milvus_endpoint == "milvus.eu-west-1.geoshard.internal:19530"
    error_message = "The external Milvus endpoint must reach the region module."
  }
}

run "every_region_in_the_tfvars_is_deployed" {
  command = plan

  assert {
    condition     = output.region_names == sort(keys(jsondecode(file("terraform.example.tfvars.json")).regions))
    error_message = "One region module instance per tfvars region was expected."
  }

  assert {
    condition     = length(output.region_names) == 6
    error_message = "The example tfvars has six regions."
  }

  assert {
    condition     = length(module.eu_west) == 1 && module.eu_west[0].aws_region == "eu-west-1" && module.eu_west[0].jurisdiction == "eu"
    error_message = "eu-west must be deployed to eu-west-1 as an EU region."
  }

  assert {
    condition     = output.regions["eu-west"].milvus_endpoint == "milvus.geoshard-global-eu-west.internal:19530"
    error_message = "Without an external endpoint the region runs Milvus standalone behind its own service name."
  }

  assert {
    condition     = output.personal_data_buckets_by_jurisdiction["eu"] == tolist(["geoshard-global-eu-central-cold-123456789012", "geoshard-global-eu-west-cold-123456789012"])
    error_message = "The EU personal-data buckets must be exactly those of eu-central and eu-west."
  }
}

run "region_count_follows_the_tfvars" {
  command = plan

  variables {
    regions = {
      for name, region in var.regions : name => region if contains(["eu-central", "us-west"], name)
    }
  }

  assert {
    condition     = output.region_names == tolist(["eu-central", "us-west"])
    error_message = "Only the regions in the tfvars may be deployed."
  }

  assert {
    condition     = length(module.eu_west) == 0 && length(module.us_east) == 0 && length(module.ap_southeast) == 0
    error_message = "Regions missing from the tfvars must have no module instance."
  }
}

run "eu_personal_data_in_a_us_region_is_rejected" {
  command = plan

  variables {
    regions = {
      for name, region in var.regions : name => (name == "us-east" ? merge(region, { jurisdiction = "eu" }) : region)
    }
  }

  expect_failures = [var.regions]
}

run "unknown_jurisdiction_is_rejected" {
  command = plan

  variables {
    regions = {
      for name, region in var.regions : name => (name == "ap-southeast" ? merge(region, { jurisdiction = "cn" }) : region)
    }
  }

  expect_failures = [var.regions]
}

run "region_name_wired_to_another_aws_region_is_rejected" {
  command = plan

  variables {
    regions = {
      for name, region in var.regions : name => (name == "eu-west" ? merge(region, { aws_region = "eu-central-1" }) : region)
    }
  }

  expect_failures = [var.regions]
}

run "region_without_a_provider_is_rejected" {
  command = plan

  variables {
    regions = merge(var.regions, { "sa-east" = merge(var.regions["us-east"], { aws_region = "sa-east-1" }) })
  }

  expect_failures = [var.regions]
}
