//! Replicated volumes in cluster metadata: the record each volume has in etcd
//! and the pure rules over it (placement, protection state, who takes over).
//!
//! A record names the volume's placement (the nodes holding a replica), its
//! primary, the primary term's epoch and the in-sync set. **Invariant:** every
//! change is a compare-and-swap on the record's revision, and a change made for
//! a primary term is conditional on the record still naming that primary at
//! that epoch; so two nodes can never both hold a term of one epoch, and a
//! deposed primary can change nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::etcd::{Etcd, Revision};
use super::keys;
use super::membership::{decode, encode, MembershipError, NodeState, NodeView};

/// Most replicas a volume may have (the documents' `replicaCount` 1-3).
pub const REPLICAS_MAX: u32 = 3;

/// A replicated volume as cluster metadata holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The volume (also its engine volume's name on every node).
    pub uuid: Uuid,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// Logical block size: 512 or 4096.
    pub sector_bytes: u32,
    /// Whether new data is compressed.
    #[serde(default)]
    pub compression: bool,
    /// How many replicas the volume keeps.
    pub replica_count: u32,
    /// The nodes holding a replica, `replica_count` of them.
    pub placement: Vec<Uuid>,
    /// The node serving the volume.
    pub primary: Uuid,
    /// The primary term: raised whenever a node starts serving the volume.
    pub epoch: u64,
    /// Placement nodes known to hold every acknowledged write.
    pub in_sync: Vec<Uuid>,
    /// For placement nodes out of the in-sync set, the epoch of the term in
    /// which each left it. A node that left as the current term began (the
    /// previous term's primary) is resynced incrementally by that term; one
    /// that left earlier lacks what no running term recorded: a full copy.
    #[serde(default)]
    pub left_in_sync_at: BTreeMap<Uuid, u64>,
    /// The namespace id on every node, once the volume is exposed.
    #[serde(default)]
    pub nsid: Option<u32>,
    /// Host NQNs allowed; `None` allows any host.
    #[serde(default)]
    pub acl: Option<Vec<String>>,
    /// Host addresses allowed (IP addresses and networks); `None` allows any.
    #[serde(default)]
    pub ip_acl: Option<Vec<String>>,
    /// The rates the volume's I/O is held to (QoS); `None` is unlimited.
    #[serde(default)]
    pub rate_limits: Option<mgmt_api::control::VolumeRateLimits>,
    /// The snapshot a clone was made from; each placement node makes its
    /// replica from its own copy of that snapshot.
    #[serde(default)]
    pub clone_of: Option<CloneSource>,
}

/// Where a cloned volume's replicas come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneSource {
    /// The snapshot (see `snapshots::SnapshotRecord`).
    pub snapshot: Uuid,
    /// A thick clone copies every block (a job on each node); a thin clone
    /// shares the snapshot's blocks.
    pub thick: bool,
    /// Whether a thick clone's copy is read back and compared.
    pub verify: bool,
}

/// How well a volume is protected, in the documents' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectionState {
    /// Every replica is in sync and the primary is up.
    FullyProtected,
    /// Served, with fewer in-sync replicas than asked for.
    Degraded,
    /// No node may serve it: its primary is down and no in-sync replica is up.
    NotAvailable,
}

impl ProtectionState {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionState::FullyProtected => "FullyProtected",
            ProtectionState::Degraded => "Degraded",
            ProtectionState::NotAvailable => "NotAvailable",
        }
    }
}

impl VolumeRecord {
    /// True when `node` holds a replica.
    pub fn is_placed_on(&self, node: Uuid) -> bool {
        self.placement.contains(&node)
    }

    /// True when `node` is in the in-sync set.
    pub fn is_in_sync(&self, node: Uuid) -> bool {
        self.in_sync.contains(&node)
    }

    /// The protection state, given which nodes are alive.
    pub fn protection(&self, alive: &BTreeSet<Uuid>) -> ProtectionState {
        if !alive.contains(&self.primary) {
            return ProtectionState::NotAvailable;
        }
        let in_sync_up = self.in_sync.iter().filter(|n| alive.contains(n)).count();
        if in_sync_up >= self.replica_count as usize {
            ProtectionState::FullyProtected
        } else {
            ProtectionState::Degraded
        }
    }

