//! `pageview buckets create`: the pipeline's buckets with the rules of the original design,
//! the same ones `terraform/` declares. `object_store` reads and writes objects but has no
//! calls for buckets or their rules, so these are S3's own REST calls, signed by
//! object_store's SigV4 signer with the credentials, endpoint and timeouts of the pipeline's
//! own requests (the environment's variables, web identity, container or instance role).

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use md5::{Digest, Md5};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use serde::Serialize;

use super::{Buckets, S3Settings, refusal};
use crate::dataset::Dataset;

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
    let spec = |name: &str, aging| BucketSpec {
        name: name.to_string(),
        aging,
    };
    let mut specs: Vec<BucketSpec> = Dataset::ALL
        .into_iter()
        .map(|dataset| {
            let aging = match dataset {
                Dataset::Raw | Dataset::Aggregated => Aging::Archive,
                Dataset::Dlq => dlq_retention_days.map_or(Aging::Keep, |days| {
                    Aging::Expire(i32::try_from(days).unwrap_or(i32::MAX))
                }),
            };
            spec(buckets.of(dataset), aging)
        })
        .collect();
    specs.push(spec(&buckets.checkpoints, Aging::Keep));
    specs
}

/// The namespace of every S3 configuration document.
const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One rule of a bucket's `LifecycleConfiguration`, in the order S3's schema lists its parts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LifecycleRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Expiration>,
    #[serde(rename = "ID")]
    pub id: &'static str,
    pub filter: Filter,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent_version_expiration: Option<NoncurrentVersionExpiration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_upload: Option<AbortIncompleteMultipartUpload>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Filter {
    pub prefix: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Expiration {
    pub days: i32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transition {
    pub days: i32,
    pub storage_class: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NoncurrentVersionExpiration {
    pub noncurrent_days: i32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbortIncompleteMultipartUpload {
    pub days_after_initiation: i32,
}

/// A bucket's lifecycle rules: its aging, plus clean-up every bucket gets.
pub fn lifecycle_rules(aging: Aging) -> Vec<LifecycleRule> {
    let rule = |id, prefix| LifecycleRule {
        expiration: None,
        id,
        filter: Filter { prefix },
        status: "Enabled",
        transition: None,
        noncurrent_version_expiration: None,
        abort_incomplete_multipart_upload: None,
    };
    let mut rules = Vec::new();
    match aging {
        Aging::Archive => rules.push(LifecycleRule {
            transition: Some(Transition {
                days: ARCHIVE_AFTER_DAYS,
                storage_class: "GLACIER",
            }),
            ..rule("archive-to-glacier", ARCHIVED_PREFIX)
        }),
        Aging::Expire(days) => rules.push(LifecycleRule {
            expiration: Some(Expiration { days }),
            ..rule("expire-dead-letters", "")
        }),
        Aging::Keep => {}
    }
    rules.push(LifecycleRule {
        abort_incomplete_multipart_upload: Some(AbortIncompleteMultipartUpload {
            days_after_initiation: ABORT_UPLOADS_AFTER_DAYS,
        }),
        ..rule("abort-incomplete-uploads", "")
    });
    rules.push(LifecycleRule {
        noncurrent_version_expiration: Some(NoncurrentVersionExpiration {
            noncurrent_days: NONCURRENT_DAYS,
        }),
        ..rule("expire-replaced-versions", "")
    });
    rules
}

#[derive(Serialize)]
#[serde(rename = "LifecycleConfiguration")]
struct LifecycleConfiguration<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "Rule")]
    rules: &'a [LifecycleRule],
}

#[derive(Serialize)]
#[serde(rename = "CreateBucketConfiguration", rename_all = "PascalCase")]
struct CreateBucketConfiguration<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    location_constraint: &'a str,
}

#[derive(Serialize)]
#[serde(rename = "PublicAccessBlockConfiguration", rename_all = "PascalCase")]
struct PublicAccessBlockConfiguration {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    block_public_acls: bool,
    ignore_public_acls: bool,
    block_public_policy: bool,
    restrict_public_buckets: bool,
}

