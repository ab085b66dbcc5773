//! S3 (or LocalStack) through `object_store`: each bucket of SPEC.md 2 is a bucket.
//!
//! A file's key names its first and last rows, so it is known only when the file is done. A
//! file therefore goes to `<bucket>/_staging/<writer>-<n>` (hidden from Hive-style readers
//! by the leading `_`): a small one in one PUT, a large one as a multipart upload whose parts
//! leave while later rows are still being encoded. Publishing copies the staged object to
//! its key, which S3 makes visible whole, then deletes the staged one; a small file that
//! publishes at once is put straight at its key.
//!
//! S3 failing (unreachable, 5xx, throttled) pauses whoever waits on it and retries with
//! backoff until it works again; the processing thread blocks, so the pipeline stops reading
//! and memory stays what the open files hold. Only refusals that waiting cannot fix (access
//! denied, no such bucket) are errors.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartId, ObjectStore, ObjectStoreExt, PutMode, PutPayload,
    RetryConfig, UpdateVersion,
};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::outage::{self, Outage, Patient};
use super::{
    Listed, PendingFile, RequestObserver, Staged, Storage, StorageError, Unsynced, Version,
    refusal, split_key,
};

/// The prefix staged objects wait under in each bucket.
const S3_STAGING: &str = "_staging";

/// A staged object of another writer older than this is an orphan. Writers on other machines
/// cannot be asked whether they still run, and a live one names a staged object in a
/// manifest and publishes it within seconds; recovery publishes every named one before it
/// looks for orphans.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Where S3 is and how files go up.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub region: String,
    /// An S3-compatible endpoint (LocalStack); `None` is AWS itself.
    pub endpoint: Option<String>,
    /// Bytes per multipart part; a file smaller than this goes up in one PUT.
    pub part_size: usize,
    /// Parts of one file uploading at once.
    pub concurrency: usize,
    /// How long one request may go unanswered.
    pub timeout: Duration,
}

impl S3Settings {
    /// The endpoint as error messages name it.
    pub fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 in {}", self.region))
    }

    /// A client of `bucket` for another crate made for S3 (delta-rs, for a bucket's table):
    /// the same endpoint, credentials, timeouts and retries as the pipeline's own requests,
    /// and as patient with S3 failing, saying so through `outage`.
    pub fn object_store(
        &self,
        bucket: &str,
        outage: Arc<Outage>,
    ) -> Result<Arc<dyn object_store::ObjectStore>, StorageError> {
        let store = Arc::new(self.store(bucket)?);
        Ok(Arc::new(Patient::new(store, bucket, outage)))
    }

    /// The HTTP settings of every request: timeouts, and plain HTTP only to an endpoint
    /// named with `http://`.
    pub(super) fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(5)))
            .with_allow_http(
                self.endpoint
                    .as_ref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
    }

    /// A client of `bucket`, with the credentials of the environment (variables, web
    /// identity, container or instance role).
    pub(super) fn store(&self, bucket: &str) -> Result<AmazonS3, StorageError> {
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_region(&self.region)
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(self.client_options());
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build().map_err(|e| StorageError::S3Setup {
            endpoint: self.endpoint_name(),
            problem: e.to_string(),
        })
    }
}

/// Runs `op` until it succeeds or fails for good; see the module comment.
async fn patiently<T, F, Fut>(
    outage: &Outage,
    action: &'static str,
    key: &str,
    op: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    outage::patiently(outage, action, key, op)
        .await
        .map_err(|cause| StorageError::S3 {
            action,
            key: key.to_string(),
            cause,
        })
}

fn is_not_found(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::S3 {
            cause: object_store::Error::NotFound { .. },
            ..
        }
    )
}

/// What a bucket's store and a file being written share.
struct Shared {
    runtime: Runtime,
    /// Shared with part uploads on the runtime, which must not own the runtime itself.
    outage: Arc<Outage>,
}

impl Shared {
    fn wait<T, F, Fut>(&self, action: &'static str, key: &str, op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        self.runtime
            .block_on(patiently(&self.outage, action, key, op))
    }

