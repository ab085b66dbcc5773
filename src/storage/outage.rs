//! Waiting out S3 failing (unreachable, 5xx, throttled): whoever waits retries with backoff
//! until it works again, and one line says when S3 starts failing and one when it works
//! again, however many requests wait meanwhile. Used by the pipeline's own requests and by
//! the object store delta-rs is given ([`Patient`]), which would otherwise give up after
//! object_store's few retries and stop the processor.

use std::fmt::{self, Display};
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::{RequestObserver, refusal};

/// Backoff between attempts while S3 is failing.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Outage {
    since: Mutex<Option<Instant>>,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl Outage {
    /// `observer` is told of every attempt.
    pub fn new(observer: Option<Arc<dyn RequestObserver>>) -> Self {
        Outage {
            since: Mutex::default(),
            observer,
        }
    }

    fn attempted(&self, action: &'static str, took: Duration, ok: bool) {
        if let Some(observer) = &self.observer {
            observer.request(action, took, ok);
        }
    }

    fn failed(&self, action: &str, key: &str, error: &dyn Display) {
        let mut since = self.since.lock().expect("never poisoned");
        if since.is_none() {
            tracing::warn!(
                "S3 is failing ({action} s3://{key}: {error}); the pipeline waits and retries until it works"
            );
            *since = Some(Instant::now());
        }
    }

    fn worked(&self) {
        if let Some(at) = self.since.lock().expect("never poisoned").take() {
            tracing::info!(
                "S3 works again after {:.1} s; resuming",
                at.elapsed().as_secs_f64()
            );
        }
    }

    #[cfg(test)]
    pub fn is_over(&self) -> bool {
        self.since.lock().unwrap().is_none()
    }
}

/// Runs `op` until it succeeds or fails in a way waiting cannot fix (`refusal::transient`),
/// `action` on `key` naming it in the line that says S3 is failing.
pub async fn patiently<T, F, Fut>(
    outage: &Outage,
    action: &'static str,
    key: &str,
    mut op: F,
) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        let started = Instant::now();
        let result = op().await;
        outage.attempted(action, started.elapsed(), result.is_ok());
        match result {
            Ok(value) => {
                outage.worked();
                return Ok(value);
            }
            Err(e) if refusal::transient(&e) => {
                outage.failed(action, key, &e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A bucket's object store whose requests wait out S3 failing, for a crate that takes an
/// object store (delta-rs): its reads and commits then pause through an outage, as the
/// pipeline's own requests do. A listing is read whole before it is handed on, so that a
/// failure midway is retried too.
#[derive(Debug)]
pub struct Patient {
    inner: Arc<dyn ObjectStore>,
    bucket: String,
    outage: Arc<Outage>,
}

impl Patient {
    pub fn new(inner: Arc<dyn ObjectStore>, bucket: &str, outage: Arc<Outage>) -> Self {
        Patient {
            inner,
            bucket: bucket.into(),
            outage,
        }
    }

    fn key(&self, location: &Path) -> String {
        format!("{}/{location}", self.bucket)
    }

    /// A listing, read whole with patience, as a stream.
    fn listed(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (inner, outage) = (self.inner.clone(), self.outage.clone());
        let (prefix, offset) = (prefix.cloned(), offset.cloned());
        let key = self.key(prefix.as_ref().unwrap_or(&Path::default()));
        stream::once(async move {
            patiently(&outage, "list", &key, || {
                let listing = match &offset {
                    Some(offset) => inner.list_with_offset(prefix.as_ref(), offset),
                    None => inner.list(prefix.as_ref()),
                };
                listing.try_collect::<Vec<_>>()
            })
            .await
        })
        .map_ok(|all| stream::iter(all.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}

impl Display for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Patient({})", self.inner)
    }
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outage")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ObjectStore for Patient {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        patiently(&self.outage, "put", &self.key(location), || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        patiently(
            &self.outage,
            "start an upload of",
            &self.key(location),
            || self.inner.put_multipart_opts(location, opts.clone()),
        )
        .await
    }

    /// The body is read whole inside the patience, as a listing is: a connection that breaks
    /// while it streams (LocalStack under load did) is retried instead of failing the reader.
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        patiently(&self.outage, "get", &self.key(location), || async {
            let got = self.inner.get_opts(location, options.clone()).await?;
            let (meta, range, attributes) =
                (got.meta.clone(), got.range.clone(), got.attributes.clone());
            let bytes = got.bytes().await?;
            Ok(GetResult {
                payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
                meta,
                range,
                attributes,
            })
        })
        .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        patiently(&self.outage, "get", &self.key(location), || {
            self.inner.get_ranges(location, ranges)
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listed(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listed(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let key = self.key(prefix.unwrap_or(&Path::default()));
        patiently(&self.outage, "list", &key, || {
            self.inner.list_with_delimiter(prefix)
        })
        .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        patiently(&self.outage, "copy to", &self.key(to), || {
            self.inner.copy_opts(from, to, options.clone())
        })
        .await
    }
}