#[derive(Serialize)]
#[serde(
    rename = "ServerSideEncryptionConfiguration",
    rename_all = "PascalCase"
)]
struct ServerSideEncryptionConfiguration {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    rule: EncryptionRule,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptionRule {
    apply_server_side_encryption_by_default: EncryptionByDefault,
}

#[derive(Serialize)]
struct EncryptionByDefault {
    #[serde(rename = "SSEAlgorithm")]
    algorithm: &'static str,
}

#[derive(Serialize)]
#[serde(rename = "VersioningConfiguration", rename_all = "PascalCase")]
struct VersioningConfiguration {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    status: &'static str,
}

/// A configuration document as S3 takes it.
fn xml(document: &impl Serialize) -> String {
    quick_xml::se::to_string(document).expect("the documents are plain structs of text")
}

/// The settings every bucket gets, as the (query, document) of the PUT that applies each,
/// with what failing it means for the error message. The lifecycle is last: it is what
/// differs between buckets.
fn configurations(aging: Aging) -> [(&'static str, &'static str, String); 4] {
    [
        (
            "publicAccessBlock",
            "block public access to",
            xml(&PublicAccessBlockConfiguration {
                xmlns: NAMESPACE,
                block_public_acls: true,
                ignore_public_acls: true,
                block_public_policy: true,
                restrict_public_buckets: true,
            }),
        ),
        (
            "encryption",
            "encrypt",
            xml(&ServerSideEncryptionConfiguration {
                xmlns: NAMESPACE,
                rule: EncryptionRule {
                    apply_server_side_encryption_by_default: EncryptionByDefault {
                        algorithm: "AES256",
                    },
                },
            }),
        ),
        (
            "versioning",
            "version",
            xml(&VersioningConfiguration {
                xmlns: NAMESPACE,
                status: "Enabled",
            }),
        ),
        (
            "lifecycle",
            "set the lifecycle of",
            xml(&LifecycleConfiguration {
                xmlns: NAMESPACE,
                rules: &lifecycle_rules(aging),
            }),
        ),
    ]
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
        let mut done = Vec::new();
        let Some(first) = specs.first() else {
            return Ok(done);
        };
        let api = S3Api::new(settings, &first.name)?;
        for spec in specs {
            let outcome = api.provision(spec).await?;
            done.push((spec.name.clone(), outcome));
        }
        Ok(done)
    })
}

/// S3's bucket calls, addressed path-style (`<endpoint>/<bucket>?<setting>`), as the
/// pipeline's own requests are.
struct S3Api<'a> {
    settings: &'a S3Settings,
    client: HttpClient,
    credentials: AwsCredentialProvider,
    endpoint: String,
}

/// A call on `bucket` that did not get through, or that S3 refused.
fn failed(
    settings: &S3Settings,
    action: &'static str,
    bucket: &str,
    problem: String,
) -> BucketError {
    BucketError::Request {
        action,
        bucket: bucket.into(),
        endpoint: settings.endpoint_name(),
        problem,
    }
}

/// What S3 answered: the status, and the body, which names the error of a refusal.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    /// S3's error code (`BucketAlreadyOwnedByYou`), if it refused.
    fn code(&self) -> Option<&str> {
        refusal::error_code(&self.body)
    }

    /// The refusal in one line (S3's code and message), if it refused.
    fn error(&self) -> Option<String> {
        (!self.status.is_success()).then(|| {
            refusal::answered(&self.body).unwrap_or_else(|| format!("HTTP {}", self.status))
        })
    }
}