    /// Copies the staged object to `path` and removes it. Idempotent: a staged object that is
    /// gone while `path` exists was published already.
    fn publish(
        &self,
        store: &AmazonS3,
        bucket: &str,
        staged: &str,
        path: &str,
    ) -> Result<(), StorageError> {
        let from = staged_path(staged);
        let to = Path::from(path);
        let key = format!("{bucket}/{path}");
        match self.wait("copy to", &key, || store.copy(&from, &to)) {
            Err(e) if is_not_found(&e) => {
                return match self.wait("head", &key, || store.head(&to)) {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Err(StorageError::StagedMissing {
                        staged: staged.into(),
                        key,
                    }),
                    Err(e) => Err(e),
                };
            }
            other => other?,
        }
        let staged_key = format!("{bucket}/{from}");
        self.wait("delete", &staged_key, || store.delete(&from))
    }
}

/// Whether the staged object `name` can never be published: not written by `writer` (this
/// process) and older than [`ORPHAN_AGE`].
fn is_orphan(name: &str, writer: &str, age: Duration) -> bool {
    let mine = name
        .strip_prefix(writer)
        .is_some_and(|rest| rest.starts_with('-'));
    !mine && age > ORPHAN_AGE
}

fn staged_path(id: &str) -> Path {
    Path::from(format!("{S3_STAGING}/{id}"))
}

/// The buckets of one pipeline on S3.
pub struct S3Storage {
    shared: Arc<Shared>,
    settings: S3Settings,
    stores: HashMap<String, Arc<AmazonS3>>,
    /// Names this process's staged objects: `<writer>-<n>`.
    writer: String,
    next_id: AtomicU64,
}

