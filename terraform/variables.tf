variable "environment" {
  description = "Goes into every bucket name: pageview-pipeline-<environment>-raw-events, …"
  type        = string
  default     = "local"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]*[a-z0-9]$", var.environment))
    error_message = "environment must be lowercase letters, digits and '-', as S3 bucket names allow."
  }
}

variable "region" {
  description = "AWS region of the buckets."
  type        = string
  default     = "us-east-1"
}

variable "s3_endpoint" {
  description = "An S3-compatible endpoint such as LocalStack's http://localhost:4566; null for AWS."
  type        = string
  default     = null
}

variable "table_format" {
  description = "The processor's TABLE_FORMAT: parquet, or delta (no rule deletes dead letters)."
  type        = string
  default     = "parquet"
  validation {
    condition     = contains(["parquet", "delta"], var.table_format)
    error_message = "table_format is parquet or delta."
  }
}

variable "dlq_retention_days" {
  description = "Days a dead letter is kept (pageview buckets create --dlq-retention-days); give the processor the same DLQ_RETENTION_DAYS, which expires them in delta tables."
  type        = number
  default     = 90
}
