//! Local disk: each bucket a folder under one root; staged files wait in a hidden folder and
//! publish with a rename.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::{
    Listed, PendingFile, RequestObserver, Staged, Storage, StorageError, Unsynced, Version,
};

/// Where staged files wait inside a local root; hidden so that `**/*.parquet` globs skip it.
const STAGING_DIR: &str = ".staging";
/// A file still being written; removed once its process is gone.
const STAGING_SUFFIX: &str = ".tmp";
/// A complete, durable file waiting for a checkpoint manifest to name it and for publication.
const STAGED_SUFFIX: &str = ".ready";

/// A folder on local disk; each bucket is a subfolder.
pub struct LocalStorage {
    root: PathBuf,
    staging: PathBuf,
    /// Random per opening: with the pid, it keeps staged names unique across restarts,
    /// where a pid comes round again (a container's processor is always pid 1). A
    /// manifest names its staged files, and recovery publishes them: a new file staged
    /// under an old name would be published in place of the old one.
    writer: String,
    next_id: AtomicU64,
    observer: Observer,
}

impl std::fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStorage")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Told how long each durable write took (a file, a rename, a small object): fsyncs are where
/// a slow or failing disk shows.
type Observer = Option<Arc<dyn RequestObserver>>;

/// Runs `op`, telling `observer` how long it took and whether it worked.
fn timed<T>(
    observer: &Observer,
    action: &'static str,
    op: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let started = Instant::now();
    let result = op();
    if let Some(observer) = observer {
        observer.request(action, started.elapsed(), result.is_ok());
    }
    result
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
        let writer = format!("{:016x}", rand::random::<u64>());
        remove_orphans(&staging, STAGING_SUFFIX, &writer);
        Ok(LocalStorage {
            root: root.to_path_buf(),
            staging,
            writer,
            next_id: AtomicU64::new(0),
            observer: None,
        })
    }

    /// `observer` hears of every durable write from now on.
    pub fn observed_by(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }
}

/// Adds the files under `dir` (a missing one has none) to `files`, their paths prefixed with
/// `prefix`; hidden entries are skipped, as readers' globs skip them.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<Listed>) -> Result<(), StorageError> {
    let read = |source| StorageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(read(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = format!("{prefix}{name}");
        let meta = entry.metadata().map_err(read)?;
        if meta.is_dir() {
            walk(&entry.path(), &format!("{path}/"), files)?;
        } else {
            files.push(Listed {
                path,
                bytes: meta.len(),
            });
        }
    }
    Ok(())
}

/// Staging files are named `<pid>-<writer>-<n><suffix>`; removes those with `suffix` whose
/// writer is gone: its process no longer runs, or it had this process's pid and is not
/// `writer` (an earlier process given the same pid, as a container's processor always is).
/// Files still being written (`.tmp`) can never be published once their writer died.
fn remove_orphans(staging: &Path, suffix: &str, writer: &str) {
    let Ok(entries) = fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, rest)) = name
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, rest)| Some((p.parse::<u32>().ok()?, rest)))
        else {
            continue;
        };
        let earlier_self = pid == std::process::id() && !rest.starts_with(writer);
        if earlier_self || !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks whether the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl LocalStorage {
    /// A durable file holding `bytes` in the staging folder, for a put to move into place.
    fn write_temporary(&self, bytes: &[u8]) -> Result<PathBuf, StorageError> {
        let path = self.staging_path(STAGING_SUFFIX);
        let written = File::create(&path).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        match written {
            Ok(()) => Ok(path),
            Err(source) => {
                let _ = fs::remove_file(&path);
                Err(StorageError::Write { path, source })
            }
        }
    }

    fn staging_path(&self, suffix: &str) -> PathBuf {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.staging.join(format!(
            "{}-{}-{id}{suffix}",
            std::process::id(),
            self.writer
        ))
    }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + use<> {
    let path = path.to_path_buf();
    move |source| StorageError::Write { path, source }
}

/// Renames `from` to `to` (creating `to`'s folder) and makes the new entry durable.
fn rename_durably(from: &Path, to: &Path) -> Result<(), StorageError> {
    sync_dir(rename_into(from, to)?)
}

/// Renames `from` to `to`, creating `to`'s folder; returns that folder, whose new entry is
/// not durable yet.
fn rename_into<'a>(from: &Path, to: &'a Path) -> Result<&'a Path, StorageError> {
    let dir = to.parent().expect("keys name a file under the root");
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    fs::rename(from, to).map_err(write_error(to))?;
    Ok(dir)
}

/// Syncs a folder a publish left [`Unsynced`], timed as a rename.
pub(super) fn sync_folder(unsynced: &Unsynced) -> Result<(), StorageError> {
    timed(&unsynced.observer, "rename", || sync_dir(&unsynced.folder))
}

/// Starts writing `file`'s dirty pages out, without waiting for them.
fn start_writeback(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is an open file; the call only starts its writeback.
        let rc =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

/// A local object's version: a digest of its bytes. Two writes of the same bytes share it,
/// which a swap may take as unchanged: what it read is what is there.
fn digest(bytes: &[u8]) -> Version {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Version(format!("{:016x}-{}", hasher.finish(), bytes.len()))
}

/// A rename or a new file is durable only once its directory entry is.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error(dir))
}