impl S3Storage {
    /// Connects to `buckets` and checks each exists and can be listed, so a wrong endpoint,
    /// missing credentials or a missing bucket fail before any input is read. `observer`
    /// hears of every request after that.
    pub fn open(
        settings: &S3Settings,
        buckets: &[&str],
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pageview-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::S3Setup {
                endpoint: settings.endpoint_name(),
                problem: format!("cannot start its I/O threads: {e}"),
            })?;
        let mut stores = HashMap::new();
        for &bucket in buckets {
            let store = settings.store(bucket)?;
            let probe = runtime.block_on(store.list_with_delimiter(Some(&Path::from(S3_STAGING))));
            if let Err(e) = probe {
                return Err(
                    if matches!(e, object_store::Error::NotFound { .. })
                        || refusal::code(&e).as_deref() == Some("NoSuchBucket")
                    {
                        StorageError::NoBucket {
                            bucket: bucket.into(),
                            endpoint: settings.endpoint_name(),
                        }
                    } else {
                        StorageError::S3Setup {
                            endpoint: settings.endpoint_name(),
                            problem: format!("listing bucket {bucket}: {}", refusal::one_line(&e)),
                        }
                    },
                );
            }
            stores.insert(bucket.to_string(), Arc::new(store));
        }
        let writer = format!("{:016x}", rand::random::<u64>());
        Ok(S3Storage {
            shared: Arc::new(Shared {
                runtime,
                outage: Arc::new(Outage::new(observer)),
            }),
            settings: settings.clone(),
            stores,
            writer,
            next_id: AtomicU64::new(0),
        })
    }

    fn store(&self, bucket: &str) -> &Arc<AmazonS3> {
        self.stores
            .get(bucket)
            .unwrap_or_else(|| panic!("bucket {bucket} was not opened"))
    }

    /// The store of `key`'s bucket, and the path in it.
    fn locate(&self, key: &str) -> (&Arc<AmazonS3>, Path) {
        let (bucket, path) = split_key(key);
        (self.store(bucket), Path::from(path))
    }

    /// A conditional put: the new object's ETag, if S3 gave one, when S3 took it; `None`
    /// when its condition refused it.
    fn put_if(
        &self,
        action: &'static str,
        key: &str,
        bytes: &[u8],
        mode: PutMode,
    ) -> Result<Option<Option<String>>, StorageError> {
        let (store, path) = self.locate(key);
        let payload = PutPayload::from(bytes.to_vec());
        let put = self.shared.wait(action, key, || {
            store.put_opts(&path, payload.clone(), mode.clone().into())
        });
        match put {
            Ok(put) => Ok(Some(put.e_tag)),
            Err(StorageError::S3 {
                cause:
                    object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Storage for S3Storage {
    fn outage(&self) -> Option<Arc<Outage>> {
        Some(self.shared.outage.clone())
    }

    fn create(&self, bucket: &str) -> Result<Box<dyn PendingFile>, StorageError> {
        let bucket = bucket.split_once('/').map_or(bucket, |(bucket, _)| bucket);
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(S3Pending {
            shared: self.shared.clone(),
            store: self.store(bucket).clone(),
            bucket: bucket.to_string(),
            id: format!("{}-{n}", self.writer),
            part_size: self.settings.part_size,
            concurrency: self.settings.concurrency,
            buffer: Vec::new(),
            upload: None,
            bytes: 0,
            done: false,
        }))
    }

    fn publish_staged(&self, staged: &str, key: &str) -> Result<(), StorageError> {
        let (bucket, path) = split_key(key);
        self.shared
            .publish(self.store(bucket), bucket, staged, path)
    }

    fn remove_staged_orphans(&self) -> Result<(), StorageError> {
        let staging = Path::from(S3_STAGING);
        for (bucket, store) in &self.stores {
            let key = format!("{bucket}/{S3_STAGING}");
            let listed = self
                .shared
                .wait("list", &key, || store.list_with_delimiter(Some(&staging)))?;
            for object in listed.objects {
                let name = object.location.filename().unwrap_or_default();
                let age = (chrono::Utc::now() - object.last_modified)
                    .to_std()
                    .unwrap_or_default();
                if is_orphan(name, &self.writer, age) {
                    let key = format!("{bucket}/{}", object.location);
                    self.shared
                        .wait("delete", &key, || store.delete(&object.location))?;
                }
            }
        }
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let (store, path) = self.locate(key);
        let payload = PutPayload::from(bytes.to_vec());
        self.shared
            .wait("put", key, || store.put(&path, payload.clone()))
            .map(drop)
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        // If-None-Match: * — S3 refuses the put when the key exists. A retried put whose
        // first answer was lost is refused too: the caller then finds its own object there.
        Ok(self
            .put_if("put new", key, bytes, PutMode::Create)?
            .is_some())
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StorageError> {
        let (store, path) = self.locate(key);
        let got = self.shared.wait("get", key, || async {
            let got = store.get(&path).await?;
            let e_tag = got.meta.e_tag.clone();
            Ok((got.bytes().await?, e_tag))
        });
        match got {
            Ok((bytes, Some(e_tag))) => Ok(Some((bytes.to_vec(), Version(e_tag)))),
            Ok((_, None)) => Err(StorageError::Unversioned { key: key.into() }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn swap(
        &self,
        key: &str,
        bytes: &[u8],
        read: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        // If-Match: <ETag>, or If-None-Match: * for none. A retried put whose first answer
        // was lost is refused: the caller then finds its own bytes there.
        let mode = match read {
            Some(Version(e_tag)) => PutMode::Update(UpdateVersion {
                e_tag: Some(e_tag.clone()),
                version: None,
            }),
            None => PutMode::Create,
        };
        match self.put_if("swap", key, bytes, mode)? {
            Some(Some(e_tag)) => Ok(Some(Version(e_tag))),
            Some(None) => Err(StorageError::Unversioned { key: key.into() }),
            None => Ok(None),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let (store, path) = self.locate(key);
        match self.shared.wait("head", key, || store.head(&path)) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (store, path) = self.locate(key);
        let got = self.shared.wait("get", key, || async {
            store.get(&path).await?.bytes().await
        });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let (store, path) = self.locate(prefix);
        let listed = self
            .shared
            .wait("list", prefix, || store.list_with_delimiter(Some(&path)))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    fn list_files(&self, folder: &str) -> Result<Vec<Listed>, StorageError> {
        let (bucket, prefix) = folder.split_once('/').unwrap_or((folder, ""));
        let store = self.store(bucket);
        let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
        let listed = self.shared.wait("list", folder, || {
            store.list(prefix.as_ref()).try_collect::<Vec<_>>()
        })?;
        let staging = format!("{S3_STAGING}/");
        let mut files: Vec<Listed> = listed
            .into_iter()
            .filter(|o| !o.location.as_ref().starts_with(&staging))
            .map(|o| Listed {
                path: match &prefix {
                    Some(prefix) => o.location.prefix_match(prefix).map_or_else(
                        || o.location.to_string(),
                        |parts| {
                            parts
                                .map(|p| p.as_ref().to_string())
                                .collect::<Vec<_>>()
                                .join("/")
                        },
                    ),
                    None => o.location.to_string(),
                },
                bytes: o.size,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let (store, path) = self.locate(key);
        self.shared
            .wait("get", key, || store.get_range(&path, range.clone()))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (store, path) = self.locate(key);
        self.shared.wait("delete", key, || store.delete(&path))
    }
}

/// A multipart upload under way.
struct Upload {
    id: MultipartId,
    /// Parts sent so far.
    sent: usize,
    done: Vec<(usize, PartId)>,
    in_flight: JoinSet<Result<(usize, PartId), StorageError>>,
}

/// A file on its way to S3: bytes collect until a part's worth, which then uploads on the
/// runtime while the caller goes on encoding.
struct S3Pending {
    shared: Arc<Shared>,
    store: Arc<AmazonS3>,
    bucket: String,
    id: String,
    part_size: usize,
    concurrency: usize,
    buffer: Vec<u8>,
    upload: Option<Upload>,
    bytes: u64,
    /// Completed (staged or published): nothing to abort on drop.
    done: bool,
}

impl S3Pending {
    fn staged_key(&self) -> String {
        format!("{}/{}", self.bucket, staged_path(&self.id))
    }

    /// Sends the buffer as the next part, first waiting until fewer than `concurrency` parts
    /// are in flight: this is where a slow S3 holds the pipeline back.
    fn send_part(&mut self) -> Result<(), StorageError> {
        let path = staged_path(&self.id);
        let key = self.staged_key();
        if self.upload.is_none() {
            let store = &self.store;
            let id = self
                .shared
                .wait("start upload of", &key, || store.create_multipart(&path))?;
            self.upload = Some(Upload {
                id,
                sent: 0,
                done: Vec::new(),
                in_flight: JoinSet::new(),
            });
        }
        let upload = self.upload.as_mut().expect("started above");
        while upload.in_flight.len() >= self.concurrency {
            let part = self.shared.runtime.block_on(upload.in_flight.join_next());
            upload.done.push(joined(part.expect("in flight"))?);
        }
        let payload = PutPayload::from(std::mem::take(&mut self.buffer));
        let (idx, store, outage, id) = (
            upload.sent,
            self.store.clone(),
            self.shared.outage.clone(),
            upload.id.clone(),
        );
        upload.sent += 1;
        upload.in_flight.spawn_on(
            async move {
                let part = patiently(&outage, "upload part of", &key, || {
                    store.put_part(&path, &id, idx, payload.clone())
                })
                .await?;
                Ok((idx, part))
            },
            self.shared.runtime.handle(),
        );
        Ok(())
    }

    /// A file smaller than a part: its bytes in one PUT at `path` (`key` names it in
    /// errors); returns its size.
    fn put_whole(&mut self, path: &Path, key: &str) -> Result<u64, StorageError> {
        let (store, payload) = (
            &self.store,
            PutPayload::from(std::mem::take(&mut self.buffer)),
        );
        self.shared
            .wait("put", key, || store.put(path, payload.clone()))?;
        self.done = true;
        Ok(self.bytes)
    }

    /// Completes the staged object; returns its size.
    fn complete(&mut self) -> Result<u64, StorageError> {
        let path = staged_path(&self.id);
        let key = self.staged_key();
        if self.upload.is_none() {
            return self.put_whole(&path, &key);
        }
        let store = self.store.clone();
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let mut upload = self.upload.take().expect("checked above");
        while let Some(part) = self.shared.runtime.block_on(upload.in_flight.join_next()) {
            upload.done.push(joined(part)?);
        }
        upload.done.sort_by_key(|(idx, _)| *idx);
        let parts: Vec<PartId> = upload.done.into_iter().map(|(_, part)| part).collect();
        let completed = self.shared.wait("complete upload of", &key, || {
            store.complete_multipart(&path, &upload.id, parts.clone())
        });
        match completed {
            // An earlier attempt completed it but its answer was lost.
            Err(e) if is_not_found(&e) => {
                let head = self.shared.wait("head", &key, || store.head(&path))?;
                if head.size != self.bytes {
                    return Err(e);
                }
            }
            other => drop(other?),
        }
        self.done = true;
        Ok(self.bytes)
    }
}

fn joined(
    part: Result<Result<(usize, PartId), StorageError>, tokio::task::JoinError>,
) -> Result<(usize, PartId), StorageError> {
    part.map_err(|e| StorageError::S3 {
        action: "upload part",
        key: String::new(),
        cause: object_store::Error::JoinError { source: e },
    })?
}

impl Write for S3Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.bytes += buf.len() as u64;
        if self.buffer.len() >= self.part_size {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PendingFile for S3Pending {
    /// An object is durable once written: nothing is left to sync.
    fn publish_unsynced(
        mut self: Box<Self>,
        key: &str,
    ) -> Result<(u64, Option<Unsynced>), StorageError> {
        let (bucket, path) = split_key(key);
        debug_assert_eq!(bucket, self.bucket);
        if self.upload.is_none() {
            return Ok((self.put_whole(&Path::from(path), key)?, None));
        }
        let bytes = self.complete()?;
        self.shared.publish(&self.store, bucket, &self.id, path)?;
        Ok((bytes, None))
    }

    fn stage(mut self: Box<Self>) -> Result<Staged, StorageError> {
        let bytes = self.complete()?;
        Ok(Staged {
            id: self.id.clone(),
            bytes,
        })
    }
}

impl Drop for S3Pending {
    /// Abandons an unfinished multipart upload so its parts stop costing storage; the
    /// buckets' lifecycle rule aborts any a crash leaves behind.
    fn drop(&mut self) {
        if let (Some(upload), false) = (self.upload.take(), self.done) {
            let (store, path) = (self.store.clone(), staged_path(&self.id));
            self.shared.runtime.spawn(async move {
                let _ = store.abort_multipart(&path, &upload.id).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: &str) -> object_store::Error {
        let source = "test".into();
        let path = "b/k".to_string();
        match kind {
            "generic" => object_store::Error::Generic {
                store: "S3",
                source,
            },
            "not found" => object_store::Error::NotFound { path, source },
            "denied" => object_store::Error::PermissionDenied { path, source },
            _ => object_store::Error::Precondition { path, source },
        }
    }

    #[test]
    fn orphans_are_other_writers_staged_objects_older_than_an_hour() {
        let hour = Duration::from_secs(3600);
        let old = hour + Duration::from_secs(1);
        assert!(is_orphan("00ab-3", "ffee", old));
        assert!(
            !is_orphan("00ab-3", "ffee", hour),
            "an hour is not yet too old"
        );
        assert!(
            !is_orphan("ffee-3", "ffee", old * 10),
            "its own, however old"
        );
        assert!(
            is_orphan("ffee0-3", "ffee", old),
            "a writer whose id merely starts alike"
        );
    }

    #[test]
    fn only_what_waiting_can_fix_is_retried() {
        assert!(refusal::transient(&error("generic")));
        for kind in ["not found", "denied", "precondition"] {
            assert!(!refusal::transient(&error(kind)), "{kind}");
        }
    }

    #[test]
    fn a_refusal_is_returned_at_once_and_a_failure_retried_until_it_works() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outage = Outage::default();
        let mut calls = 0;
        let refused: Result<(), _> = runtime.block_on(patiently(&outage, "put", "b/k", || {
            calls += 1;
            std::future::ready(Err(error("denied")))
        }));
        assert!(matches!(
            refused,
            Err(StorageError::S3 { action: "put", .. })
        ));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let worked = runtime.block_on(patiently(&outage, "put", "b/k", || {
            calls += 1;
            std::future::ready(if calls < 5 {
                Err(error("generic"))
            } else {
                Ok(7)
            })
        }));
        assert_eq!(worked.unwrap(), 7);
        assert_eq!(calls, 5);
        assert!(outage.is_over(), "the outage is over");
    }
}
