//! The REST catalog shared by every node of a cluster: one document in etcd
//! (`/keel/catalog`), changed under a lock key attached to the writer's lease
//! (`/keel/catalog-lock`), so a node that dies holding it frees it when its
//! lease ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mgmt_api::domain::catalog_store::{CatalogLock, CatalogStore};
use mgmt_api::domain::store::StoreError;

use super::etcd::Revision;
use super::keys;
use super::Membership;

/// How long a change waits for another node's change to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// [`CatalogStore`] over etcd.
pub struct EtcdCatalogStore {
    membership: Arc<Membership>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdCatalogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(keys::CATALOG)
    }
}

impl EtcdCatalogStore {
    /// The catalog of the cluster `membership` belongs to; requests run on `runtime`.
    pub fn new(membership: Arc<Membership>, runtime: tokio::runtime::Handle) -> EtcdCatalogStore {
        EtcdCatalogStore {
            membership,
            runtime,
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// The held catalog lock: deleted when dropped.
struct HeldLock {
    membership: Arc<Membership>,
    runtime: tokio::runtime::Handle,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Err(err) = self
            .runtime
            .block_on(self.membership.etcd().delete(keys::CATALOG_LOCK))
        {
            tracing::warn!(%err, "cannot release the catalog lock; it goes with this node's lease");
        }
    }
}

impl CatalogStore for EtcdCatalogStore {
    fn describe(&self) -> String {
        format!("etcd {}", keys::CATALOG)
    }

    fn load_if_changed(&self, known: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let found = self
            .runtime
            .block_on(self.membership.etcd().get(keys::CATALOG))
            .map_err(unavailable)?;
        Ok(match found {
            Some((_, Revision(revision))) if revision as u64 == known => None,
            Some((value, Revision(revision))) => Some((value, revision as u64)),
            None => None,
        })
    }

    fn save(&self, document: &[u8]) -> Result<u64, StoreError> {
        let etcd = self.membership.etcd();
        self.runtime
            .block_on(async {
                etcd.put(keys::CATALOG, document.to_vec()).await?;
                etcd.get(keys::CATALOG).await
            })
            .map_err(unavailable)?
            .map(|(_, Revision(revision))| revision as u64)
            .ok_or_else(|| unavailable("the catalog vanished as it was written"))
    }

    fn lock(&self) -> Result<CatalogLock, StoreError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let holder = self.membership.record().uuid.to_string();
        loop {
            let created = self
                .runtime
                .block_on(self.membership.etcd().create_with_lease(
                    keys::CATALOG_LOCK,
                    holder.clone(),
                    self.membership.lease_id(),
                ))
                .map_err(unavailable)?;
            if created {
                return Ok(Box::new(HeldLock {
                    membership: self.membership.clone(),
                    runtime: self.runtime.clone(),
                }));
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "another node held the catalog lock for {LOCK_WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
