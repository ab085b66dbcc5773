//! `pageview buckets create`: the pipeline's buckets with the rules of the original design,
//! the same ones `terraform/` declares. Through the AWS SDK, since `object_store` reads and
//! writes objects but cannot create buckets or set their rules.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Transition,
    TransitionStorageClass, VersioningConfiguration,
};

use super::{Buckets, S3Settings};

/// Days before raw events and aggregates move to Glacier (the original's lifecycle).
pub const ARCHIVE_AFTER_DAYS: i32 = 30;
/// What moves to Glacier: the data files, all in `dt=` folders. A Delta table's log
/// (`_delta_log/`) never moves, so the table stays readable; reading an archived file
/// needs it restored first, in either format.
pub const ARCHIVED_PREFIX: &str = "dt=";
/// Days before S3 aborts a multipart upload a crash left open. Staged objects themselves
/// never expire: a manifest may name one until it is published.
pub const ABORT_UPLOADS_AFTER_DAYS: i32 = 1;
/// Days a replaced object version is kept: a re-published key replaces its object whole.
pub const NONCURRENT_DAYS: i32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("cannot {action} bucket {bucket} at {endpoint}: {problem}")]
    Request {
        action: &'static str,
        bucket: String,
        endpoint: String,
        problem: String,
    },
    #[error(
        "bucket {bucket} belongs to another account (or these credentials may not use it); choose another name"
    )]
    Taken { bucket: String },
}

/// What happens to a bucket's objects as they age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aging {
    /// To Glacier after [`ARCHIVE_AFTER_DAYS`].
    Archive,
    /// Deleted after this many days.
    Expire(i32),
    /// Kept as they are (checkpoints: the pipeline deletes superseded manifests itself).
    Keep,
}

/// One bucket and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    pub aging: Aging,
}

/// The four buckets of a pipeline and how each ages. Dead letters expire only as Parquet
/// folders (`dlq_retention_days: None` keeps them): S3 deleting a file a Delta table's log
/// names would break every read of the table.
pub fn plan(buckets: &Buckets, dlq_retention_days: Option<u32>) -> Vec<BucketSpec> {
    let spec = |name: &String, aging| BucketSpec {
        name: name.clone(),
        aging,
    };
    vec![
        spec(&buckets.raw, Aging::Archive),
        spec(&buckets.aggregated, Aging::Archive),
        spec(
            &buckets.dlq,
            dlq_retention_days.map_or(Aging::Keep, |days| {
                Aging::Expire(i32::try_from(days).unwrap_or(i32::MAX))
            }),
        ),
        spec(&buckets.checkpoints, Aging::Keep),
    ]
}

/// A bucket's lifecycle rules: its aging, plus clean-up every bucket gets.
pub fn lifecycle_rules(aging: Aging) -> Vec<LifecycleRule> {
    let under = |id: &str, prefix: &str| {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
    };
    let rule = |id: &str| under(id, "");
    let mut rules = Vec::new();
    match aging {
        Aging::Archive => rules.push(
            under("archive-to-glacier", ARCHIVED_PREFIX).transitions(
                Transition::builder()
                    .days(ARCHIVE_AFTER_DAYS)
                    .storage_class(TransitionStorageClass::Glacier)
                    .build(),
            ),
        ),
        Aging::Expire(days) => rules.push(
            rule("expire-dead-letters")
                .expiration(LifecycleExpiration::builder().days(days).build()),
        ),
        Aging::Keep => {}
    }
    rules.push(
        rule("abort-incomplete-uploads").abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(ABORT_UPLOADS_AFTER_DAYS)
                .build(),
        ),
    );
    rules.push(
        rule("expire-replaced-versions").noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder()
                .noncurrent_days(NONCURRENT_DAYS)
                .build(),
        ),
    );
    rules
        .into_iter()
        .map(|r| r.build().expect("every rule has a status"))
        .collect()
}

/// Whether `create` made a bucket or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Existed,
}

/// Creates each bucket that is missing and (re)applies its settings and rules to all of
/// them, so running it twice leaves the same state.
pub fn create(
    settings: &S3Settings,
    specs: &[BucketSpec],
) -> Result<Vec<(String, Outcome)>, BucketError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BucketError::Request {
            action: "reach",
            bucket: String::new(),
            endpoint: settings.endpoint_name(),
            problem: e.to_string(),
        })?;
    runtime.block_on(async {
        let client = client(settings).await;
        let mut done = Vec::new();
        for spec in specs {
            let outcome = provision(&client, settings, spec).await?;
            done.push((spec.name.clone(), outcome));
        }
        Ok(done)
    })
}

