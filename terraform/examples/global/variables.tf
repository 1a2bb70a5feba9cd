################################################################################
# Written by `geoshard terraform SPEC --out terraform.tfvars.json`
################################################################################

variable "project" {
  description = "Project name, used as a prefix for every resource name and as the `Project` tag."
  type        = string
  default     = "geoshard"
}

variable "regions" {
  description = "Regions to deploy, keyed by spec region name. Known names and their AWS regions: `eu-west` (eu-west-1), `eu-central` (eu-central-1), `us-east` (us-east-1), `us-west` (us-west-2), `ap-southeast` (ap-southeast-1), `ap-northeast` (ap-northeast-1). A region left out is not deployed (its resources are destroyed)."
  type = map(object({
    aws_region   = string
    jurisdiction = string
    vpc_cidr     = string
    azs          = number
    redis = object({
      num_shards         = number
      replicas_per_shard = number
      node_type          = string
    })
    api = object({
      desired_count = number
      cpu           = number
      memory        = number
    })
    milvus = object({
      desired_count     = number
      cpu               = number
      memory            = number
      external_endpoint = string
    })
    cold = object({
      transition_ia_days      = number
      transition_glacier_days = number
    })
  }))

  validation {
    condition = alltrue([
      for name in keys(var.regions) :
      contains(["eu-west", "eu-central", "us-east", "us-west", "ap-southeast", "ap-northeast"], name)
    ])
    error_message = "regions has names without a provider in this root: [${join(", ", [for name in keys(var.regions) : name if !contains(["eu-west", "eu-central", "us-east", "us-west", "ap-southeast", "ap-northeast"], name)])}]. Known: eu-west, eu-central, us-east, us-west, ap-southeast, ap-northeast; add a provider and a module block for a new one."
  }

  validation {
    condition = alltrue([
      for name, region in var.regions :
      lookup({
        "eu-west"      = "eu-west-1"
        "eu-central"   = "eu-central-1"
        "us-east"      = "us-east-1"
        "us-west"      = "us-west-2"
        "ap-southeast" = "ap-southeast-1"
        "ap-northeast" = "ap-northeast-1"
      }, name, region.aws_region) == region.aws_region
    ])
    error_message = "Each region's aws_region must match the provider wired to its name (eu-west = eu-west-1, eu-central = eu-central-1, us-east = us-east-1, us-west = us-west-2, ap-southeast = ap-southeast-1, ap-northeast = ap-northeast-1)."
  }

  # Residency: a region's personal-data bucket is created only where its jurisdiction allows.
  validation {
    condition = alltrue([
      for name, region in var.regions :
      contains(lookup(var.jurisdictions, region.jurisdiction, []), region.aws_region)
    ])
    error_message = "Data residency: these regions would store personal data outside their jurisdiction: [${join(", ", [for name, region in var.regions : "${name} (${region.jurisdiction} in ${region.aws_region})" if !contains(lookup(var.jurisdictions, region.jurisdiction, []), region.aws_region)])}]. A jurisdiction's personal data may only be stored in the regions listed for it in jurisdictions."
  }
}

variable "jurisdictions" {
  description = "AWS region codes where each jurisdiction's personal data may be stored, for example `{ eu = [\"eu-west-1\", \"eu-central-1\"] }`."
  type        = map(list(string))

  validation {
    condition     = alltrue(flatten([for codes in values(var.jurisdictions) : [for code in codes : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", code))]]))
    error_message = "jurisdictions values must be lists of AWS region codes such as 'eu-west-1'."
  }
}

################################################################################
# Set by the operator
################################################################################

variable "container_images" {
  description = "Container images as `repository:tag` in each region's private ECR registry (replicate them there with ECR replication)."
  type = object({
    api    = string
    milvus = string
  })
  default = {
    api    = "geoshard/api:0.1.0"
    milvus = "milvusdb/milvus:v2.5.4"
  }
}

variable "alarm_actions" {
  description = "Extra alarm action ARNs per spec region name, for example `{ eu-west = [\"arn:aws:sns:eu-west-1:123456789012:pager\"] }`. Each must live in that region."
  type        = map(list(string))
  default     = {}
}

variable "tags" {
  description = "Tags added to every resource through the providers' default_tags."
  type        = map(string)
  default     = {}
}
