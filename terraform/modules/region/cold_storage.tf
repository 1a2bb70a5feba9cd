################################################################################
# Cold tier: the jurisdiction's personal-data bucket (Parquet)
################################################################################

resource "aws_s3_bucket" "cold" {
  #checkov:skip=CKV_AWS_144:Data residency. Cross-region replication would copy personal data out of the region; durability comes from S3's multi-AZ storage and versioning, and any DR copy is written by geoshard's placement inside the jurisdiction.
  bucket        = "${var.project}-${var.name}-cold-${local.account_id}"
  force_destroy = false

  tags = merge(local.tags, { Tier = "cold", PersonalData = "true" })

  lifecycle {
    precondition {
      condition     = contains(var.allowed_personal_data_regions, data.aws_region.current.name)
      error_message = "Data residency: the ${var.jurisdiction} personal-data bucket may only be created in [${join(", ", var.allowed_personal_data_regions)}], not in '${data.aws_region.current.name}'."
    }

    precondition {
      condition     = data.aws_region.current.name == var.aws_region
      error_message = "Data residency: the aws provider of module '${var.name}' points at '${data.aws_region.current.name}', but aws_region is '${var.aws_region}'."
    }
  }
}

resource "aws_s3_bucket_ownership_controls" "cold" {
  bucket = aws_s3_bucket.cold.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "cold" {
  bucket = aws_s3_bucket.cold.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "cold" {
  bucket = aws_s3_bucket.cold.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cold" {
  bucket = aws_s3_bucket.cold.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "cold" {
  bucket = aws_s3_bucket.cold.id

  rule {
    id     = "tiering"
    status = "Enabled"

    filter {}

    transition {
      days          = var.cold.transition_ia_days
      storage_class = "STANDARD_IA"
    }

    transition {
      days          = var.cold.transition_glacier_days
      storage_class = "GLACIER"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.cold]
}

resource "aws_s3_bucket_logging" "cold" {
  bucket        = aws_s3_bucket.cold.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "cold/"
}

# CKV2_AWS_62: object events go to EventBridge in the same region (erasure audits, compaction triggers).
resource "aws_s3_bucket_notification" "cold" {
  bucket      = aws_s3_bucket.cold.id
  eventbridge = true
}

data "aws_iam_policy_document" "cold_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.cold.arn, "${aws_s3_bucket.cold.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyObjectsNotEncryptedWithTheRegionKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.cold.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    # Only when a key is named: uploads that name none get the bucket default (this key).
    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = ["false"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.this.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "cold" {
  bucket = aws_s3_bucket.cold.id
  policy = data.aws_iam_policy_document.cold_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.cold]
}

################################################################################
# Server access logs of the cold bucket (same region: they name object keys and IPs)
################################################################################

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_144:Data residency. The access logs name object keys and requester IPs, which are personal data; they stay in the region.
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would loop and into another bucket would only move the question.
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to buckets whose default encryption is SSE-S3 (AES256), not SSE-KMS.
  bucket        = "${var.project}-${var.name}-logs-${local.account_id}"
  force_destroy = false

  tags = merge(local.tags, { Tier = "logs", PersonalData = "true" })

  lifecycle {
    precondition {
      condition     = contains(var.allowed_personal_data_regions, data.aws_region.current.name)
      error_message = "Data residency: the ${var.jurisdiction} access-log bucket may only be created in [${join(", ", var.allowed_personal_data_regions)}], not in '${data.aws_region.current.name}'."
    }
  }
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire"
    status = "Enabled"

    filter {}

    expiration {
      days = var.log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

resource "aws_s3_bucket_notification" "access_logs" {
  bucket      = aws_s3_bucket.access_logs.id
  eventbridge = true
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3ServerAccessLogsFromTheColdBucket"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/cold/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.cold.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}
