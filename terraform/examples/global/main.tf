# One module block per region, each with its own aliased provider. `count` follows the
# tfvars: a region missing from var.regions gets no resources.

locals {
  # Inputs of the region module, per spec region name.
  region_inputs = {
    for name, region in var.regions : name => {
      aws_region                    = region.aws_region
      jurisdiction                  = region.jurisdiction
      allowed_personal_data_regions = var.jurisdictions[region.jurisdiction]
      vpc_cidr                      = region.vpc_cidr
      az_count                      = region.azs
      redis                         = region.redis
      api                           = region.api
      milvus                        = region.milvus
      cold                          = region.cold
      alarm_actions                 = lookup(var.alarm_actions, name, [])
    }
  }
}

module "eu_west" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "eu-west") ? 1 : 0

  providers = {
    aws = aws.eu_west_1
  }

  project                       = var.project
  name                          = "eu-west"
  aws_region                    = local.region_inputs["eu-west"].aws_region
  jurisdiction                  = local.region_inputs["eu-west"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["eu-west"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["eu-west"].vpc_cidr
  az_count                      = local.region_inputs["eu-west"].az_count
  redis                         = local.region_inputs["eu-west"].redis
  api                           = local.region_inputs["eu-west"].api
  milvus                        = local.region_inputs["eu-west"].milvus
  cold                          = local.region_inputs["eu-west"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["eu-west"].alarm_actions
}

module "eu_central" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "eu-central") ? 1 : 0

  providers = {
    aws = aws.eu_central_1
  }

  project                       = var.project
  name                          = "eu-central"
  aws_region                    = local.region_inputs["eu-central"].aws_region
  jurisdiction                  = local.region_inputs["eu-central"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["eu-central"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["eu-central"].vpc_cidr
  az_count                      = local.region_inputs["eu-central"].az_count
  redis                         = local.region_inputs["eu-central"].redis
  api                           = local.region_inputs["eu-central"].api
  milvus                        = local.region_inputs["eu-central"].milvus
  cold                          = local.region_inputs["eu-central"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["eu-central"].alarm_actions
}

module "us_east" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "us-east") ? 1 : 0

  providers = {
    aws = aws.us_east_1
  }

  project                       = var.project
  name                          = "us-east"
  aws_region                    = local.region_inputs["us-east"].aws_region
  jurisdiction                  = local.region_inputs["us-east"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["us-east"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["us-east"].vpc_cidr
  az_count                      = local.region_inputs["us-east"].az_count
  redis                         = local.region_inputs["us-east"].redis
  api                           = local.region_inputs["us-east"].api
  milvus                        = local.region_inputs["us-east"].milvus
  cold                          = local.region_inputs["us-east"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["us-east"].alarm_actions
}

module "us_west" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "us-west") ? 1 : 0

  providers = {
    aws = aws.us_west_2
  }

  project                       = var.project
  name                          = "us-west"
  aws_region                    = local.region_inputs["us-west"].aws_region
  jurisdiction                  = local.region_inputs["us-west"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["us-west"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["us-west"].vpc_cidr
  az_count                      = local.region_inputs["us-west"].az_count
  redis                         = local.region_inputs["us-west"].redis
  api                           = local.region_inputs["us-west"].api
  milvus                        = local.region_inputs["us-west"].milvus
  cold                          = local.region_inputs["us-west"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["us-west"].alarm_actions
}

module "ap_southeast" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "ap-southeast") ? 1 : 0

  providers = {
    aws = aws.ap_southeast_1
  }

  project                       = var.project
  name                          = "ap-southeast"
  aws_region                    = local.region_inputs["ap-southeast"].aws_region
  jurisdiction                  = local.region_inputs["ap-southeast"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["ap-southeast"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["ap-southeast"].vpc_cidr
  az_count                      = local.region_inputs["ap-southeast"].az_count
  redis                         = local.region_inputs["ap-southeast"].redis
  api                           = local.region_inputs["ap-southeast"].api
  milvus                        = local.region_inputs["ap-southeast"].milvus
  cold                          = local.region_inputs["ap-southeast"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["ap-southeast"].alarm_actions
}

module "ap_northeast" {
  source = "../../modules/region"
  count  = contains(keys(var.regions), "ap-northeast") ? 1 : 0

  providers = {
    aws = aws.ap_northeast_1
  }

  project                       = var.project
  name                          = "ap-northeast"
  aws_region                    = local.region_inputs["ap-northeast"].aws_region
  jurisdiction                  = local.region_inputs["ap-northeast"].jurisdiction
  allowed_personal_data_regions = local.region_inputs["ap-northeast"].allowed_personal_data_regions
  vpc_cidr                      = local.region_inputs["ap-northeast"].vpc_cidr
  az_count                      = local.region_inputs["ap-northeast"].az_count
  redis                         = local.region_inputs["ap-northeast"].redis
  api                           = local.region_inputs["ap-northeast"].api
  milvus                        = local.region_inputs["ap-northeast"].milvus
  cold                          = local.region_inputs["ap-northeast"].cold
  container_images              = var.container_images
  alarm_actions                 = local.region_inputs["ap-northeast"].alarm_actions
}
