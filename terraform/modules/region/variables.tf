################################################################################
# Identity and residency
################################################################################

variable "project" {
  description = "Project name, used as a prefix for every resource name and as the `Project` tag."
  type        = string
  default     = "geoshard"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project))
    error_message = "project must be 2-21 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "name" {
  description = "Region name as written in the geoshard spec, for example `eu-west`. Used in resource names; changing it forces replacement of most resources."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 characters of lowercase letters, digits and '-', starting with a letter (a spec region name such as 'eu-west')."
  }

  validation {
    condition     = length("${var.project}-${var.name}") <= 40
    error_message = "'${var.project}-${var.name}' is ${length("${var.project}-${var.name}")} characters; project and name together must stay within 39 so the ElastiCache replication group ID fits 40."
  }
}

variable "aws_region" {
  description = "AWS region code this module is deployed to, for example `eu-west-1`. Must equal the region of the `aws` provider passed to the module and be one of `allowed_personal_data_regions`."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must be an AWS region code such as 'eu-west-1'."
  }

  validation {
    condition     = contains(var.allowed_personal_data_regions, var.aws_region)
    error_message = "Data residency: the personal-data bucket of jurisdiction '${var.jurisdiction}' may only be created in [${join(", ", var.allowed_personal_data_regions)}], not in '${var.aws_region}'. Move the region to a jurisdiction that lists it, or deploy it elsewhere."
  }
}

variable "jurisdiction" {
  description = "Data-residency jurisdiction of the personal data stored in this region, for example `eu`, `us` or `apac`. Written to the `Jurisdiction` tag of every resource."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,15}$", var.jurisdiction))
    error_message = "jurisdiction must be 1-16 characters of lowercase letters, digits and '-', for example 'eu'."
  }
}

variable "allowed_personal_data_regions" {
  description = "AWS region codes where personal data of `jurisdiction` may be stored (the spec's `jurisdictions[jurisdiction]`). The module refuses to create its personal-data bucket anywhere else."
  type        = list(string)

  validation {
    condition     = length(var.allowed_personal_data_regions) > 0
    error_message = "allowed_personal_data_regions must list at least one AWS region code."
  }
}

variable "tags" {
  description = "Tags added to every resource, merged under the module's own `Project`, `Region`, `Jurisdiction` and `DataResidency` tags."
  type        = map(string)
  default     = {}
}

################################################################################
# Network
################################################################################

variable "vpc_cidr" {
  description = "IPv4 CIDR of the region's VPC, for example `10.10.0.0/16`. Split into one API and one data subnet per availability zone. Changing it forces replacement of the VPC."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR of /20 or larger, for example '10.10.0.0/16'."
  }
}

variable "az_count" {
  description = "Number of availability zones to spread subnets, Redis nodes and tasks over (the spec's `azs`). Between `2` and `6`; Multi-AZ Redis needs at least 2."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number between 2 and 6."
  }
}

################################################################################
# Hot tier: ElastiCache for Redis (cluster mode)
################################################################################

variable "redis" {
  description = "Hot tier sizing from the spec: `num_shards` (node groups, 1-500), `replicas_per_shard` (1-5; at least 1 for Multi-AZ failover) and `node_type` (a `cache.*` node type)."
  type = object({
    num_shards         = number
    replicas_per_shard = number
    node_type          = string
  })

  validation {
    condition     = var.redis.num_shards >= 1 && var.redis.num_shards <= 500
    error_message = "redis.num_shards must be between 1 and 500."
  }

  validation {
    condition     = var.redis.replicas_per_shard >= 1 && var.redis.replicas_per_shard <= 5
    error_message = "redis.replicas_per_shard must be between 1 and 5: Multi-AZ with automatic failover needs a replica in each shard."
  }

  validation {
    condition     = startswith(var.redis.node_type, "cache.")
    error_message = "redis.node_type must be an ElastiCache node type such as 'cache.r7g.large'."
  }
}

variable "redis_engine_version" {
  description = "Redis OSS engine version for the replication group, for example `7.1`. Upgrading in place is supported; downgrading forces replacement."
  type        = string
  default     = "7.1"
}

