locals {
  region_modules = {
    "eu-west"      = module.eu_west,
    "eu-central"   = module.eu_central,
    "us-east"      = module.us_east,
    "us-west"      = module.us_west,
    "ap-southeast" = module.ap_southeast,
    "ap-northeast" = module.ap_northeast
  }
  deployed = { for name, instances in local.region_modules : name => instances[0] if length(instances) > 0 }
}

output "region_names" {
  description = "Spec names of the regions deployed, sorted; follows the keys of `regions` in the tfvars."
  value       = sort(keys(local.deployed))
}

output "regions" {
  description = "Per deployed region: AWS region, jurisdiction, VPC, Redis configuration endpoint and AUTH secret, Milvus endpoint, cold bucket, KMS key and alarm topic."
  value = {
    for name, region in local.deployed : name => {
      aws_region                   = region.aws_region
      jurisdiction                 = region.jurisdiction
      vpc_id                       = region.vpc_id
      redis_configuration_endpoint = region.redis_configuration_endpoint
      redis_auth_secret_arn        = region.redis_auth_secret_arn
      milvus_endpoint              = region.milvus_endpoint
      cold_bucket_name             = region.cold_bucket_name
      kms_key_arn                  = region.kms_key_arn
      alarm_topic_arn              = region.alarm_topic_arn
    }
  }
}

output "personal_data_buckets_by_jurisdiction" {
  description = "Cold (personal data) bucket names per jurisdiction; every one lives in a region listed for that jurisdiction."
  value = {
    for jurisdiction in distinct([for region in local.deployed : region.jurisdiction]) :
    jurisdiction => sort([for region in local.deployed : region.cold_bucket_name if region.jurisdiction == jurisdiction])
  }
}
