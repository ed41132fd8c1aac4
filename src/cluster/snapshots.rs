//! Snapshots and rollbacks of replicated volumes in cluster metadata.
//!
//! An API asks; the volume's primary acts, because only the primary can take
//! a snapshot (or roll back) at one point of the write order on every member
//! ([`engine::replication::ReplicatedVolume::snapshot`]):
//! - a snapshot record starts `Creating`; the primary claims it with its
//!   epoch, takes the snapshot on itself and every member that holds every
//!   block, and marks it `Ready` with those nodes as its holders;
//! - a rollback request names a snapshot; the primary claims it, rolls the
//!   volume back on every member and writes the outcome.
//!
//! **Invariant:** a claim is made before the action and the result after it,
//! each by compare-and-swap; a claimed request that has no result when a
//! primary next looks at it was interrupted (the primary died or lost etcd
//! mid-way) and is failed, never carried out twice: a second rollback would
//! undo writes acknowledged after the first.
//!
//! Deleting a snapshot marks it `Deleting`; each holder drops its own copy
//! and leaves the holder list, and the last one deletes the record. A holder
//! that is down drops its copy when it comes back.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::etcd::Etcd;
use super::keys;
use super::membership::{decode, encode, MembershipError};
use super::volumes::{update_record, UpdateError};

/// Where a snapshot stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotState {
    /// Asked for; the primary has not taken it yet.
    Creating,
    /// Taken on every holder.
    Ready,
    /// Could not be taken; holders drop whatever copy they made.
    Failed(String),
    /// Being deleted: holders drop their copies.
    Deleting,
}

/// A snapshot of a replicated volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot (also its engine name on every holder).
    pub uuid: Uuid,
    /// The volume it is of.
    pub volume: Uuid,
    /// Its size in bytes, once taken.
    pub size_bytes: u64,
    /// Where it stands.
    pub state: SnapshotState,
    /// The epoch of the primary term that claimed it, once claimed.
    pub claimed_at_epoch: Option<u64>,
    /// The nodes holding a copy.
    pub holders: Vec<Uuid>,
}

/// A request to roll a replicated volume back to one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Tells one request from the next.
    pub request: Uuid,
    /// The snapshot to roll back to.
    pub snapshot: Uuid,
    /// The epoch of the primary term that claimed it, once claimed.
    pub claimed_at_epoch: Option<u64>,
    /// `Some(Ok)` once done, `Some(Err(why))` once refused or failed.
    pub outcome: Option<Result<(), String>>,
}

/// Reads and changes snapshot records and rollback requests in etcd.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    etcd: Etcd,
}

impl SnapshotStore {
    /// A store over `etcd`.
    pub fn new(etcd: Etcd) -> SnapshotStore {
        SnapshotStore { etcd }
    }

    /// Makes `record`; false when its snapshot already has one.
    pub async fn create(&self, record: &SnapshotRecord) -> Result<bool, MembershipError> {
        Ok(self
            .etcd
            .create(&keys::snapshot(record.uuid), encode(record))
            .await?)
    }

    /// The record of `snapshot`.
    pub async fn get(&self, snapshot: Uuid) -> Result<Option<SnapshotRecord>, MembershipError> {
        let key = keys::snapshot(snapshot);
        match self.etcd.get(&key).await? {
            Some((value, _)) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Every snapshot record.
    pub async fn list(&self) -> Result<Vec<SnapshotRecord>, MembershipError> {
        self.etcd
            .get_prefix(keys::SNAPSHOTS_PREFIX)
            .await?
            .iter()
            .map(|entry| decode(&entry.key, &entry.value))
            .collect()
    }

    /// Changes the record of `snapshot` by compare-and-swap.
    pub async fn update<E>(
        &self,
        snapshot: Uuid,
        change: impl FnMut(&mut SnapshotRecord) -> Result<(), E>,
    ) -> Result<SnapshotRecord, UpdateError<E>> {
        update_record(&self.etcd, &keys::snapshot(snapshot), change).await
    }

    /// Deletes the record of `snapshot`.
    pub async fn delete(&self, snapshot: Uuid) -> Result<(), MembershipError> {
        self.etcd.delete(&keys::snapshot(snapshot)).await?;
        Ok(())
    }

    /// Makes a rollback request for `volume`; false when one is already there.
    pub async fn request_rollback(
        &self,
        volume: Uuid,
        record: &RollbackRecord,
    ) -> Result<bool, MembershipError> {
        Ok(self
            .etcd
            .create(&keys::rollback(volume), encode(record))
            .await?)
    }

    /// The rollback request of `volume`, if any.
    pub async fn rollback(&self, volume: Uuid) -> Result<Option<RollbackRecord>, MembershipError> {
        let key = keys::rollback(volume);
        match self.etcd.get(&key).await? {
            Some((value, _)) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Every rollback request, with its volume.
    pub async fn rollbacks(&self) -> Result<Vec<(Uuid, RollbackRecord)>, MembershipError> {
        let mut out = Vec::new();
        for entry in self.etcd.get_prefix(keys::ROLLBACKS_PREFIX).await? {
            let Some(volume) = entry
                .key
                .strip_prefix(keys::ROLLBACKS_PREFIX)
                .and_then(|v| Uuid::parse_str(v).ok())
            else {
                continue;
            };
            out.push((volume, decode(&entry.key, &entry.value)?));
        }
        Ok(out)
    }

    /// Changes the rollback request of `volume` by compare-and-swap.
    pub async fn update_rollback<E>(
        &self,
        volume: Uuid,
        change: impl FnMut(&mut RollbackRecord) -> Result<(), E>,
    ) -> Result<RollbackRecord, UpdateError<E>> {
        update_record(&self.etcd, &keys::rollback(volume), change).await
    }

    /// Deletes the rollback request of `volume`.
    pub async fn delete_rollback(&self, volume: Uuid) -> Result<(), MembershipError> {
        self.etcd.delete(&keys::rollback(volume)).await?;
        Ok(())
    }
}
