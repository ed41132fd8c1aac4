//! Where the domain catalog is kept: the port that lets a cluster share one
//! catalog among every node's API.
//!
//! On a single node the catalog is a file ([`FileCatalogStore`]), or lives
//! in memory beside a pool that does too ([`MemoryCatalogStore`]). On a
//! clustered node the root package keeps it in the cluster's metadata store,
//! so every node's API sees and changes the same volumes. Every change runs
//! under [`CatalogStore::lock`] on the newest document, so two nodes' changes
//! are serialized and neither is lost; reads see another node's change at
//! the next request.

use std::path::PathBuf;

use super::store::{JsonStore, StoreError};

/// A held [`CatalogStore::lock`]; dropping it releases the lock.
pub type CatalogLock = Box<dyn Send>;

/// The catalog document's home.
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// The document and its version if the stored version is not `known`
    /// (`None`: unchanged since `known`, or never written when `known` is 0).
    fn load_if_changed(&self, known: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError>;
    /// Stores the document durably; returns its new version.
    fn save(&self, document: &[u8]) -> Result<u64, StoreError>;
    /// Excludes every other writer of this store (other nodes' APIs) until
    /// the returned guard drops.
    fn lock(&self) -> Result<CatalogLock, StoreError>;
}

/// The catalog as a file in the API's data directory, written only by this
/// process (so versions are this process's own count).
#[derive(Debug)]
pub struct FileCatalogStore {
    file: JsonStore,
    version: parking_lot::Mutex<u64>,
}

impl FileCatalogStore {
    /// The catalog at `path`.
    pub fn new(path: PathBuf) -> FileCatalogStore {
        FileCatalogStore {
            file: JsonStore::new(path),
            version: parking_lot::Mutex::new(0),
        }
    }
}

impl CatalogStore for FileCatalogStore {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }

    fn load_if_changed(&self, known: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let mut version = self.version.lock();
        if known != 0 && known == *version {
            return Ok(None);
        }
        let Some(document) = self.file.load::<serde_json::Value>()? else {
            return Ok(None);
        };
        if *version == 0 {
            *version = 1;
        }
        let bytes = serde_json::to_vec(&document).map_err(|source| StoreError::Corrupt {
            path: self.file.path().to_owned(),
            source,
        })?;
        Ok(Some((bytes, *version)))
    }

    fn save(&self, document: &[u8]) -> Result<u64, StoreError> {
        let value: serde_json::Value =
            serde_json::from_slice(document).map_err(|source| StoreError::Corrupt {
                path: self.file.path().to_owned(),
                source,
            })?;
        self.file.save(&value)?;
        let mut version = self.version.lock();
        *version += 1;
        Ok(*version)
    }

    fn lock(&self) -> Result<CatalogLock, StoreError> {
        // One process writes the file, and the service's own mutex orders it.
        Ok(Box::new(()))
    }
}

/// The catalog in this process's memory, for a pool in memory: both are new
/// at every start, so a catalog on disk would name volumes no pool holds.
#[derive(Debug, Default)]
pub struct MemoryCatalogStore {
    document: parking_lot::Mutex<(Vec<u8>, u64)>,
}

impl CatalogStore for MemoryCatalogStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn load_if_changed(&self, known: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let document = self.document.lock();
        Ok(match *document {
            (_, 0) => None,
            (_, version) if version == known => None,
            (ref bytes, version) => Some((bytes.clone(), version)),
        })
    }

    fn save(&self, document: &[u8]) -> Result<u64, StoreError> {
        let mut stored = self.document.lock();
        *stored = (document.to_vec(), stored.1 + 1);
        Ok(stored.1)
    }

    fn lock(&self) -> Result<CatalogLock, StoreError> {
        // One process holds it, and the service's own mutex orders writers.
        Ok(Box::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_returns_only_documents_newer_than_the_one_known() {
        let store = MemoryCatalogStore::default();
        assert_eq!(store.load_if_changed(0).unwrap(), None);
        let first = store.save(b"{\"a\":1}").unwrap();
        assert_eq!(
            store.load_if_changed(0).unwrap(),
            Some((b"{\"a\":1}".to_vec(), first))
        );
        assert_eq!(store.load_if_changed(first).unwrap(), None);
        let second = store.save(b"{}").unwrap();
        assert!(second > first);
        assert_eq!(
            store.load_if_changed(first).unwrap(),
            Some((b"{}".to_vec(), second))
        );
    }
}
