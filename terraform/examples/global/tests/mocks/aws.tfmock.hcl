# Shared mock data for every aliased aws provider; each alias adds its own aws_region.

mock_data "aws_availability_zones" {
  defaults = {
    names = ["mock-az-a", "mock-az-b", "mock-az-c"]
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
