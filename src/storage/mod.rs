//! Finished files → a storage root (a local folder or S3), each visible at its key only once
//! complete.
//!
//! A file is written to a staging area no reader looks at and published with one atomic step
//! (a rename on local disk; a put or copy on S3), so readers never see partial files and
//! re-publishing the same key replaces it whole. Keys are `<bucket>/<path>`: a folder per
//! bucket on disk, the bucket itself on S3.

pub mod buckets;
mod local;
mod outage;
mod refusal;
mod s3;

use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::dataset::Dataset;

pub use local::LocalStorage;
pub use outage::Outage;
pub use s3::{S3Settings, S3Storage};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The root cannot be used at all: stop before processing anything.
    #[error("storage directory {path} is not writable: {source}")]
    Unwritable { path: PathBuf, source: io::Error },
    /// A write or publish failed part way; the staged file is removed, nothing is published.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A checkpoint names a staged file that is neither staged nor published: something
    /// outside the pipeline removed it.
    #[error("staged file {staged} for {key} is gone and {key} was never published")]
    StagedMissing { staged: String, key: String },
    /// S3 refused a request for a reason waiting will not fix (permissions, a missing
    /// bucket, a bad request); outages and throttling are retried instead. Not a `source`:
    /// the message already says, in one line, what object_store's error holds.
    #[error("S3 {action} s3://{key} failed: {}", refusal::one_line(cause))]
    S3 {
        action: &'static str,
        key: String,
        cause: object_store::Error,
    },
    /// An S3-compatible store answered a read without an ETag, without which an object
    /// cannot be replaced only where unchanged.
    #[error(
        "S3 answered s3://{key} without an ETag: this store cannot fence the group's processors (conditional writes, If-Match)"
    )]
    Unversioned { key: String },
    #[error(
        "bucket {bucket} does not exist at {endpoint} (create it with `pageview buckets create`)"
    )]
    NoBucket { bucket: String, endpoint: String },
    #[error("cannot use S3 at {endpoint}: {problem}")]
    S3Setup { endpoint: String, problem: String },
}

/// The names of the pipeline's buckets: each dataset's and the checkpoints'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// By [`Dataset::index`].
    datasets: [String; Dataset::ALL.len()],
    pub checkpoints: String,
}

impl Buckets {
    /// `datasets` in the order of [`Dataset::ALL`].
    pub fn new(datasets: [String; Dataset::ALL.len()], checkpoints: String) -> Self {
        Buckets {
            datasets,
            checkpoints,
        }
    }

    /// The bucket `dataset`'s files go to.
    pub fn of(&self, dataset: Dataset) -> &str {
        &self.datasets[dataset.index()]
    }

    /// The buckets of the datasets: what a bounded input writes to.
    pub fn datasets(&self) -> [&str; Dataset::ALL.len()] {
        Dataset::ALL.map(|d| self.of(d))
    }

    /// The datasets' buckets and the checkpoints': what a Kafka run writes to.
    pub fn with_checkpoints(&self) -> Vec<&str> {
        let mut all = self.datasets().to_vec();
        all.push(&self.checkpoints);
        all
    }
}

/// Told of every request to a remote store, for metrics: `action` is the request
/// ("put", "copy to", "upload part of", …), `ok` whether it succeeded.
pub trait RequestObserver: Send + Sync {
    fn request(&self, action: &'static str, took: std::time::Duration, ok: bool);
}

/// A complete file that no reader sees yet; it survives a crash of its writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Names the file for [`Storage::publish_staged`]; goes into checkpoint manifests.
    pub id: String,
    pub bytes: u64,
}

/// Which write of an object was read: its ETag on S3, a digest of its bytes on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

/// One object of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its path inside the bucket, `/`-separated: `dt=…/part-….parquet`.
    pub path: String,
    pub bytes: u64,
}