impl<'a> S3Api<'a> {
    /// `bucket` is any of the pipeline's; the credentials are the same for all.
    fn new(settings: &'a S3Settings, bucket: &str) -> Result<Self, BucketError> {
        let setup = |problem: String| failed(settings, "reach", bucket, problem);
        let store = settings.store(bucket).map_err(|e| setup(e.to_string()))?;
        let client = ReqwestConnector::default()
            .connect(&settings.client_options())
            .map_err(|e| setup(e.to_string()))?;
        let endpoint = match &settings.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", settings.region),
        };
        Ok(S3Api {
            settings,
            client,
            credentials: store.credentials().clone(),
            endpoint,
        })
    }

    /// Sends one signed request; `action` names it in an error.
    async fn send(
        &self,
        action: &'static str,
        method: Method,
        bucket: &str,
        query: &str,
        document: Option<String>,
    ) -> Result<Answer, BucketError> {
        let failed = |problem: String| failed(self.settings, action, bucket, problem);
        let mut url = format!("{}/{bucket}", self.endpoint);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request = Request::builder().method(method).uri(url);
        let body = match document {
            // S3 wants every configuration document's MD5, to know it arrived whole.
            Some(document) => {
                let md5 = base64::engine::general_purpose::STANDARD
                    .encode(Md5::digest(document.as_bytes()));
                request = request
                    .header("content-md5", md5)
                    .header("content-type", "application/xml");
                Bytes::from(document)
            }
            None => Bytes::new(),
        };
        let mut request = request
            .body(body.into())
            .map_err(|e| failed(e.to_string()))?;
        let credential = self.credentials.get_credential().await.map_err(|e| {
            failed(format!(
                "no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, web \
                 identity, or a container or instance role): {}",
                refusal::one_line(&e)
            ))
        })?;
        AwsAuthorizer::new(&credential, "s3", &self.settings.region).authorize(&mut request, None);
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn provision(&self, spec: &BucketSpec) -> Result<Outcome, BucketError> {
        let bucket = spec.name.as_str();
        let taken = || BucketError::Taken {
            bucket: bucket.into(),
        };
        // Asked first: us-east-1 answers a CreateBucket for a bucket one owns with success.
        let found = self.send("look up", Method::HEAD, bucket, "", None).await?;
        let outcome = match found.status {
            StatusCode::FORBIDDEN => return Err(taken()),
            StatusCode::NOT_FOUND => {
                // us-east-1 is the one region a bucket is created in without naming it.
                let location = (self.settings.region != "us-east-1").then(|| {
                    xml(&CreateBucketConfiguration {
                        xmlns: NAMESPACE,
                        location_constraint: &self.settings.region,
                    })
                });
                let created = self
                    .send("create", Method::PUT, bucket, "", location)
                    .await?;
                match (created.error(), created.code()) {
                    (None, _) => Outcome::Created,
                    (Some(_), Some("BucketAlreadyOwnedByYou")) => Outcome::Existed,
                    (Some(_), Some("BucketAlreadyExists")) => return Err(taken()),
                    (Some(error), _) => return Err(failed(self.settings, "create", bucket, error)),
                }
            }
            _ => match found.error() {
                None => Outcome::Existed,
                Some(error) => return Err(failed(self.settings, "look up", bucket, error)),
            },
        };
        for (query, action, document) in configurations(spec.aging) {
            let answer = self
                .send(action, Method::PUT, bucket, query, Some(document))
                .await?;
            if let Some(error) = answer.error() {
                return Err(failed(self.settings, action, bucket, error));
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> Buckets {
        Buckets::new(["r-raw", "r-agg", "r-dlq"].map(String::from), "r-cp".into())
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
            let ids: Vec<&str> = rules.iter().map(|r| r.id).collect();
            assert!(ids.contains(&"abort-incomplete-uploads"), "{ids:?}");
            assert!(ids.contains(&"expire-replaced-versions"), "{ids:?}");
            for rule in &rules {
                let everything = rule.id != "archive-to-glacier";
                let prefix = if everything { "" } else { ARCHIVED_PREFIX };
                assert_eq!(rule.filter.prefix, prefix);
            }
        }
        let archive = lifecycle_rules(Aging::Archive);
        let glacier = archive[0].transition.as_ref().unwrap();
        assert_eq!(glacier.days, ARCHIVE_AFTER_DAYS);
        assert_eq!(glacier.storage_class, "GLACIER");
        let expire = lifecycle_rules(Aging::Expire(3));
        assert_eq!(expire[0].expiration.as_ref().unwrap().days, 3);
        assert_eq!(lifecycle_rules(Aging::Keep).len(), 2);
    }

    #[test]
    fn the_documents_are_s3s_xml() {
        let [access, encryption, versioning, lifecycle] = configurations(Aging::Expire(45));
        let ns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
        assert_eq!(access.0, "publicAccessBlock");
        assert_eq!(
            access.2,
            format!(
                "<PublicAccessBlockConfiguration {ns}><BlockPublicAcls>true</BlockPublicAcls>\
                 <IgnorePublicAcls>true</IgnorePublicAcls><BlockPublicPolicy>true\
                 </BlockPublicPolicy><RestrictPublicBuckets>true</RestrictPublicBuckets>\
                 </PublicAccessBlockConfiguration>"
            )
        );
        assert_eq!(
            encryption.2,
            format!(
                "<ServerSideEncryptionConfiguration {ns}><Rule>\
                 <ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>\
                 </ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"
            )
        );
        assert_eq!(
            versioning.2,
            format!(
                "<VersioningConfiguration {ns}><Status>Enabled</Status></VersioningConfiguration>"
            )
        );
        assert_eq!(lifecycle.0, "lifecycle");
        assert_eq!(
            lifecycle.2,
            format!(
                "<LifecycleConfiguration {ns}>\
                 <Rule><Expiration><Days>45</Days></Expiration><ID>expire-dead-letters</ID>\
                 <Filter><Prefix/></Filter><Status>Enabled</Status></Rule>\
                 <Rule><ID>abort-incomplete-uploads</ID><Filter><Prefix/></Filter>\
                 <Status>Enabled</Status><AbortIncompleteMultipartUpload>\
                 <DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>\
                 </Rule><Rule><ID>expire-replaced-versions</ID><Filter><Prefix/></Filter>\
                 <Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>7\
                 </NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>"
            )
        );
        let archive = &configurations(Aging::Archive)[3].2;
        assert!(
            archive.contains(
                "<Rule><ID>archive-to-glacier</ID><Filter><Prefix>dt=</Prefix></Filter>\
                 <Status>Enabled</Status><Transition><Days>30</Days>\
                 <StorageClass>GLACIER</StorageClass></Transition></Rule>"
            ),
            "{archive}"
        );
        let location = xml(&CreateBucketConfiguration {
            xmlns: NAMESPACE,
            location_constraint: "eu-west-2",
        });
        assert_eq!(
            location,
            format!(
                "<CreateBucketConfiguration {ns}><LocationConstraint>eu-west-2</LocationConstraint></CreateBucketConfiguration>"
            )
        );
    }
}
