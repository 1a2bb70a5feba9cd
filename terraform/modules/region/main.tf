data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# Allowlist the region's standard zones (<region>a-f) so a newly added zone, a Local Zone
# or a Wavelength Zone never shifts where subnets land (CKV_AWS_394).
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for letter in ["a", "b", "c", "d", "e", "f"] : "${var.aws_region}${letter}"]
  }

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  name       = "${var.project}-${var.name}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix

  azs = slice(sort(data.aws_availability_zones.available.names), 0, var.az_count)

  # /20s (for a /16): API subnets first, data subnets (Redis, Milvus, EFS, endpoints) in the upper half.
  api_subnet_cidrs  = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 4, i)]
  data_subnet_cidrs = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 4, 8 + i)]

  ecr_registry = "${local.account_id}.dkr.ecr.${var.aws_region}.${local.dns_suffix}"

  milvus_in_module = var.milvus.external_endpoint == ""
  milvus_port      = 19530
  milvus_endpoint  = local.milvus_in_module ? "milvus.${local.name}.internal:${local.milvus_port}" : var.milvus.external_endpoint

  tags = merge(var.tags, {
    Project       = var.project
    Region        = var.name
    Jurisdiction  = var.jurisdiction
    DataResidency = join(",", var.allowed_personal_data_regions)
    ManagedBy     = "terraform"
    Module        = "geoshard/region"
  })
}

################################################################################
# Residency guard
################################################################################

# The variable validation on aws_region checks the declared region against the
# jurisdiction; this check ties the declaration to the provider actually passed in,
# so a module block wired to the wrong aliased provider cannot slip through.
resource "terraform_data" "residency" {
  input = {
    jurisdiction = var.jurisdiction
    aws_region   = var.aws_region
  }

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.aws_region
      error_message = "Data residency: module '${var.name}' declares aws_region '${var.aws_region}' but its aws provider points at '${data.aws_region.current.name}'. Pass the provider aliased to ${var.aws_region}."
    }

    precondition {
      condition     = contains(var.allowed_personal_data_regions, data.aws_region.current.name)
      error_message = "Data residency: jurisdiction '${var.jurisdiction}' may store personal data only in [${join(", ", var.allowed_personal_data_regions)}], not in '${data.aws_region.current.name}'."
    }
  }
}

################################################################################
# KMS: one customer managed key per region for every tier and log
################################################################################

resource "aws_kms_key" "this" {
  description             = "${local.name}: Redis, S3, EFS, Secrets Manager, SNS and CloudWatch Logs in ${var.aws_region} (${var.jurisdiction} personal data)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  multi_region            = false # a multi-Region key would let the data be decrypted outside the jurisdiction

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The AWS default key policy: the account (through IAM policies) administers the
        # key. Without it the key becomes unmanageable; "Resource = *" in a key policy
        # means this key only.
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsInThisRegion"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.aws_region}.${local.dns_suffix}" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.aws_region}:${local.account_id}:log-group:/${var.project}/${var.name}/*"
          }
        }
      },
      {
        Sid       = "CloudWatchAlarmsToEncryptedSns"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.${local.dns_suffix}" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        # only for alarms of this account in this region (confused-deputy guard)
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:cloudwatch:${var.aws_region}:${local.account_id}:alarm:*" }
        }
      },
    ]
  })

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.this.key_id
}