/// Somewhere files can be published atomically; the seam for local disk and S3.
pub trait Storage: Send + Sync {
    /// Starts a file for `bucket` (or a folder in it) whose bytes stay invisible until
    /// [`PendingFile::publish`].
    fn create(&self, bucket: &str) -> Result<Box<dyn PendingFile>, StorageError>;
    /// Makes a staged file visible at `key` (in the bucket it was created for). Idempotent,
    /// so recovery can repeat it: a staged file that is gone while `key` exists was
    /// published already.
    fn publish_staged(&self, staged: &str, key: &str) -> Result<(), StorageError>;
    /// Removes staged files whose writer is gone; call after publishing every staged file a
    /// checkpoint names, since the rest can never be published.
    fn remove_staged_orphans(&self) -> Result<(), StorageError>;
    /// Writes a small object whole and atomically, replacing any object at `key`.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Writes a small object whole and atomically unless one is at `key` already: true when
    /// this call wrote it. Of two writers racing for one key exactly one gets true, which
    /// makes it a commit point that succeeds once.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StorageError>;
    /// The object at `key` and its version, for [`Storage::swap`] to replace that version only.
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StorageError>;
    /// Replaces the object at `key` with `bytes` only if it is still at version `read`
    /// (`None`: only if there is none): its new version when this call replaced it, `None`
    /// when refused. Of writers racing from one version exactly one succeeds, which makes an
    /// object a register that fences whoever read it before another's write (`If-Match` on
    /// S3).
    fn swap(
        &self,
        key: &str,
        bytes: &[u8],
        read: Option<&Version>,
    ) -> Result<Option<Version>, StorageError>;
    /// Whether an object is at `key`.
    fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// The object at `key`, or `None` when there is none.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// The names of the objects directly under the folder `prefix`, in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Every published object in `folder` (a bucket, or a folder in one), at any depth,
    /// sorted by path (relative to `folder`); staged files are not listed.
    fn list_files(&self, folder: &str) -> Result<Vec<Listed>, StorageError>;
    /// The bytes `range` of the object at `key`: a Parquet footer or column chunk, without
    /// fetching the rest.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError>;
    /// Removes the object at `key`; one that is already gone is fine.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// What waits out S3 failing for this storage's requests, for another client of the same
    /// buckets (delta-rs) to wait, say so and be counted with them; `None` off S3.
    fn outage(&self) -> Option<Arc<Outage>> {
        None
    }
}

/// A file being written. Dropping it without publishing discards it.
pub trait PendingFile: Write + Send {
    /// Makes the file visible at `key` (`<bucket>/<path>`, in the bucket it was created for),
    /// durably and atomically, replacing any file already there. Returns its size in bytes.
    fn publish(self: Box<Self>, key: &str) -> Result<u64, StorageError> {
        synced(self.publish_unsynced(key)?)
    }
    /// [`PendingFile::publish`], except that the file's new entry is durable only once the
    /// folder returned is synced: publishing a tick's files, then syncing each of their
    /// folders once, waits for the disk about once rather than once per file.
    fn publish_unsynced(
        self: Box<Self>,
        key: &str,
    ) -> Result<(u64, Option<Unsynced>), StorageError>;
    /// Completes the file durably where no reader looks, to be published later with
    /// [`Storage::publish_staged`]: the first phase of a checkpoint.
    fn stage(self: Box<Self>) -> Result<Staged, StorageError>;
    /// Starts writing the bytes out without waiting, so that publishing or staging several
    /// files one after another waits for the disk about once rather than once per file (a
    /// sparse input finishes a file per event hour, dozens a tick). Nothing where a file is
    /// not written until it is published.
    fn write_behind(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A local folder whose new entries a publish made visible but not yet durable.
pub struct Unsynced {
    folder: PathBuf,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl Unsynced {
    /// Makes the folder's entries durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        local::sync_folder(self)
    }

    /// Whether syncing `other` would sync the same folder.
    pub fn same_folder(&self, other: &Unsynced) -> bool {
        self.folder == other.folder
    }
}

/// What a publish returned, once the folder it left unsynced, if any, is synced.
pub fn synced<T>((published, unsynced): (T, Option<Unsynced>)) -> Result<T, StorageError> {
    if let Some(folder) = unsynced {
        folder.sync()?;
    }
    Ok(published)
}

/// Where the datasets go: `--storage DIR` or `--storage s3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3,
}

impl Location {
    /// `s3` means S3; anything else is a folder (write `./s3` for a folder of that name).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("must be a folder or `s3`".into()),
            "s3" => Ok(Location::S3),
            _ => Ok(Location::Local(PathBuf::from(s))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 => f.write_str("S3"),
        }
    }
}

/// `<bucket>/<path>` → (bucket, path).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/')
        .expect("keys are <bucket>/<path> (sink::naming::key)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_is_a_word_and_anything_else_a_folder() {
        assert_eq!(Location::parse("s3"), Ok(Location::S3));
        assert_eq!(
            Location::parse("./s3"),
            Ok(Location::Local(PathBuf::from("./s3")))
        );
        assert_eq!(
            Location::parse("out/"),
            Ok(Location::Local(PathBuf::from("out/")))
        );
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn keys_split_at_the_bucket() {
        assert_eq!(
            split_key("raw/dt=2026-11-29/part-a.parquet"),
            ("raw", "dt=2026-11-29/part-a.parquet")
        );
    }
}
