//! The engine's replication ports over cluster metadata: what a primary term
//! may change ([`TermAuthority`]) and which streams a replica admits
//! ([`StreamAdmission`]).
//!
//! Both are called from the engine's own threads (never from the control
//! plane's runtime), so they run their etcd requests with `block_on`.

use std::time::{Duration, Instant};

use engine::replication::{Deposed, NodeId, PrimaryAdmission, ReplicaSetAuthority};
use uuid::Uuid;

use super::snapshots::{SnapshotState, SnapshotStore};
use super::volumes::{UpdateError, VolumeStore};
use super::LeaseClock;

/// Pause between attempts to reach etcd while the lease still holds.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// One primary term of one volume: its changes to the in-sync set are
/// conditional on the record still naming this node primary at the term's
/// epoch, and it may acknowledge only while the lease it started under is
/// valid. **Invariant:** a term is bound to one lease; once that lease is
/// lost the term never acknowledges again, even after the node registers a
/// new lease (a successor may have been elected meanwhile).
pub struct TermAuthority {
    store: VolumeStore,
    snapshots: SnapshotStore,
    runtime: tokio::runtime::Handle,
    node: Uuid,
    clock: LeaseClock,
}

impl TermAuthority {
    /// A term of `node` under the lease `clock` belongs to.
    pub fn new(
        store: VolumeStore,
        snapshots: SnapshotStore,
        runtime: tokio::runtime::Handle,
        node: Uuid,
        clock: LeaseClock,
    ) -> TermAuthority {
        TermAuthority {
            store,
            snapshots,
            runtime,
            node,
            clock,
        }
    }

    fn change_in_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: NodeId,
        add: bool,
    ) -> Result<(), Deposed> {
        let volume = Uuid::parse_str(volume).map_err(|_| Deposed)?;
        let member = Uuid::from_bytes(member.0);
        self.retry_while_lease(
            &format!("change the in-sync set of {volume} ({member})"),
            || {
                let result = self.runtime.block_on(self.store.update(volume, |record| {
                    if record.primary != self.node || record.epoch != epoch {
                        return Err(Deposed);
                    }
                    if add {
                        record.add_in_sync(member);
                    } else {
                        record.remove_in_sync(member);
                    }
                    Ok(())
                }));
                match result {
                    Err(UpdateError::Missing) => Err(UpdateError::Refused(Deposed)),
                    other => other.map(|_| ()),
                }
            },
        )
    }

    /// Runs `attempt` until it succeeds or is refused; an unreachable etcd is
    /// retried (after a pause) only while the term's lease holds.
    fn retry_while_lease(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<(), UpdateError<Deposed>>,
    ) -> Result<(), Deposed> {
        loop {
            if !self.lease_valid() {
                return Err(Deposed);
            }
            match attempt() {
                Ok(()) => return Ok(()),
                Err(UpdateError::Refused(deposed)) => return Err(deposed),
                Err(UpdateError::Missing) => return Err(Deposed),
                Err(UpdateError::Store(err)) => {
                    tracing::warn!(error = %err, "cannot {what} yet; retrying while the lease holds");
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }
}

impl ReplicaSetAuthority for TermAuthority {
    fn remove_in_sync(&self, volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed> {
        self.change_in_sync(volume, epoch, member, false)
    }

    fn add_in_sync(&self, volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed> {
        self.change_in_sync(volume, epoch, member, true)
    }

    fn add_snapshot_holder(
        &self,
        volume: &str,
        epoch: u64,
        member: NodeId,
        snapshot: &str,
    ) -> Result<(), Deposed> {
        let volume = Uuid::parse_str(volume).map_err(|_| Deposed)?;
        let Ok(snapshot) = Uuid::parse_str(snapshot) else {
            return Ok(());
        };
        let member = Uuid::from_bytes(member.0);
        self.retry_while_lease(
            &format!("record {member} as a holder of snapshot {snapshot}"),
            || {
                let result = self.runtime.block_on(async {
                    match self.store.get(volume).await {
                        Ok(Some((record, _)))
                            if record.primary == self.node && record.epoch == epoch => {}
                        Ok(_) => return Err(UpdateError::Refused(Deposed)),
                        Err(err) => return Err(UpdateError::Store(err)),
                    }
                    self.snapshots
                        .update(snapshot, |r| {
                            if r.state == SnapshotState::Ready && !r.holders.contains(&member) {
                                r.holders.push(member);
                            }
                            Ok::<(), Deposed>(())
                        })
                        .await
                        .map(|_| ())
                });
                // A snapshot deleted meanwhile has no holders to add to.
                match result {
                    Err(UpdateError::Missing) => Ok(()),
                    other => other,
                }
            },
        )
    }

    fn lease_valid(&self) -> bool {
        !self.clock.is_lost() && self.clock.is_valid(Instant::now())
    }
}

/// Admits a replication stream only from the node the volume's record names
/// primary, at the record's epoch, read from etcd when the stream opens.
pub struct StreamAdmission {
    store: VolumeStore,
    runtime: tokio::runtime::Handle,
}

impl StreamAdmission {
    /// Reads records through `store` on `runtime`.
    pub fn new(store: VolumeStore, runtime: tokio::runtime::Handle) -> StreamAdmission {
        StreamAdmission { store, runtime }
    }
}

impl PrimaryAdmission for StreamAdmission {
    fn admits(&self, volume: &str, primary: NodeId, epoch: u64) -> bool {
        let Ok(volume) = Uuid::parse_str(volume) else {
            return false;
        };
        match self.runtime.block_on(self.store.get(volume)) {
            Ok(Some((record, _))) => {
                record.primary == Uuid::from_bytes(primary.0) && record.epoch == epoch
            }
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(%volume, error = %err, "cannot read the volume's record; stream refused");
                false
            }
        }
    }
}
