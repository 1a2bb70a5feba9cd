################################################################################
# Hot tier: ElastiCache for Redis OSS, cluster mode, Multi-AZ, TLS, KMS, AUTH
################################################################################

locals {
  redis_port = 6379
  # Node IDs ElastiCache gives the members of a cluster-mode replication group:
  # <group id>-<shard, 4 digits>-<node, 3 digits>. Known at plan time, so alarms can use them.
  redis_node_ids = flatten([
    for shard in range(1, var.redis.num_shards + 1) : [
      for node in range(1, var.redis.replicas_per_shard + 2) :
      format("%s-%04d-%03d", local.name, shard, node)
    ]
  ])
}

resource "aws_elasticache_subnet_group" "this" {
  name        = local.name
  description = "Data subnets of ${local.name}"
  subnet_ids  = aws_subnet.data[*].id

  tags = local.tags
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "ElastiCache Redis of ${local.name}: TLS port reachable from the API subnets only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${local.name}-redis" })
}

# One rule per API subnet: the Redis port is never open to the VPC, let alone 0.0.0.0/0.
resource "aws_vpc_security_group_ingress_rule" "redis_from_api" {
  for_each = toset(local.api_subnet_cidrs)

  security_group_id = aws_security_group.redis.id
  description       = "Redis TLS from API subnet ${each.key}"
  ip_protocol       = "tcp"
  from_port         = local.redis_port
  to_port           = local.redis_port
  cidr_ipv4         = each.key

  tags = local.tags
}

################################################################################
# AUTH token in Secrets Manager
################################################################################

# ElastiCache AUTH tokens may not contain punctuation such as '@', '"' or '/'.
data "aws_secretsmanager_random_password" "redis_auth" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "redis_auth" {
  #checkov:skip=CKV2_AWS_57:ElastiCache AUTH tokens have no managed rotation; rotate with a planned auth_token change (auth_token_update_strategy ROTATE then DELETE), not a Lambda rotator.
  name                    = "${var.project}/${var.name}/redis-auth-token"
  description             = "AUTH token of the ${local.name} Redis replication group"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7

  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "redis_auth" {
  secret_id     = aws_secretsmanager_secret.redis_auth.id
  secret_string = data.aws_secretsmanager_random_password.redis_auth.random_password

  lifecycle {
    # The data source returns a new password on every plan; keep the first one.
    ignore_changes = [secret_string]
  }
}

################################################################################
# Replication group
################################################################################

resource "aws_cloudwatch_log_group" "redis_slow_log" {
  name              = "/${var.project}/${var.name}/redis/slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = local.name
  description          = "geoshard hot tier in ${var.aws_region} (${var.jurisdiction})"

  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis.node_type
  port                 = local.redis_port
  parameter_group_name = "default.redis${split(".", var.redis_engine_version)[0]}.cluster.on"

  cluster_mode            = "enabled"
  num_node_groups         = var.redis.num_shards
  replicas_per_node_group = var.redis.replicas_per_shard

  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = aws_secretsmanager_secret_version.redis_auth.secret_string
  auth_token_update_strategy = "ROTATE"

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.redis.id]

  snapshot_retention_limit   = var.redis_snapshot_retention_days
  auto_minor_version_upgrade = true
  apply_immediately          = false
  notification_topic_arn     = aws_sns_topic.alarms.arn

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis_slow_log.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = local.tags

  depends_on = [terraform_data.residency]
}