    /// The node that should take the volume over when its primary is down:
    /// the alive in-sync node with the lowest UUID (every node computes the
    /// same answer, so only one tries). `None` while the primary is up or
    /// when no in-sync node is.
    pub fn successor(&self, alive: &BTreeSet<Uuid>) -> Option<Uuid> {
        if alive.contains(&self.primary) {
            return None;
        }
        self.in_sync
            .iter()
            .filter(|n| **n != self.primary && alive.contains(n))
            .min()
            .copied()
    }

    /// The record after `node` takes the volume over from a dead primary:
    /// a new epoch, and the old primary out of the in-sync set as of that
    /// epoch (it may hold writes no one else has; it reports them when it
    /// comes back, and the new term copies those and what it writes).
    pub fn promoted(&self, node: Uuid) -> VolumeRecord {
        let mut next = self.clone();
        next.in_sync.retain(|n| *n != self.primary);
        next.primary = node;
        next.epoch += 1;
        next.left_in_sync_at.insert(self.primary, next.epoch);
        next
    }

    /// True when `node` left the in-sync set as the current term began.
    pub fn left_at_this_term(&self, node: Uuid) -> bool {
        !self.is_in_sync(node) && self.left_in_sync_at.get(&node) == Some(&self.epoch)
    }

    /// Takes `member` out of the in-sync set during the current term.
    pub fn remove_in_sync(&mut self, member: Uuid) {
        self.in_sync.retain(|n| *n != member);
        self.left_in_sync_at.insert(member, self.epoch);
    }

    /// Puts `member` (a placement node) back into the in-sync set.
    pub fn add_in_sync(&mut self, member: Uuid) {
        self.in_sync.retain(|n| *n != member);
        if self.placement.contains(&member) {
            self.in_sync.push(member);
            self.left_in_sync_at.remove(&member);
        }
    }
}

/// Why a volume cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} replicas need {wanted} active nodes; {active} are active")]
pub struct PlacementError {
    /// Replicas asked for.
    pub wanted: u32,
    /// Active nodes.
    pub active: usize,
}

/// Chooses `replica_count` active nodes: distinct failure domains first
/// (a node without labels is its own domain), then most free space; the
/// first node chosen is the primary.
pub fn place(nodes: &[NodeView], replica_count: u32) -> Result<Vec<Uuid>, PlacementError> {
    let mut active: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .collect();
    if active.len() < replica_count as usize {
        return Err(PlacementError {
            wanted: replica_count,
            active: active.len(),
        });
    }
    active.sort_by(|a, b| {
        b.record
            .free_bytes
            .cmp(&a.record.free_bytes)
            .then(a.record.uuid.cmp(&b.record.uuid))
    });
    let mut chosen: Vec<&NodeView> = Vec::new();
    let mut domains: BTreeSet<&str> = BTreeSet::new();
    for node in &active {
        if chosen.len() == replica_count as usize {
            break;
        }
        let fresh = node
            .record
            .failure_domains
            .iter()
            .all(|d| !domains.contains(d.as_str()));
        if fresh {
            domains.extend(node.record.failure_domains.iter().map(String::as_str));
            chosen.push(node);
        }
    }
    // Not enough distinct domains: share one rather than refuse.
    for node in &active {
        if chosen.len() == replica_count as usize {
            break;
        }
        if !chosen.iter().any(|c| c.record.uuid == node.record.uuid) {
            chosen.push(node);
        }
    }
    Ok(chosen.iter().map(|n| n.record.uuid).collect())
}

/// How far the members of a volume that lack blocks have caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Blocks copied.
    pub done_blocks: u64,
    /// Blocks to copy when the resyncs began.
    pub total_blocks: u64,
}

