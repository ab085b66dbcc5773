//! Where the Delta tables are, and how delta-rs reaches them on S3.

use std::path::Path;
use std::sync::Arc;

use deltalake::DeltaResult;
use deltalake::DeltaTableError;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use url::Url;

use futures_util::TryStreamExt;

use crate::storage::{Outage, S3Settings};

/// Where the tables are: each at the root of its dataset's bucket, in a folder or on S3
/// (whose requests wait out S3 failing with the pipeline's own, through their outage).
pub enum TableRoot<'a> {
    Folder(&'a Path),
    S3(&'a S3Settings, Arc<Outage>),
}

impl TableRoot<'_> {
    /// Where `bucket`'s table is, as delta-rs is told.
    pub(super) fn location(&self, bucket: &str) -> String {
        match self {
            TableRoot::Folder(root) => root.join(bucket).to_string_lossy().into_owned(),
            TableRoot::S3(..) => format!("s3://{bucket}"),
        }
    }

    /// Whether `bucket` holds a Delta table: a log.
    pub(super) async fn has_table(&self, bucket: &str) -> Result<bool, DeltaTableError> {
        match self {
            TableRoot::Folder(root) => Ok(root.join(bucket).join("_delta_log").is_dir()),
            TableRoot::S3(settings, outage) => {
                let store = settings
                    .object_store(bucket, outage.clone())
                    .map_err(|e| DeltaTableError::generic(e.to_string()))?;
                let log = deltalake::Path::from("_delta_log");
                Ok(store.list(Some(&log)).try_next().await?.is_some())
            }
        }
    }
}

/// How delta-rs reaches `s3://<bucket>` tables: through the pipeline's own S3 clients (its
/// endpoint, credentials, timeouts and retries), and with delta-rs's default log store,
/// which commits a version with a conditional put (If-None-Match), as S3 has answered since
/// 2024: one commit per version without a lock table.
/// Its stores wait out S3 failing as the pipeline's own requests do, in the same outage.
pub(super) struct PipelineS3 {
    settings: S3Settings,
    outage: Arc<Outage>,
}

impl PipelineS3 {
    /// delta-rs finds a table's stores by its URL's scheme, in process-wide registries.
    pub(super) fn register(settings: &S3Settings, outage: Arc<Outage>) {
        let this = Arc::new(PipelineS3 {
            settings: settings.clone(),
            outage,
        });
        let scheme = Url::parse("s3://").expect("a valid URL");
        object_store_factories().insert(scheme.clone(), this.clone());
        logstore_factories().insert(scheme, this);
    }
}

impl ObjectStoreFactory for PipelineS3 {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, deltalake::Path)> {
        let bucket = url
            .host_str()
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let store = self
            .settings
            .object_store(bucket, self.outage.clone())
            .map_err(|e| DeltaTableError::generic(e.to_string()))?;
        Ok((store, deltalake::Path::from(url.path())))
    }
}

impl LogStoreFactory for PipelineS3 {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
