# AWS itself, or LocalStack when s3_endpoint is set (terraform apply -var s3_endpoint=http://localhost:4566).
provider "aws" {
  region = var.region

  s3_use_path_style           = var.s3_endpoint != null
  skip_credentials_validation = var.s3_endpoint != null
  skip_metadata_api_check     = var.s3_endpoint != null
  skip_requesting_account_id  = var.s3_endpoint != null

  endpoints {
    s3  = var.s3_endpoint
    iam = var.s3_endpoint
    sts = var.s3_endpoint
  }

  default_tags {
    tags = {
      project     = "pageview"
      environment = var.environment
    }
  }
}
