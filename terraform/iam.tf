# What the processor may do, and no more: list its four buckets and read, write and delete
# objects in them (publishing copies a staged object and deletes it; superseded checkpoints
# are deleted), including multipart uploads. Attach it to the processor's role.
data "aws_iam_policy_document" "processor" {
  statement {
    sid       = "ListPipelineBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = [for b in aws_s3_bucket.pipeline : b.arn]
  }

  statement {
    sid = "ReadWritePipelineObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [for b in aws_s3_bucket.pipeline : "${b.arn}/*"]
  }
}

resource "aws_iam_policy" "processor" {
  name        = "pageview-pipeline-${var.environment}-processor"
  description = "Least privilege for the pageview processor on its buckets."
  policy      = data.aws_iam_policy_document.processor.json
}