async fn client(settings: &S3Settings) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()));
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

async fn provision(
    client: &Client,
    settings: &S3Settings,
    spec: &BucketSpec,
) -> Result<Outcome, BucketError> {
    let bucket = spec.name.as_str();
    let failed = |action: &'static str| {
        let endpoint = settings.endpoint_name();
        move |e: &dyn std::error::Error| BucketError::Request {
            action,
            bucket: bucket.into(),
            endpoint,
            problem: DisplayErrorContext(e).to_string(),
        }
    };
    // Asked first: us-east-1 answers a CreateBucket for a bucket one owns with success.
    let outcome = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Outcome::Existed,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
            return Err(BucketError::Taken {
                bucket: bucket.into(),
            });
        }
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            let mut create = client.create_bucket().bucket(bucket);
            if settings.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(
                            settings.region.as_str(),
                        ))
                        .build(),
                );
            }
            match create.send().await {
                Ok(_) => Outcome::Created,
                Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Outcome::Existed,
                Err(e) if e.code() == Some("BucketAlreadyExists") => {
                    return Err(BucketError::Taken {
                        bucket: bucket.into(),
                    });
                }
                Err(e) => return Err(failed("create")(&e)),
            }
        }
        Err(e) => return Err(failed("look up")(&e)),
    };
    client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| failed("block public access to")(&e))?;
    client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build()
                                .expect("the algorithm is set"),
                        )
                        .build(),
                )
                .build()
                .expect("a rule is set"),
        )
        .send()
        .await
        .map_err(|e| failed("encrypt")(&e))?;
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| failed("version")(&e))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(lifecycle_rules(spec.aging)))
                .build()
                .expect("rules are set"),
        )
        .send()
        .await
        .map_err(|e| failed("set the lifecycle of")(&e))?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> Buckets {
        Buckets {
            raw: "r-raw".into(),
            aggregated: "r-agg".into(),
            dlq: "r-dlq".into(),
            checkpoints: "r-cp".into(),
        }
    }

    #[test]
    fn raw_and_aggregates_archive_dead_letters_expire_checkpoints_stay() {
        let plan = plan(&buckets(), Some(45));
        let aging: Vec<(&str, Aging)> = plan.iter().map(|s| (s.name.as_str(), s.aging)).collect();
        assert_eq!(
            aging,
            [
                ("r-raw", Aging::Archive),
                ("r-agg", Aging::Archive),
                ("r-dlq", Aging::Expire(45)),
                ("r-cp", Aging::Keep),
            ]
        );
        let tables = super::plan(&buckets(), None);
        assert_eq!(tables[2].aging, Aging::Keep, "a DLQ table's files are kept");
    }

    #[test]
    fn every_bucket_cleans_up_uploads_and_old_versions_and_nothing_expires_staging_alone() {
        for aging in [Aging::Archive, Aging::Expire(3), Aging::Keep] {
            let rules = lifecycle_rules(aging);
            let ids: Vec<&str> = rules.iter().filter_map(|r| r.id()).collect();
            assert!(ids.contains(&"abort-incomplete-uploads"), "{ids:?}");
            assert!(ids.contains(&"expire-replaced-versions"), "{ids:?}");
            for rule in &rules {
                let everything = rule.id() != Some("archive-to-glacier");
                let prefix = if everything { "" } else { ARCHIVED_PREFIX };
                assert_eq!(rule.filter().and_then(|f| f.prefix()), Some(prefix));
            }
        }
        let archive = lifecycle_rules(Aging::Archive);
        let glacier = &archive[0].transitions()[0];
        assert_eq!(glacier.days(), Some(ARCHIVE_AFTER_DAYS));
        assert_eq!(
            glacier.storage_class(),
            Some(&TransitionStorageClass::Glacier)
        );
        let expire = lifecycle_rules(Aging::Expire(3));
        assert_eq!(expire[0].expiration().and_then(|e| e.days()), Some(3));
        assert_eq!(lifecycle_rules(Aging::Keep).len(), 2);
    }
}
