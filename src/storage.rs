//! Finished files → a storage root, each visible at its key only once complete.
//!
//! A file is written to a staging area no reader looks at and published with one atomic step
//! (a rename on local disk; completing an upload on S3), so readers never see partial files
//! and re-publishing the same key replaces it whole.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where staged files wait inside a local root; hidden so that `**/*.parquet` globs skip it.
pub const STAGING_DIR: &str = ".staging";
const STAGING_SUFFIX: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The root cannot be used at all: stop before processing anything.
    #[error("storage directory {path} is not writable: {source}")]
    Unwritable { path: PathBuf, source: io::Error },
    /// A write or publish failed part way; the staged file is removed, nothing is published.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Somewhere files can be published atomically; the seam for local disk and S3.
pub trait Storage: Send + Sync {
    /// Starts a file whose bytes stay invisible until [`PendingFile::publish`].
    fn create(&self) -> Result<Box<dyn PendingFile>, StorageError>;
}

/// A file being written. Dropping it without publishing discards it.
pub trait PendingFile: Write + Send {
    /// Makes the file visible at `key` (a `/`-separated path under the root), durably and
    /// atomically, replacing any file already there. Returns the file's size in bytes.
    fn publish(self: Box<Self>, key: &str) -> Result<u64, StorageError>;
}

/// A folder on local disk; each bucket is a subfolder.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    staging: PathBuf,
    next_id: AtomicU64,
}

impl LocalStorage {
    /// Creates the root if needed and proves it writable, so a bad path fails before any
    /// input is read. Staged files left by processes that no longer run are removed.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let unwritable = |source| StorageError::Unwritable {
            path: root.to_path_buf(),
            source,
        };
        let staging = root.join(STAGING_DIR);
        fs::create_dir_all(&staging).map_err(unwritable)?;
        let probe = staging.join(format!("probe-{}{STAGING_SUFFIX}", std::process::id()));
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(unwritable)?;
        remove_orphans(&staging);
        Ok(LocalStorage {
            root: root.to_path_buf(),
            staging,
            next_id: AtomicU64::new(0),
        })
    }
}

/// Staged files are named `<pid>-<n>.tmp`; those whose process is gone can never be published.
fn remove_orphans(staging: &Path) {
    let Ok(entries) = fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(STAGING_SUFFIX))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Storage for LocalStorage {
    fn create(&self) -> Result<Box<dyn PendingFile>, StorageError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self
            .staging
            .join(format!("{}-{id}{STAGING_SUFFIX}", std::process::id()));
        let file = File::create(&path).map_err(|source| StorageError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(LocalPending {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            staged: path,
            root: self.root.clone(),
        }))
    }
}

struct LocalPending {
    file: Option<BufWriter<File>>,
    staged: PathBuf,
    root: PathBuf,
}

impl LocalPending {
    fn file(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("written after publish")
    }
}

impl Write for LocalPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl PendingFile for LocalPending {
    fn publish(mut self: Box<Self>, key: &str) -> Result<u64, StorageError> {
        let target = self.root.join(key);
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Write { path, source }
        };
        let file = self.file.take().expect("published once");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(error(&self.staged))?;
        file.sync_all().map_err(error(&self.staged))?;
        let size = file.metadata().map_err(error(&self.staged))?.len();
        drop(file);
        let dir = target.parent().expect("keys name a file under the root");
        fs::create_dir_all(dir).map_err(error(dir))?;
        fs::rename(&self.staged, &target).map_err(error(&target))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(error(dir))?;
        Ok(size)
    }
}

impl Drop for LocalPending {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.staged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_visible_only_after_publish() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut file = storage.create().unwrap();
        file.write_all(b"hello").unwrap();
        let target = dir.path().join("bucket/dt=2026-01-01/part-a.parquet");
        assert!(!target.exists());
        assert_eq!(
            file.publish("bucket/dt=2026-01-01/part-a.parquet").unwrap(),
            5
        );
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(
            fs::read_dir(dir.path().join(STAGING_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn publishing_a_key_again_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        for body in [&b"first version"[..], b"second"] {
            let mut file = storage.create().unwrap();
            file.write_all(body).unwrap();
            file.publish("b/k").unwrap();
        }
        assert_eq!(fs::read(dir.path().join("b/k")).unwrap(), b"second");
    }

    #[test]
    fn a_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut file = storage.create().unwrap();
        file.write_all(b"partial").unwrap();
        drop(file);
        assert_eq!(
            fs::read_dir(dir.path().join(STAGING_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn orphans_of_dead_processes_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(STAGING_DIR);
        fs::create_dir_all(&staging).unwrap();
        // pid_max is below 2^22 on Linux, so this process cannot exist.
        fs::write(staging.join("999999999-0.tmp"), b"x").unwrap();
        let mine = staging.join(format!("{}-77.tmp", std::process::id()));
        fs::write(&mine, b"x").unwrap();
        LocalStorage::open(dir.path()).unwrap();
        assert!(!staging.join("999999999-0.tmp").exists());
        assert!(mine.exists(), "a live process's staged file stays");
    }

    #[test]
    fn an_unwritable_root_is_named() {
        let err = LocalStorage::open(Path::new("/proc/pageview-cannot-exist")).unwrap_err();
        assert!(
            err.to_string().contains("/proc/pageview-cannot-exist"),
            "{err}"
        );
    }
}
