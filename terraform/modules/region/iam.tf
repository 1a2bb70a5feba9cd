################################################################################
# Least-privilege IAM: one execution role and one task role per service
################################################################################

locals {
  api_ecr_repository_arn    = "arn:${local.partition}:ecr:${var.aws_region}:${local.account_id}:repository/${split(":", var.container_images.api)[0]}"
  milvus_ecr_repository_arn = "arn:${local.partition}:ecr:${var.aws_region}:${local.account_id}:repository/${split(":", var.container_images.milvus)[0]}"
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:*"]
    }
  }
}

################################################################################
# API
################################################################################

data "aws_iam_policy_document" "api_execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the action has no resource-level permissions
  }

  statement {
    sid       = "PullApiImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [local.api_ecr_repository_arn]
  }

  statement {
    sid       = "WriteApiLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.api.arn}:*"]
  }

  statement {
    sid       = "ReadRedisAuthToken"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.redis_auth.arn]
  }

  statement {
    sid       = "DecryptRedisAuthToken"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.aws_region}.${local.dns_suffix}"]
    }
  }
}

resource "aws_iam_role" "api_execution" {
  name               = "${local.name}-api-execution"
  description        = "ECS pulls the API image, writes its logs and injects the Redis AUTH token"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy" "api_execution" {
  name   = "api-execution"
  role   = aws_iam_role.api_execution.id
  policy = data.aws_iam_policy_document.api_execution.json
}

data "aws_iam_policy_document" "api_task" {
  statement {
    sid       = "ListColdBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.cold.arn]
  }

  statement {
    sid       = "ReadWriteColdObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.cold.arn}/*"]
  }

  statement {
    sid       = "UseRegionKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.aws_region}.${local.dns_suffix}"]
    }
  }
}

resource "aws_iam_role" "api_task" {
  name               = "${local.name}-api-task"
  description        = "geoshard API: read and write the region's cold bucket"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy" "api_task" {
  name   = "api-task"
  role   = aws_iam_role.api_task.id
  policy = data.aws_iam_policy_document.api_task.json
}

################################################################################
# Milvus
################################################################################

data "aws_iam_policy_document" "milvus_execution" {
  count = local.milvus_in_module ? 1 : 0

  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the action has no resource-level permissions
  }

  statement {
    sid       = "PullMilvusImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [local.milvus_ecr_repository_arn]
  }

  statement {
    sid       = "WriteMilvusLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.milvus[0].arn}:*"]
  }
}

resource "aws_iam_role" "milvus_execution" {
  count = local.milvus_in_module ? 1 : 0

  name               = "${local.name}-milvus-execution"
  description        = "ECS pulls the Milvus image and writes its logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy" "milvus_execution" {
  count = local.milvus_in_module ? 1 : 0

  name   = "milvus-execution"
  role   = aws_iam_role.milvus_execution[0].id
  policy = data.aws_iam_policy_document.milvus_execution[0].json
}

data "aws_iam_policy_document" "milvus_task" {
  count = local.milvus_in_module ? 1 : 0

  statement {
    sid       = "ListMilvusPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.cold.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["milvus", "milvus/*"]
    }
  }

  statement {
    sid       = "ReadWriteMilvusSegments"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.cold.arn}/milvus/*"]
  }

  statement {
    sid       = "UseRegionKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.aws_region}.${local.dns_suffix}"]
    }
  }

  statement {
    sid       = "MountMilvusFileSystem"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.milvus[0].arn]

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [aws_efs_access_point.milvus[0].arn]
    }
  }
}

resource "aws_iam_role" "milvus_task" {
  count = local.milvus_in_module ? 1 : 0

  name               = "${local.name}-milvus-task"
  description        = "Milvus standalone: its prefix of the cold bucket and its EFS access point"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy" "milvus_task" {
  count = local.milvus_in_module ? 1 : 0

  name   = "milvus-task"
  role   = aws_iam_role.milvus_task[0].id
  policy = data.aws_iam_policy_document.milvus_task[0].json
}

################################################################################
# VPC flow logs
################################################################################

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    sid       = "WriteFlowLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name}-vpc-flow-logs"
  description        = "VPC flow logs of ${local.name} into their CloudWatch log group"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "vpc-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