impl Progress {
    /// Percent done, 0-100.
    pub fn percent(self) -> u8 {
        if self.total_blocks == 0 {
            return 100;
        }
        (self.done_blocks.min(self.total_blocks) * 100 / self.total_blocks) as u8
    }
}

/// Reads and changes volume records in etcd.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    etcd: Etcd,
}

/// Why a record change was not made.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The change itself refused (the record no longer allows it).
    #[error("refused")]
    Refused(E),
    /// The volume has no record.
    #[error("the volume has no record")]
    Missing,
    /// etcd failed or the record is unreadable.
    #[error(transparent)]
    Store(#[from] MembershipError),
}

/// Compare-and-swap attempts before an update gives up on contention.
const UPDATE_ATTEMPTS_MAX: u32 = 32;

/// Changes the JSON record at `key` by compare-and-swap on its revision,
/// reading and retrying while others change it meanwhile.
pub async fn update_record<T, E>(
    etcd: &Etcd,
    key: &str,
    mut change: impl FnMut(&mut T) -> Result<(), E>,
) -> Result<T, UpdateError<E>>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let Some((value, revision)) = etcd.get(key).await.map_err(MembershipError::from)? else {
            return Err(UpdateError::Missing);
        };
        let mut record: T = decode(key, &value)?;
        change(&mut record).map_err(UpdateError::Refused)?;
        let swapped = etcd
            .compare_and_swap(key, revision, encode(&record))
            .await
            .map_err(MembershipError::from)?;
        if swapped {
            return Ok(record);
        }
    }
    Err(UpdateError::Store(MembershipError::Contended {
        key: key.to_owned(),
        attempts: UPDATE_ATTEMPTS_MAX,
    }))
}

impl VolumeStore {
    /// Records in `etcd`.
    pub fn new(etcd: Etcd) -> VolumeStore {
        VolumeStore { etcd }
    }

    /// The record of `volume` and its revision.
    pub async fn get(
        &self,
        volume: Uuid,
    ) -> Result<Option<(VolumeRecord, Revision)>, MembershipError> {
        let key = keys::volume(volume);
        match self.etcd.get(&key).await? {
            Some((value, revision)) => Ok(Some((decode(&key, &value)?, revision))),
            None => Ok(None),
        }
    }

    /// Every volume record.
    pub async fn list(&self) -> Result<Vec<VolumeRecord>, MembershipError> {
        self.etcd
            .get_prefix(keys::VOLUMES_PREFIX)
            .await?
            .iter()
            .map(|entry| decode(&entry.key, &entry.value))
            .collect()
    }

    /// Makes the record of a new volume; false if it exists.
    pub async fn create(&self, record: &VolumeRecord) -> Result<bool, MembershipError> {
        Ok(self
            .etcd
            .create(&keys::volume(record.uuid), encode(record))
            .await?)
    }

    /// Applies `change` to the current record and swaps it in, retrying on
    /// contention; returns the record written. `change` sees the record as
    /// it is each time and may refuse.
    pub async fn update<E>(
        &self,
        volume: Uuid,
        change: impl FnMut(&mut VolumeRecord) -> Result<(), E>,
    ) -> Result<VolumeRecord, UpdateError<E>> {
        update_record(&self.etcd, &keys::volume(volume), change).await
    }

    /// Deletes the record of `volume`, its progress and its replica marks.
    pub async fn delete(&self, volume: Uuid) -> Result<(), MembershipError> {
        self.etcd.delete(&keys::volume(volume)).await?;
        self.etcd.delete(&keys::progress(volume)).await?;
        for entry in self
            .etcd
            .get_prefix(&format!("{}{volume}/", keys::REPLICAS_PREFIX))
            .await?
        {
            self.etcd.delete(&entry.key).await?;
        }
        Ok(())
    }