variable "redis_snapshot_retention_days" {
  description = "Days of automatic Redis snapshots to keep in this region (`0` disables them). Snapshots stay in the region; they are never copied elsewhere."
  type        = number
  default     = 7
}

################################################################################
# Cold tier: S3 (Parquet)
################################################################################

variable "cold" {
  description = "Cold tier lifecycle from the spec: days after which objects move to `STANDARD_IA` (`transition_ia_days`, at least 30) and then to `GLACIER` (`transition_glacier_days`, later than the IA transition)."
  type = object({
    transition_ia_days      = number
    transition_glacier_days = number
  })

  validation {
    condition     = var.cold.transition_ia_days >= 30
    error_message = "cold.transition_ia_days must be at least 30: S3 does not move objects to STANDARD_IA earlier."
  }

  validation {
    condition     = var.cold.transition_glacier_days > var.cold.transition_ia_days
    error_message = "cold.transition_glacier_days must be greater than cold.transition_ia_days."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which non-current object versions in the cold bucket are deleted, so that an erasure (GDPR Art. 17) also reaches old versions."
  type        = number
  default     = 30
}

################################################################################
# Compute: ECS on Fargate (API and Milvus)
################################################################################

variable "api" {
  description = "API service sizing from the spec: `desired_count` tasks, and Fargate task `cpu` (CPU units, 1024 = 1 vCPU) and `memory` (MiB)."
  type = object({
    desired_count = number
    cpu           = number
    memory        = number
  })

  validation {
    condition     = var.api.desired_count >= 1
    error_message = "api.desired_count must be at least 1."
  }

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.api.cpu)
    error_message = "api.cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "api_port" {
  description = "TCP port the API container listens on."
  type        = number
  default     = 8080
}

variable "api_ingress_cidrs" {
  description = "CIDRs allowed to reach the API tasks on `api_port`, for example the subnets of a load balancer or of a Global Accelerator endpoint group. Defaults to the VPC CIDR. `0.0.0.0/0` is rejected: put a load balancer in front instead."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.api_ingress_cidrs, "0.0.0.0/0") && !contains(var.api_ingress_cidrs, "::/0")
    error_message = "api_ingress_cidrs must not contain 0.0.0.0/0 or ::/0; the API tasks run in private subnets behind a load balancer."
  }
}

variable "milvus" {
  description = "Warm tier (Milvus) from the spec. With a non-empty `external_endpoint` (`host:port`) no Milvus compute is created and the API uses that endpoint. With an empty one the module runs Milvus standalone on Fargate with `cpu` units and `memory` MiB; standalone runs a single task, so `desired_count` above 1 only raises a warning."
  type = object({
    desired_count     = number
    cpu               = number
    memory            = number
    external_endpoint = string
  })

  validation {
    condition     = var.milvus.external_endpoint == "" || can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", var.milvus.external_endpoint))
    error_message = "milvus.external_endpoint must be empty or 'host:port', for example 'milvus.eu-west-1.internal:19530'."
  }

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.milvus.cpu)
    error_message = "milvus.cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "container_images" {
  description = "Container images as `repository:tag` in this account's private ECR registry of the same region (replicate them with ECR replication). Pulling from the region keeps the tasks without internet egress."
  type = object({
    api    = string
    milvus = string
  })
  default = {
    api    = "geoshard/api:0.1.0"
    milvus = "milvusdb/milvus:v2.5.4"
  }

  validation {
    condition     = alltrue([for image in values(var.container_images) : can(regex("^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$", image))])
    error_message = "container_images values must be 'repository:tag', for example 'geoshard/api:0.1.0'."
  }
}

################################################################################
# Monitoring
################################################################################

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (VPC flow logs, Redis slow log, ECS tasks). The logs hold IP addresses, so they stay in the region and are encrypted with the region's KMS key."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value such as 30, 90, 365 or 731."
  }
}

variable "alarm_actions" {
  description = "Extra ARNs (SNS topics, for example a pager integration) notified by every alarm, besides the module's own encrypted SNS topic."
  type        = list(string)
  default     = []
}
