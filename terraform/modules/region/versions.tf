terraform {
  # 1.9 lets a variable validation refer to other variables (aws_region vs allowed regions).
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