    /// Publishes (`Some`) or clears the progress of `volume`'s resyncs.
    pub async fn set_progress(
        &self,
        volume: Uuid,
        progress: Option<Progress>,
    ) -> Result<(), MembershipError> {
        let key = keys::progress(volume);
        match progress {
            Some(progress) => self.etcd.put(&key, encode(&progress)).await?,
            None => {
                self.etcd.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// The published progress of `volume`'s resyncs, if any runs.
    pub async fn progress(&self, volume: Uuid) -> Result<Option<Progress>, MembershipError> {
        let key = keys::progress(volume);
        match self.etcd.get(&key).await? {
            Some((value, _)) => Ok(Some(decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Records that `node` holds its replica of `volume`.
    pub async fn mark_replica(&self, volume: Uuid, node: Uuid) -> Result<(), MembershipError> {
        self.etcd
            .put(&keys::replica(volume, node), Vec::new())
            .await?;
        Ok(())
    }

    /// Records that `node` serves `volume` as namespace `nsid`.
    pub async fn mark_exposed(
        &self,
        volume: Uuid,
        node: Uuid,
        nsid: u32,
    ) -> Result<(), MembershipError> {
        self.etcd
            .put(&keys::replica(volume, node), nsid.to_string())
            .await?;
        Ok(())
    }

    /// The namespace id `node` serves `volume` under, once it does.
    pub async fn exposed_as(
        &self,
        volume: Uuid,
        node: Uuid,
    ) -> Result<Option<u32>, MembershipError> {
        Ok(self
            .etcd
            .get(&keys::replica(volume, node))
            .await?
            .and_then(|(value, _)| String::from_utf8(value).ok()?.parse().ok()))
    }

    /// Forgets that `node` holds a replica of `volume`.
    pub async fn unmark_replica(&self, volume: Uuid, node: Uuid) -> Result<(), MembershipError> {
        self.etcd.delete(&keys::replica(volume, node)).await?;
        Ok(())
    }

    /// Every (volume, node) replica mark.
    pub async fn replica_marks(&self) -> Result<BTreeSet<(Uuid, Uuid)>, MembershipError> {
        Ok(self
            .etcd
            .get_prefix(keys::REPLICAS_PREFIX)
            .await?
            .iter()
            .filter_map(|entry| keys::replica_of_key(&entry.key))
            .collect())
    }
}

/// The node that replaces `lost` in `record`'s placement: an active node
/// outside the placement, in a failure domain no remaining replica is in if
/// one is, then with the most free space.
pub fn replacement(nodes: &[NodeView], record: &VolumeRecord, lost: Uuid) -> Option<Uuid> {
    let remaining: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| record.placement.contains(&n.record.uuid) && n.record.uuid != lost)
        .flat_map(|n| n.record.failure_domains.iter().map(String::as_str))
        .collect();
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Active && !record.placement.contains(&n.record.uuid))
        .max_by_key(|n| {
            let fresh = n
                .record
                .failure_domains
                .iter()
                .all(|d| !remaining.contains(d.as_str()));
            (fresh, n.record.free_bytes, std::cmp::Reverse(n.record.uuid))
        })
        .map(|n| n.record.uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::NodeRecord;

    fn view(n: u8, free: u64, domains: &[&str], state: NodeState) -> NodeView {
        NodeView {
            record: NodeRecord {
                uuid: Uuid::from_bytes([n; 16]),
                name: format!("node-{n}"),
                ordinal: u32::from(n),
                nvme_endpoint: String::new(),
                discovery_endpoint: String::new(),
                api_endpoint: String::new(),
                replication_endpoint: None,
                failure_domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                capacity_bytes: 1 << 40,
                free_bytes: free,
            },
            state,
        }
    }

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn record() -> VolumeRecord {
        VolumeRecord {
            uuid: id(100),
            size_bytes: 1 << 30,
            sector_bytes: 4096,
            compression: false,
            replica_count: 3,
            placement: vec![id(1), id(2), id(3)],
            primary: id(1),
            epoch: 4,
            in_sync: vec![id(1), id(2), id(3)],
            left_in_sync_at: BTreeMap::new(),
            nsid: Some(1),
            acl: None,
            ip_acl: None,
            rate_limits: None,
            clone_of: None,
        }
    }

    #[test]
    fn placement_spreads_over_failure_domains_then_free_space() {
        let nodes = [
            view(1, 900, &["rack-a"], NodeState::Active),
            view(2, 800, &["rack-a"], NodeState::Active),
            view(3, 100, &["rack-b"], NodeState::Active),
            view(4, 999, &[], NodeState::Inactive),
        ];
        assert_eq!(place(&nodes, 2), Ok(vec![id(1), id(3)]));
        assert_eq!(place(&nodes, 3), Ok(vec![id(1), id(3), id(2)]));
        assert_eq!(
            place(&nodes, 4),
            Err(PlacementError {
                wanted: 4,
                active: 3
            })
        );
    }

    #[test]
    fn a_lost_replica_is_replaced_outside_the_placement_in_a_fresh_domain() {
        let nodes = [
            view(1, 100, &["rack-a"], NodeState::Active),
            view(2, 100, &["rack-b"], NodeState::Inactive),
            view(3, 900, &["rack-a"], NodeState::Active),
            view(4, 100, &["rack-c"], NodeState::Active),
        ];
        let mut r = record();
        r.placement = vec![id(1), id(2)];
        assert_eq!(replacement(&nodes, &r, id(2)), Some(id(4)));
        r.placement = vec![id(1), id(2), id(4)];
        assert_eq!(
            replacement(&nodes, &r, id(2)),
            Some(id(3)),
            "no fresh domain left"
        );
        r.placement = vec![id(1), id(2), id(3), id(4)];
        assert_eq!(replacement(&nodes, &r, id(2)), None);
    }

    #[test]
    fn protection_follows_the_primary_and_the_in_sync_set() {
        let all: BTreeSet<Uuid> = [id(1), id(2), id(3)].into();
        let mut r = record();
        assert_eq!(r.protection(&all), ProtectionState::FullyProtected);
        r.in_sync = vec![id(1), id(2)];
        assert_eq!(r.protection(&all), ProtectionState::Degraded);
        let without_primary: BTreeSet<Uuid> = [id(2), id(3)].into();
        assert_eq!(
            r.protection(&without_primary),
            ProtectionState::NotAvailable
        );
    }

    #[test]
    fn only_one_in_sync_survivor_takes_over_with_a_new_epoch() {
        let r = record();
        let all: BTreeSet<Uuid> = [id(1), id(2), id(3)].into();
        assert_eq!(r.successor(&all), None, "the primary is up");
        let survivors: BTreeSet<Uuid> = [id(2), id(3)].into();
        assert_eq!(r.successor(&survivors), Some(id(2)));
        let next = r.promoted(id(2));
        assert_eq!((next.primary, next.epoch), (id(2), 5));
        assert_eq!(next.in_sync, vec![id(2), id(3)]);
        let mut stale = r.clone();
        stale.in_sync = vec![id(1), id(3)];
        assert_eq!(
            stale.successor(&[id(2)].into()),
            None,
            "node 2 is not in sync"
        );
    }

    #[test]
    fn only_a_node_that_left_as_the_term_began_is_resynced_incrementally() {
        let mut r = record();
        r.remove_in_sync(id(3));
        assert_eq!(r.left_in_sync_at.get(&id(3)), Some(&4));
        assert!(r.left_at_this_term(id(3)), "left during this term");
        let next = r.promoted(id(2));
        assert!(next.left_at_this_term(id(1)), "the dead primary");
        assert!(!next.left_at_this_term(id(3)), "left in an older term");
        assert!(!next.left_at_this_term(id(2)), "in sync");
        let mut back = next.clone();
        back.add_in_sync(id(1));
        assert!(back.is_in_sync(id(1)) && !back.left_in_sync_at.contains_key(&id(1)));
        back.add_in_sync(id(9));
        assert!(!back.is_in_sync(id(9)), "not a placement node");
        // Records written before the field existed read as nobody left.
        let mut json = serde_json::to_value(record()).expect("json");
        json.as_object_mut()
            .expect("object")
            .remove("left_in_sync_at");
        let old: VolumeRecord = serde_json::from_value(json).expect("an old record");
        assert!(old.left_in_sync_at.is_empty());
    }
}
