output "buckets" {
  description = "Bucket names by dataset; the processor's defaults for this environment."
  value       = { for k, b in aws_s3_bucket.pipeline : k => b.bucket }
}

output "processor_policy_arn" {
  description = "Attach to the processor's IAM role."
  value       = aws_iam_policy.processor.arn
}
