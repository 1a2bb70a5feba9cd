################################################################################
# ECS cluster (Fargate)
################################################################################

resource "aws_cloudwatch_log_group" "ecs_exec" {
  name              = "/${var.project}/${var.name}/ecs/exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

resource "aws_ecs_cluster" "this" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  # ECS Exec is off on both services; if an operator turns it on, sessions are encrypted and logged.
  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.this.arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.ecs_exec.name
      }
    }
  }

  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

################################################################################
# API service
################################################################################

resource "aws_cloudwatch_log_group" "api" {
  name              = "/${var.project}/${var.name}/ecs/api"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

resource "aws_security_group" "api" {
  name        = "${local.name}-api"
  description = "geoshard API tasks of ${local.name}"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.name}-api" })
}

resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each = toset(length(var.api_ingress_cidrs) > 0 ? var.api_ingress_cidrs : [var.vpc_cidr])

  security_group_id = aws_security_group.api.id
  description       = "API port from ${each.key}"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.key

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "api_to_redis" {
  for_each = toset(local.data_subnet_cidrs)

  security_group_id = aws_security_group.api.id
  description       = "Redis TLS to data subnet ${each.key}"
  ip_protocol       = "tcp"
  from_port         = local.redis_port
  to_port           = local.redis_port
  cidr_ipv4         = each.key

  tags = local.tags
}

# An external Milvus is expected behind a PrivateLink endpoint inside the VPC; for a peered
# VPC, add a rule to the api_security_group_id output.
resource "aws_vpc_security_group_egress_rule" "api_to_milvus" {
  security_group_id = aws_security_group.api.id
  description       = "Milvus gRPC inside the VPC"
  ip_protocol       = "tcp"
  from_port         = local.milvus_port
  to_port           = local.milvus_port
  cidr_ipv4         = var.vpc_cidr

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "api_to_endpoints" {
  security_group_id            = aws_security_group.api.id
  description                  = "HTTPS to the interface VPC endpoints (ECR, Logs, Secrets Manager)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "api_to_s3" {
  security_group_id = aws_security_group.api.id
  description       = "HTTPS to S3 in this region through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id

  tags = local.tags
}

resource "aws_ecs_task_definition" "api" {
  family                   = "${local.name}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.api.cpu
  memory                   = var.api.memory
  execution_role_arn       = aws_iam_role.api_execution.arn
  task_role_arn            = aws_iam_role.api_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "api"
      image                  = "${local.ecr_registry}/${var.container_images.api}"
      essential              = true
      readonlyRootFilesystem = true
      portMappings           = [{ containerPort = var.api_port, protocol = "tcp" }]
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      environment = [
        { name = "GEOSHARD_REGION", value = var.name },
        { name = "GEOSHARD_JURISDICTION", value = var.jurisdiction },
        { name = "GEOSHARD_REDIS_URL", value = "rediss://${aws_elasticache_replication_group.this.configuration_endpoint_address}:${local.redis_port}" },
        { name = "GEOSHARD_MILVUS_ENDPOINT", value = local.milvus_endpoint },
        { name = "GEOSHARD_COLD_BUCKET", value = aws_s3_bucket.cold.bucket },
        { name = "GEOSHARD_COLD_KMS_KEY_ARN", value = aws_kms_key.this.arn },
      ]
      secrets = [
        { name = "GEOSHARD_REDIS_AUTH_TOKEN", valueFrom = aws_secretsmanager_secret.redis_auth.arn },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.api.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "api"
        }
      }
    }
  ])

  tags = local.tags
}

resource "aws_ecs_service" "api" {
  name             = "api"
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.api.arn
  desired_count    = var.api.desired_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  enable_execute_command = false
  propagate_tags         = "SERVICE"

  # Spread tasks over the zones again after a zone outage.
  availability_zone_rebalancing = "ENABLED"

  network_configuration {
    subnets          = aws_subnet.api[*].id
    security_groups  = [aws_security_group.api.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = local.tags
}

################################################################################
# Milvus standalone (only when milvus.external_endpoint is empty)
################################################################################

check "milvus_standalone_is_one_task" {
  assert {
    condition     = !local.milvus_in_module || var.milvus.desired_count <= 1
    error_message = "milvus.desired_count is ${var.milvus.desired_count}, but the module runs Milvus standalone, which is a single task. Set milvus.external_endpoint to a Milvus Distributed deployment in ${var.aws_region} to scale out."
  }
}

resource "aws_cloudwatch_log_group" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  name              = "/${var.project}/${var.name}/ecs/milvus"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

resource "aws_security_group" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  name        = "${local.name}-milvus"
  description = "Milvus standalone of ${local.name}: gRPC from the API subnets only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.name}-milvus" })
}

resource "aws_vpc_security_group_ingress_rule" "milvus_from_api" {
  for_each = local.milvus_in_module ? toset(local.api_subnet_cidrs) : toset([])

  security_group_id = aws_security_group.milvus[0].id
  description       = "Milvus gRPC from API subnet ${each.key}"
  ip_protocol       = "tcp"
  from_port         = local.milvus_port
  to_port           = local.milvus_port
  cidr_ipv4         = each.key

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "milvus_to_endpoints" {
  count = local.milvus_in_module ? 1 : 0

  security_group_id            = aws_security_group.milvus[0].id
  description                  = "HTTPS to the interface VPC endpoints (ECR, Logs)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "milvus_to_s3" {
  count = local.milvus_in_module ? 1 : 0

  security_group_id = aws_security_group.milvus[0].id
  description       = "HTTPS to S3 in this region (segments in the cold bucket under milvus/)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "milvus_to_efs" {
  count = local.milvus_in_module ? 1 : 0

  security_group_id            = aws_security_group.milvus[0].id
  description                  = "NFS over TLS to the Milvus file system"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.efs[0].id

  tags = local.tags
}

# Local state of Milvus standalone (embedded etcd metadata and the write-ahead log) survives
# task replacement on EFS; the vector segments themselves go to S3.
resource "aws_efs_file_system" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  creation_token   = "${local.name}-milvus"
  encrypted        = true
  kms_key_id       = aws_kms_key.this.arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  tags = merge(local.tags, { Name = "${local.name}-milvus", PersonalData = "true" })

  depends_on = [terraform_data.residency]
}

