# Plan-only unit tests of the region module with a mocked AWS provider: no credentials,
# no network. Run with `terraform init -backend=false -plugin-dir=... && terraform test`.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }

  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition  = "aws"
      dns_suffix = "amazonaws.com"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_data "aws_secretsmanager_random_password" {
    defaults = {
      # checkov:skip=CKV_SECRET_6:Test fixture, not a secret: a made-up AUTH token that the mocked aws provider returns in terraform test; it never reaches AWS.
      random_password = "MockAuthToken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
    }
  }

  # Known during plan, so the tests can check which key encrypts what.
  mock_resource "aws_kms_key" {
    override_during = plan
    defaults = {
      arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    }
  }
}

# The same account, but a provider configured for us-east-1: a module block wired to
# the wrong aliased provider.
mock_provider "aws" {
  alias = "us_east_1"

  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }

  mock_data "aws_availability_zones" {
    defaults = {
      names = ["us-east-1a", "us-east-1b", "us-east-1c"]
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition  = "aws"
      dns_suffix = "amazonaws.com"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_data "aws_secretsmanager_random_password" {
    defaults = {
      # checkov:skip=CKV_SECRET_6:Test fixture, not a secret: a made-up AUTH token that the mocked aws provider returns in terraform test; it never reaches AWS.
      random_password = "MockAuthToken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
    }
  }

  # Known during plan, so the tests can check which key encrypts what.
  mock_resource "aws_kms_key" {
    override_during = plan
    defaults = {
      arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    }
  }
}

variables {
  project                       = "geoshard"
  name                          = "eu-west"
  aws_region                    = "eu-west-1"
  jurisdiction                  = "eu"
  allowed_personal_data_regions = ["eu-west-1", "eu-central-1"]
  vpc_cidr                      = "10.10.0.0/16"
  az_count                      = 3
  redis                         = { num_shards = 4, replicas_per_shard = 1, node_type = "cache.r7g.large" }
  api                           = { desired_count = 4, cpu = 1024, memory = 2048 }
  milvus                        = { desired_count = 1, cpu = 4096, memory = 16384, external_endpoint = "" }
  cold                          = { transition_ia_days = 30, transition_glacier_days = 180 }
}

################################################################################
# Hot tier
################################################################################

run "redis_is_cluster_mode_multi_az_with_tls_and_encryption_at_rest" {
  command = plan

  assert {
    condition     = aws_elasticache_replication_group.this.transit_encryption_enabled && aws_elasticache_replication_group.this.transit_encryption_mode == "required"
    error_message = "Redis must require TLS in transit."
  }

  assert {
    condition     = aws_elasticache_replication_group.this.at_rest_encryption_enabled
    error_message = "Redis must encrypt at rest."
  }

  assert {
    condition     = aws_elasticache_replication_group.this.auth_token != null && length(aws_elasticache_replication_group.this.auth_token) >= 16
    error_message = "Redis must have an AUTH token of at least 16 characters."
  }

  assert {
    condition     = aws_elasticache_replication_group.this.cluster_mode == "enabled" && aws_elasticache_replication_group.this.num_node_groups == 4 && aws_elasticache_replication_group.this.replicas_per_node_group == 1
    error_message = "Redis must run in cluster mode with the spec's shards and replicas (4 x 1)."
  }

  assert {
    condition     = aws_elasticache_replication_group.this.multi_az_enabled && aws_elasticache_replication_group.this.automatic_failover_enabled
    error_message = "Redis must be Multi-AZ with automatic failover."
  }

  assert {
    condition     = aws_elasticache_replication_group.this.kms_key_id == aws_kms_key.this.arn && aws_secretsmanager_secret.redis_auth.kms_key_id == aws_kms_key.this.arn
    error_message = "Redis data and its AUTH token must be encrypted with the region's KMS key."
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.redis_engine_cpu) == 8
    error_message = "Expected one engine CPU alarm per Redis node (4 shards x 2 nodes)."
  }
}

