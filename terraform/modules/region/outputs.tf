################################################################################
# Residency
################################################################################

output "name" {
  description = "Region name from the spec, for example `eu-west`."
  value       = var.name
}

output "aws_region" {
  description = "AWS region code the module was deployed to."
  value       = var.aws_region
}

output "jurisdiction" {
  description = "Jurisdiction whose personal data this region stores."
  value       = var.jurisdiction
}

################################################################################
# Network
################################################################################

output "vpc_id" {
  description = "ID of the region's VPC."
  value       = aws_vpc.this.id
}

output "api_subnet_ids" {
  description = "IDs of the private API subnets, one per availability zone."
  value       = aws_subnet.api[*].id
}

output "data_subnet_ids" {
  description = "IDs of the private data subnets (Redis, Milvus, EFS, VPC endpoints), one per availability zone."
  value       = aws_subnet.data[*].id
}

output "api_security_group_id" {
  description = "Security group of the API tasks; add rules here for a load balancer or a peered Milvus."
  value       = aws_security_group.api.id
}

################################################################################
# Hot tier
################################################################################

output "redis_configuration_endpoint" {
  description = "Cluster-mode configuration endpoint of the Redis replication group (TLS, port 6379)."
  value       = aws_elasticache_replication_group.this.configuration_endpoint_address
}

output "redis_auth_secret_arn" {
  description = "ARN of the Secrets Manager secret that holds the Redis AUTH token."
  value       = aws_secretsmanager_secret.redis_auth.arn
}

output "redis_security_group_id" {
  description = "Security group of the Redis replication group."
  value       = aws_security_group.redis.id
}

################################################################################
# Warm and cold tiers
################################################################################

output "milvus_endpoint" {
  description = "`host:port` of Milvus: the external endpoint when one was given, else the private DNS name of the standalone service."
  value       = local.milvus_endpoint
}

output "cold_bucket_name" {
  description = "Name of the cold-tier (personal data) S3 bucket."
  value       = aws_s3_bucket.cold.bucket
}

output "cold_bucket_arn" {
  description = "ARN of the cold-tier (personal data) S3 bucket."
  value       = aws_s3_bucket.cold.arn
}

output "kms_key_arn" {
  description = "ARN of the region's customer managed KMS key."
  value       = aws_kms_key.this.arn
}

################################################################################
# Compute and monitoring
################################################################################

output "ecs_cluster_name" {
  description = "Name of the ECS cluster running the API (and Milvus standalone)."
  value       = aws_ecs_cluster.this.name
}

output "api_service_name" {
  description = "Name of the API ECS service."
  value       = aws_ecs_service.api.name
}

output "alarm_topic_arn" {
  description = "ARN of the encrypted SNS topic every alarm notifies."
  value       = aws_sns_topic.alarms.arn
}