# Backups through AWS Backup's default plan, which keeps recovery points in this region.
resource "aws_efs_backup_policy" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  file_system_id = aws_efs_file_system.milvus[0].id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_security_group" "efs" {
  count = local.milvus_in_module ? 1 : 0

  name        = "${local.name}-milvus-efs"
  description = "Milvus file system of ${local.name}: NFS from the Milvus tasks only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.name}-milvus-efs" })
}

resource "aws_vpc_security_group_ingress_rule" "efs_from_milvus" {
  count = local.milvus_in_module ? 1 : 0

  security_group_id            = aws_security_group.efs[0].id
  description                  = "NFS over TLS from the Milvus tasks"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.milvus[0].id

  tags = local.tags
}

resource "aws_efs_mount_target" "milvus" {
  count = local.milvus_in_module ? var.az_count : 0

  file_system_id  = aws_efs_file_system.milvus[0].id
  subnet_id       = aws_subnet.data[count.index].id
  security_groups = [aws_security_group.efs[0].id]
}

resource "aws_efs_access_point" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  file_system_id = aws_efs_file_system.milvus[0].id

  posix_user {
    uid = 1000
    gid = 1000
  }

  root_directory {
    path = "/milvus"

    creation_info {
      owner_uid   = 1000
      owner_gid   = 1000
      permissions = "0750"
    }
  }

  tags = local.tags
}

data "aws_iam_policy_document" "milvus_efs" {
  count = local.milvus_in_module ? 1 : 0

  statement {
    sid       = "MilvusTaskThroughTheAccessPoint"
    effect    = "Allow"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.milvus[0].arn]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.milvus_task[0].arn]
    }

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [aws_efs_access_point.milvus[0].arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["*"]
    resources = [aws_efs_file_system.milvus[0].arn]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_efs_file_system_policy" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  file_system_id = aws_efs_file_system.milvus[0].id
  policy         = data.aws_iam_policy_document.milvus_efs[0].json
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  count = local.milvus_in_module ? 1 : 0

  name        = "${local.name}.internal"
  description = "Private service names of ${local.name}"
  vpc         = aws_vpc.this.id

  tags = local.tags
}

resource "aws_service_discovery_service" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  name = "milvus"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this[0].id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  tags = local.tags
}

resource "aws_ecs_task_definition" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  family                   = "${local.name}-milvus"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.milvus.cpu
  memory                   = var.milvus.memory
  execution_role_arn       = aws_iam_role.milvus_execution[0].arn
  task_role_arn            = aws_iam_role.milvus_task[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }

  volume {
    name = "milvus-data"

    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.milvus[0].id
      transit_encryption = "ENABLED"

      authorization_config {
        access_point_id = aws_efs_access_point.milvus[0].id
        iam             = "ENABLED"
      }
    }
  }

  volume {
    name = "tmp"
  }

  # Configured through Milvus's environment overrides (section.key -> SECTION_KEY):
  # embedded etcd on EFS, segments in the region's cold bucket through the task role.
  container_definitions = jsonencode([
    {
      name                   = "milvus"
      image                  = "${local.ecr_registry}/${var.container_images.milvus}"
      command                = ["milvus", "run", "standalone"]
      essential              = true
      readonlyRootFilesystem = true
      user                   = "1000:1000"
      portMappings           = [{ containerPort = local.milvus_port, protocol = "tcp" }]
      mountPoints = [
        { sourceVolume = "milvus-data", containerPath = "/var/lib/milvus", readOnly = false },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      environment = [
        { name = "ETCD_USE_EMBED", value = "true" },
        { name = "ETCD_DATA_DIR", value = "/var/lib/milvus/etcd" },
        { name = "COMMON_STORAGETYPE", value = "remote" },
        { name = "MINIO_ADDRESS", value = "s3.${var.aws_region}.${local.dns_suffix}" },
        { name = "MINIO_PORT", value = "443" },
        { name = "MINIO_USESSL", value = "true" },
        { name = "MINIO_USEIAM", value = "true" },
        { name = "MINIO_CLOUDPROVIDER", value = "aws" },
        { name = "MINIO_REGION", value = var.aws_region },
        { name = "MINIO_BUCKETNAME", value = aws_s3_bucket.cold.bucket },
        { name = "MINIO_ROOTPATH", value = "milvus" },
      ]
      healthCheck = {
        command     = ["CMD-SHELL", "curl -fsS http://localhost:9091/healthz || exit 1"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 90
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.milvus[0].name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "milvus"
        }
      }
    }
  ])

  tags = local.tags
}

resource "aws_ecs_service" "milvus" {
  count = local.milvus_in_module ? 1 : 0

  name             = "milvus"
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.milvus[0].arn
  desired_count    = 1
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  enable_execute_command = false
  propagate_tags         = "SERVICE"

  # Standalone owns its etcd and WAL: stop the old task before starting the new one,
  # so two writers never share the file system.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = aws_subnet.data[*].id
    security_groups  = [aws_security_group.milvus[0].id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.milvus[0].arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = local.tags

  depends_on = [aws_efs_mount_target.milvus]
}
