//! Durable storage of one JSON document: write a temporary file, fsync it, rename
//! it over the old one, fsync the directory. A reader after any crash sees either
//! the old or the new document, never a torn one.
//!
//! INVARIANT: after a failed write or fsync the store is fenced and refuses every
//! later write until the process restarts and reloads from disk, because the
//! kernel may have dropped dirty pages we can no longer tell apart (never retry
//! fsync).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why loading or saving a document failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system refused a read, write, fsync or rename.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The document on disk is not valid JSON of the expected shape.
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A previous write failed; restart to reload the durable state.
    #[error("the store for {0} is fenced after an earlier I/O failure; restart the daemon")]
    Fenced(PathBuf),
    /// A shared store (a cluster's metadata) cannot be reached or locked now.
    #[error("the shared catalog is unavailable: {0}")]
    Unavailable(String),
}

/// One JSON document kept durably at a fixed path.
#[derive(Debug)]
pub struct JsonStore {
    path: PathBuf,
    fenced: AtomicBool,
}

impl JsonStore {
    /// A store for `path` (its directory must exist).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            fenced: AtomicBool::new(false),
        }
    }

    /// The document's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the document, or `None` if it was never written.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the document atomically and durably.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(StoreError::Fenced(self.path.clone()));
        }
        let result = self.write(value);
        if result.is_err() {
            self.fenced.store(true, Ordering::Release);
        }
        result
    }

    fn write<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let io_err = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| io_err(io::Error::other(e)))?;
        let tmp = self.path.with_extension("tmp");
        write_durably(&tmp, &bytes, 0o600).map_err(io_err)?;
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        sync_parent(&self.path).map_err(io_err)
    }
}

/// Writes `bytes` to a new file at `path` with `mode` and fsyncs it.
pub fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Fsyncs the directory holding `path`, making a rename or create durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Creates a file with `bytes` only if it does not exist yet, durably, with `mode`.
/// Returns whether it created the file.
pub fn create_new_durably(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let tmp = path.with_extension("new");
    write_durably(&tmp, bytes, mode)?;
    // hard_link fails if the destination exists, giving create-once semantics.
    let created = match fs::hard_link(&tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    fs::remove_file(&tmp)?;
    sync_parent(path)?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::new(dir.path().join("doc.json"));
        assert_eq!(store.load::<Vec<u32>>().unwrap(), None);
        store.save(&vec![1u32, 2]).unwrap();
        store.save(&vec![3u32]).unwrap();
        assert_eq!(store.load::<Vec<u32>>().unwrap(), Some(vec![3]));
        assert!(!dir.path().join("doc.tmp").exists());
    }

    #[test]
    fn corrupt_document_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            JsonStore::new(path).load::<Vec<u32>>(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn fences_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::new(dir.path().join("missing-dir").join("doc.json"));
        assert!(matches!(store.save(&1u32), Err(StoreError::Io { .. })));
        fs::create_dir(dir.path().join("missing-dir")).unwrap();
        assert!(matches!(store.save(&1u32), Err(StoreError::Fenced(_))));
    }

    #[test]
    fn create_new_keeps_the_first_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(create_new_durably(&path, b"one", 0o600).unwrap());
        assert!(!create_new_durably(&path, b"two", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }
}