run "redis_port_is_open_to_the_api_subnets_only" {
  command = plan

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.redis_from_api) == 3
    error_message = "Expected one Redis ingress rule per API subnet."
  }

  assert {
    condition = alltrue([
      for rule in aws_vpc_security_group_ingress_rule.redis_from_api :
      contains(local.api_subnet_cidrs, rule.cidr_ipv4) && rule.from_port == 6379 && rule.to_port == 6379
    ])
    error_message = "Redis ingress must come from the API subnet CIDRs only."
  }

  assert {
    condition = alltrue([
      for rule in concat(
        values(aws_vpc_security_group_ingress_rule.redis_from_api),
        values(aws_vpc_security_group_ingress_rule.api),
        values(aws_vpc_security_group_ingress_rule.milvus_from_api),
        [aws_vpc_security_group_ingress_rule.endpoints_https],
      ) : rule.cidr_ipv4 != "0.0.0.0/0" && rule.cidr_ipv6 != "::/0"
    ])
    error_message = "No security group rule may be open to 0.0.0.0/0 or ::/0."
  }
}

run "redis_needs_a_replica_per_shard" {
  command = plan

  variables {
    redis = { num_shards = 2, replicas_per_shard = 0, node_type = "cache.r7g.large" }
  }

  expect_failures = [var.redis]
}

################################################################################
# Residency
################################################################################

run "eu_personal_data_bucket_in_us_east_1_is_rejected" {
  command = plan

  variables {
    name       = "us-east"
    aws_region = "us-east-1"
  }

  expect_failures = [var.aws_region]
}

run "provider_in_another_region_than_declared_is_rejected" {
  command = plan

  # aws_region claims eu-west-1, but the provider passed in points at us-east-1.
  providers = {
    aws = aws.us_east_1
  }

  expect_failures = [
    terraform_data.residency,
    aws_s3_bucket.cold,
    aws_s3_bucket.access_logs,
  ]
}

################################################################################
# Cold tier
################################################################################

run "cold_bucket_is_kms_encrypted_versioned_private_and_tiered" {
  command = plan

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.cold.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "The cold bucket must use SSE-KMS."
  }

  assert {
    condition     = one(aws_s3_bucket_versioning.cold.versioning_configuration).status == "Enabled"
    error_message = "The cold bucket must be versioned."
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.cold.block_public_acls,
      aws_s3_bucket_public_access_block.cold.block_public_policy,
      aws_s3_bucket_public_access_block.cold.ignore_public_acls,
      aws_s3_bucket_public_access_block.cold.restrict_public_buckets,
    ])
    error_message = "The cold bucket must block all public access."
  }

  assert {
    condition = sort([
      for t in one(aws_s3_bucket_lifecycle_configuration.cold.rule).transition : "${t.storage_class}@${t.days}"
    ]) == sort(["STANDARD_IA@30", "GLACIER@180"])
    error_message = "The cold bucket must move objects to STANDARD_IA after 30 days and GLACIER after 180."
  }

  assert {
    condition     = aws_s3_bucket.cold.tags["Jurisdiction"] == "eu" && aws_s3_bucket.cold.tags["DataResidency"] == "eu-west-1,eu-central-1"
    error_message = "The cold bucket must carry its residency tags."
  }
}

run "cold_transition_to_ia_before_30_days_is_rejected" {
  command = plan

  variables {
    cold = { transition_ia_days = 7, transition_glacier_days = 180 }
  }

  expect_failures = [var.cold]
}

################################################################################
# Warm tier
################################################################################

run "milvus_standalone_runs_in_module_when_no_endpoint_is_given" {
  command = plan

  assert {
    condition     = length(aws_ecs_service.milvus) == 1 && aws_ecs_service.milvus[0].desired_count == 1
    error_message = "Without an external endpoint, Milvus standalone must run as one ECS task."
  }

  assert {
    condition     = output.milvus_endpoint == "milvus.geoshard-eu-west.internal:19530"
    error_message = "The API must be pointed at the private DNS name of Milvus."
  }

  assert {
    condition     = aws_efs_file_system.milvus[0].encrypted
    error_message = "The Milvus file system must be encrypted."
  }
}

run "external_milvus_endpoint_creates_no_milvus_compute" {
  command = plan

  variables {
    milvus = { desired_count = 3, cpu = 4096, memory = 16384, external_endpoint = "milvus.eu-west-1.example.internal:19530" }
  }

  assert {
    condition     = length(aws_ecs_service.milvus) == 0 && length(aws_efs_file_system.milvus) == 0
    error_message = "With an external endpoint, the module must not run Milvus."
  }

  assert {
    condition     = output.milvus_endpoint == "milvus.eu-west-1.example.internal:19530"
    error_message = "The external Milvus endpoint must be passed through."
  }
}

run "milvus_standalone_with_two_tasks_warns" {
  command = plan

  variables {
    milvus = { desired_count = 2, cpu = 4096, memory = 16384, external_endpoint = "" }
  }

  expect_failures = [check.milvus_standalone_is_one_task]
}