impl Storage for LocalStorage {
    fn create(&self, _bucket: &str) -> Result<Box<dyn PendingFile>, StorageError> {
        let path = self.staging_path(STAGING_SUFFIX);
        let file = File::create(&path).map_err(write_error(&path))?;
        Ok(Box::new(LocalPending {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            staged: path,
            root: self.root.clone(),
            observer: self.observer.clone(),
        }))
    }

    fn publish_staged(&self, staged: &str, key: &str) -> Result<(), StorageError> {
        let target = self.root.join(key);
        let renamed = timed(&self.observer, "rename", || {
            rename_durably(&self.staging.join(staged), &target)
        });
        match renamed {
            Err(StorageError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                if target.exists() {
                    Ok(())
                } else {
                    Err(StorageError::StagedMissing {
                        staged: staged.into(),
                        key: key.into(),
                    })
                }
            }
            other => other,
        }
    }

    fn remove_staged_orphans(&self) -> Result<(), StorageError> {
        remove_orphans(&self.staging, STAGED_SUFFIX, &self.writer);
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        timed(&self.observer, "put", || {
            let path = self.write_temporary(bytes)?;
            rename_durably(&path, &self.root.join(key)).inspect_err(|_| {
                let _ = fs::remove_file(&path);
            })
        })
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        timed(&self.observer, "put new", || {
            let path = self.write_temporary(bytes)?;
            let target = self.root.join(key);
            let dir = target.parent().expect("keys name a file under the root");
            // A hard link, unlike a rename, refuses to replace an existing entry.
            let linked = fs::create_dir_all(dir).and_then(|()| fs::hard_link(&path, &target));
            let _ = fs::remove_file(&path);
            match linked {
                Ok(()) => sync_dir(dir).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(source) => Err(StorageError::Write {
                    path: target,
                    source,
                }),
            }
        })
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StorageError> {
        Ok(self.get(key)?.map(|bytes| {
            let version = digest(&bytes);
            (bytes, version)
        }))
    }

    fn swap(
        &self,
        key: &str,
        bytes: &[u8],
        read: Option<&Version>,
    ) -> Result<Option<Version>, StorageError> {
        timed(&self.observer, "swap", || {
            let target = self.root.join(key);
            let dir = target.parent().expect("keys name a file under the root");
            fs::create_dir_all(dir).map_err(write_error(dir))?;
            // Writers of one disk take turns on the folder's lock (flock, released when the
            // handle closes, also when the process dies) to compare and replace.
            let folder = File::open(dir).map_err(write_error(dir))?;
            folder.lock().map_err(write_error(dir))?;
            let found = self.get_versioned(key)?.map(|(_, version)| version);
            if found.as_ref() != read {
                return Ok(None);
            }
            let path = self.write_temporary(bytes)?;
            rename_durably(&path, &target).inspect_err(|_| {
                let _ = fs::remove_file(&path);
            })?;
            Ok(Some(digest(bytes)))
        })
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.root.join(key);
        path.try_exists()
            .map_err(|source| StorageError::Read { path, source })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.root.join(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Read { path, source }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let path = self.root.join(prefix);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StorageError::Read { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StorageError::Read {
                path: path.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn list_files(&self, folder: &str) -> Result<Vec<Listed>, StorageError> {
        let mut files = Vec::new();
        walk(&self.root.join(folder), "", &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let path = self.root.join(key);
        let read = |source| StorageError::Read {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(read)?;
        file.seek(SeekFrom::Start(range.start)).map_err(read)?;
        let mut bytes = vec![0; (range.end - range.start) as usize];
        file.read_exact(&mut bytes).map_err(read)?;
        Ok(bytes.into())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.root.join(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(write_error(&path)(e)),
            _ => Ok(()),
        }
    }
}

struct LocalPending {
    file: Option<BufWriter<File>>,
    staged: PathBuf,
    root: PathBuf,
    observer: Observer,
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

impl LocalPending {
    /// Flushes and fsyncs the bytes; returns the size. The staged file stays ours to remove
    /// until it is renamed.
    fn complete(&mut self) -> Result<u64, StorageError> {
        let file = self.file.take().expect("completed once");
        let cleanup = |e: StorageError| {
            let _ = fs::remove_file(&self.staged);
            e
        };
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(write_error(&self.staged))
            .map_err(cleanup)?;
        file.sync_all()
            .and_then(|()| file.metadata())
            .map(|m| m.len())
            .map_err(write_error(&self.staged))
            .map_err(cleanup)
    }
}

impl PendingFile for LocalPending {
    fn write_behind(&mut self) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("written before publish");
        file.flush()
            .and_then(|()| start_writeback(file.get_ref()))
            .map_err(write_error(&self.staged))
    }

    fn publish_unsynced(
        mut self: Box<Self>,
        key: &str,
    ) -> Result<(u64, Option<Unsynced>), StorageError> {
        let observer = self.observer.clone();
        let target = self.root.join(key);
        timed(&observer, "write", || {
            let size = self.complete()?;
            let folder = rename_into(&self.staged, &target).inspect_err(|_| {
                let _ = fs::remove_file(&self.staged);
            })?;
            let unsynced = Unsynced {
                folder: folder.to_path_buf(),
                observer: observer.clone(),
            };
            Ok((size, Some(unsynced)))
        })
    }

    fn stage(mut self: Box<Self>) -> Result<Staged, StorageError> {
        let observer = self.observer.clone();
        let ready = self.staged.with_extension(&STAGED_SUFFIX[1..]);
        let bytes = timed(&observer, "write", || {
            let bytes = self.complete()?;
            rename_durably(&self.staged, &ready).inspect_err(|_| {
                let _ = fs::remove_file(&self.staged);
            })?;
            Ok(bytes)
        })?;
        let id = ready
            .file_name()
            .and_then(|n| n.to_str())
            .expect("staging names are ASCII")
            .to_string();
        Ok(Staged { id, bytes })
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
        let mut file = storage.create("b").unwrap();
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
            let mut file = storage.create("b").unwrap();
            file.write_all(body).unwrap();
            file.publish("b/k").unwrap();
        }
        assert_eq!(fs::read(dir.path().join("b/k")).unwrap(), b"second");
    }

    #[test]
    fn a_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut file = storage.create("b").unwrap();
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
        fs::write(staging.join("999999999-ab-0.tmp"), b"x").unwrap();
        let live = staging.join("1-ab-77.tmp");
        fs::write(&live, b"x").unwrap();
        let earlier = staging.join(format!("{}-ab-77.tmp", std::process::id()));
        fs::write(&earlier, b"x").unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        assert!(!staging.join("999999999-ab-0.tmp").exists());
        assert!(live.exists(), "a live process's file stays");
        assert!(
            !earlier.exists(),
            "another writer with this pid was an earlier process"
        );
        let mut file = storage.create("b").unwrap();
        file.write_all(b"rows").unwrap();
        let staged = file.stage().unwrap();
        storage.remove_staged_orphans().unwrap();
        storage.publish_staged(&staged.id, "b/k").unwrap();
    }

    #[test]
    fn a_staged_file_survives_until_published_and_publishing_twice_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut file = storage.create("b").unwrap();
        file.write_all(b"rows").unwrap();
        let staged = file.stage().unwrap();
        assert_eq!(staged.bytes, 4);
        // A restart removes files still being written, not staged ones.
        LocalStorage::open(dir.path()).unwrap();
        assert!(!dir.path().join("b/k").exists());
        storage.publish_staged(&staged.id, "b/k").unwrap();
        storage.publish_staged(&staged.id, "b/k").unwrap();
        assert_eq!(fs::read(dir.path().join("b/k")).unwrap(), b"rows");
        let err = storage.publish_staged(&staged.id, "b/other").unwrap_err();
        assert!(matches!(err, StorageError::StagedMissing { .. }), "{err}");
    }

    #[test]
    fn staged_orphans_go_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(STAGING_DIR);
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("999999999-3.ready"), b"x").unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        assert!(staging.join("999999999-3.ready").exists());
        storage.remove_staged_orphans().unwrap();
        assert!(!staging.join("999999999-3.ready").exists());
    }

    #[test]
    fn small_objects_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        assert_eq!(storage.get("c/g/1.json").unwrap(), None);
        assert!(storage.list("c/g").unwrap().is_empty());
        storage.put("c/g/1.json", b"one").unwrap();
        storage.put("c/g/2.json", b"two").unwrap();
        storage.put("c/g/2.json", b"TWO").unwrap();
        assert_eq!(storage.get("c/g/2.json").unwrap().unwrap(), b"TWO");
        let mut names = storage.list("c/g").unwrap();
        names.sort();
        assert_eq!(names, ["1.json", "2.json"]);
        storage.delete("c/g/1.json").unwrap();
        storage.delete("c/g/1.json").unwrap();
        assert_eq!(storage.list("c/g").unwrap(), ["2.json"]);
        assert_eq!(
            fs::read_dir(dir.path().join(STAGING_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn files_are_listed_at_any_depth_and_read_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        assert!(storage.list_files("b").unwrap().is_empty());
        storage.put("b/dt=2/x.parquet", b"0123456789").unwrap();
        storage.put("b/dt=1/h=3/y.parquet", b"abc").unwrap();
        storage.put("b/top", b"").unwrap();
        storage.put("other/z", b"z").unwrap();
        let staged = storage.create("b").unwrap().stage().unwrap();
        let listed: Vec<(String, u64)> = storage
            .list_files("b")
            .unwrap()
            .into_iter()
            .map(|l| (l.path, l.bytes))
            .collect();
        let expected = [
            ("dt=1/h=3/y.parquet", 3),
            ("dt=2/x.parquet", 10),
            ("top", 0),
        ];
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        assert_eq!(listed, expected, "staged {staged:?} is not listed");
        assert_eq!(
            &storage.get_range("b/dt=2/x.parquet", 3..7).unwrap()[..],
            b"3456"
        );
        assert!(storage.get_range("b/dt=2/x.parquet", 8..12).is_err());
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
