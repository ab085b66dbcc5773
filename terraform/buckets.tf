# The pipeline's buckets, named as the binary names them by default, with the rules
# `pageview buckets create` applies (src/storage/buckets.rs).
locals {
  buckets = {
    raw         = "pageview-pipeline-${var.environment}-raw-events"
    aggregated  = "pageview-pipeline-${var.environment}-aggregated"
    dlq         = "pageview-pipeline-${var.environment}-dlq"
    checkpoints = "pageview-pipeline-${var.environment}-checkpoints"
  }
  # Raw events and aggregates move to Glacier after 30 days (the original's lifecycle): the
  # data files, all under dt=, never a Delta table's _delta_log/, so a table stays readable.
  archived = ["raw", "aggregated"]
}

resource "aws_s3_bucket" "pipeline" {
  for_each = local.buckets
  bucket   = each.value
}

resource "aws_s3_bucket_versioning" "pipeline" {
  for_each = aws_s3_bucket.pipeline
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "pipeline" {
  for_each = aws_s3_bucket.pipeline
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "pipeline" {
  for_each                = aws_s3_bucket.pipeline
  bucket                  = each.value.id
  block_public_acls       = true
  ignore_public_acls      = true
  block_public_policy     = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "pipeline" {
  for_each   = aws_s3_bucket.pipeline
  bucket     = each.value.id
  depends_on = [aws_s3_bucket_versioning.pipeline]

  dynamic "rule" {
    for_each = contains(local.archived, each.key) ? [1] : []
    content {
      id     = "archive-to-glacier"
      status = "Enabled"
      filter {
        prefix = "dt="
      }
      transition {
        days          = 30
        storage_class = "GLACIER"
      }
    }
  }

  dynamic "rule" {
    # S3 deleting a file a Delta table's log names would break every read of the table.
    for_each = each.key == "dlq" && var.table_format == "parquet" ? [1] : []
    content {
      id     = "expire-dead-letters"
      status = "Enabled"
      filter {
        prefix = ""
      }
      expiration {
        days = var.dlq_retention_days
      }
    }
  }

  # Staged objects never expire (a checkpoint may name one until it is published); only
  # multipart uploads a crash left open are aborted.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # A re-published key replaces its object whole; the old version goes after a week.
  rule {
    id     = "expire-replaced-versions"
    status = "Enabled"
    filter {
      prefix = ""
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }
}
