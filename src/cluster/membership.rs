//! Cluster membership over etcd: the cluster record, node records, ordinals and
//! liveness (the key layout is in [`super::keys`]).
//!
//! A node [`join`](Membership::join)s once at start: it makes sure the cluster
//! record exists, claims its ordinal, writes its node record and puts its alive
//! key under a fresh lease kept alive by [`Etcd::keep_alive`]. [`Membership::run`]
//! then refreshes the record's capacity every [`NODE_REFRESH_INTERVAL`] and
//! registers again with a new lease if the old one is lost.
//!
//! A node is [`NodeState::Active`] while its alive key exists and
//! [`NodeState::Inactive`] otherwise; nothing else decides it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::etcd::{Entry, Etcd, EtcdError, KeepAlive, Lease, LeaseClock, LeaseId, WatchEvent};
use super::keys;

/// How often a node rewrites its record's capacity and free space.
pub const NODE_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Attempts at claiming an ordinal before giving up: each failed attempt means
/// another node claimed the ordinal this one chose in the same moment.
pub const ORDINAL_CLAIM_ATTEMPTS_MAX: u32 = 64;
/// Wait between attempts at registering again after the lease was lost.
const REREGISTER_RETRY: Duration = Duration::from_secs(1);

/// The cluster's identity, `/keel/cluster`: made once by the first node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's UUID; the subsystem NQN and serial number derive from it.
    pub uuid: Uuid,
    /// When the record was made, in seconds since the Unix epoch.
    pub created_at_s: u64,
}

impl ClusterRecord {
    /// The NQN of the one subsystem every node serves, in Lightbits' form:
    /// `nqn.2014-08.org.nvmexpress:NVMf:uuid:<cluster uuid>`.
    pub fn subsystem_nqn(&self) -> String {
        format!("nqn.2014-08.org.nvmexpress:NVMf:uuid:{}", self.uuid)
    }

    /// The subsystem's serial number (Identify Controller SN, 20 ASCII
    /// characters, NVMe Base 2.0 §5.17.2.1): the same on every node, so a host
    /// sees one subsystem through every node's controllers.
    pub fn serial_number(&self) -> String {
        self.uuid.simple().to_string().chars().take(20).collect()
    }
}

/// A node's permanent record, `/keel/nodes/<uuid>`.
///
/// **Invariant:** only the node it names writes it. Fields added later get
/// `#[serde(default)]` so every build reads every other build's records, and
/// unknown fields are ignored rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's UUID (`node-id` in its data directory).
    pub uuid: Uuid,
    /// A human-readable name.
    pub name: String,
    /// Small integer unique in the cluster and stable for the node's life
    /// (it bounds the node's NVMe controller-ID range).
    pub ordinal: u32,
    /// NVMe/TCP I/O endpoint `ip:port`.
    pub nvme_endpoint: String,
    /// NVMe/TCP discovery endpoint `ip:port`.
    #[serde(default)]
    pub discovery_endpoint: String,
    /// REST API base URL; empty when the API is off.
    #[serde(default)]
    pub api_endpoint: String,
    /// Where replication reaches the node, once replication exists.
    #[serde(default)]
    pub replication_endpoint: Option<String>,
    /// Failure domains the node belongs to (rack, power feed, ...).
    #[serde(default)]
    pub failure_domains: Vec<String>,
    /// Usable bytes of the node's pool.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free bytes of the node's pool at the last refresh.
    #[serde(default)]
    pub free_bytes: u64,
}

/// What a node says about itself when it joins; the ordinal is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's UUID.
    pub uuid: Uuid,
    /// A human-readable name.
    pub name: String,
    /// NVMe/TCP I/O endpoint.
    pub nvme_endpoint: String,
    /// NVMe/TCP discovery endpoint.
    pub discovery_endpoint: String,
    /// REST API base URL.
    pub api_endpoint: String,
    /// Failure domains.
    pub failure_domains: Vec<String>,
    /// Usable bytes of the pool.
    pub capacity_bytes: u64,
    /// Free bytes of the pool.
    pub free_bytes: u64,
}

/// A node's state, as the Lightbits API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// The node holds its lease: its alive key exists.
    Active,
    /// The node's lease expired or was revoked (stopped, crashed, cut off).
    Inactive,
}

impl NodeState {
    /// Active exactly while the alive key exists.
    pub fn from_alive(alive: bool) -> NodeState {
        if alive {
            NodeState::Active
        } else {
            NodeState::Inactive
        }
    }
}

/// A node record with its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The permanent record.
    pub record: NodeRecord,
    /// Active or Inactive.
    pub state: NodeState,
}

/// A node came up or went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node's alive key appeared (it registered).
    Up(Uuid),
    /// The node's alive key went away (lease expired or revoked).
    Down(Uuid),
}

/// Why joining or reading the membership failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A record in etcd is not valid JSON for its type.
    #[error("the record at {key} is damaged: {source}")]
    CorruptRecord {
        /// The key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Other nodes kept claiming the ordinal this node chose.
    #[error("could not claim an ordinal in {attempts} attempts")]
    OrdinalContended {
        /// Attempts made.
        attempts: u32,
    },
    /// Other nodes kept changing a record this node tried to swap.
    #[error("{key} kept changing for {attempts} compare-and-swap attempts")]
    Contended {
        /// The record's key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// The current lease and its keep-alive task.
struct Registration {
    lease: Lease,
    keep_alive: KeepAlive,
}

/// This node's membership in the cluster.
pub struct Membership {
    etcd: Etcd,
    cluster: ClusterRecord,
    record: Mutex<NodeRecord>,
    lease_ttl: Duration,
    registration: Mutex<Registration>,
    /// Set by [`Membership::leave`]: never register again.
    left: AtomicBool,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("cluster", &self.cluster)
            .field("record", &*self.record.lock())
            .finish_non_exhaustive()
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, MembershipError> {
    serde_json::from_slice(value).map_err(|source| MembershipError::CorruptRecord {
        key: key.to_owned(),
        source,
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // INVARIANT: the records are plain structs of strings and numbers, which
    // serde_json always encodes.
    serde_json::to_vec(value).expect("records always encode")
}

/// The cluster record, made by this call if no node made it yet.
pub async fn ensure_cluster(etcd: &Etcd) -> Result<ClusterRecord, MembershipError> {
    if let Some((value, _)) = etcd.get(keys::CLUSTER).await? {
        return decode(keys::CLUSTER, &value);
    }
    let created_at_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mine = ClusterRecord {
        uuid: Uuid::new_v4(),
        created_at_s,
    };
    if etcd.create(keys::CLUSTER, encode(&mine)).await? {
        tracing::info!(cluster = %mine.uuid, "created the cluster record");
        return Ok(mine);
    }
    // Another node made it first: theirs stands.
    match etcd.get(keys::CLUSTER).await? {
        Some((value, _)) => decode(keys::CLUSTER, &value),
        None => Ok(mine),
    }
}

/// The smallest ordinal not in `claimed`.
pub fn lowest_free_ordinal(claimed: &BTreeSet<u32>) -> u32 {
    (0..=u32::MAX)
        .find(|n| !claimed.contains(n))
        .expect("fewer than 2^32 nodes")
}

/// This node's ordinal: the one it already claimed, else the one its record
/// names if still free, else the lowest free one — each claim a txn that
/// creates `/keel/ordinals/<n>` only if absent.
async fn claim_ordinal(
    etcd: &Etcd,
    node: Uuid,
    recorded: Option<u32>,
) -> Result<u32, MembershipError> {
    let me = node.to_string();
    for attempt in 0..ORDINAL_CLAIM_ATTEMPTS_MAX {
        let claims = etcd.get_prefix(keys::ORDINALS_PREFIX).await?;
        let mut claimed = BTreeSet::new();
        for claim in &claims {
            let Some(n) = keys::ordinal_of_key(&claim.key) else {
                continue;
            };
            if claim.value == me.as_bytes() {
                return Ok(n);
            }
            claimed.insert(n);
        }
        let choice = match recorded {
            Some(n) if attempt == 0 && !claimed.contains(&n) => n,
            _ => lowest_free_ordinal(&claimed),
        };
        if etcd.create(&keys::ordinal(choice), me.clone()).await? {
            return Ok(choice);
        }
    }
    Err(MembershipError::OrdinalContended {
        attempts: ORDINAL_CLAIM_ATTEMPTS_MAX,
    })
}

/// Every node record with its state: Active where an alive key names it.
/// Records that do not decode are skipped with a warning, so one damaged
/// record does not hide the others. Sorted by ordinal.
pub fn node_views(records: &[Entry], alive: &[Entry]) -> Vec<NodeView> {
    let alive: BTreeSet<Uuid> = alive
        .iter()
        .filter_map(|e| keys::node_of_alive_key(&e.key))
        .collect();
    let mut views: BTreeMap<(u32, Uuid), NodeView> = BTreeMap::new();
    for entry in records {
        let Some(uuid) = keys::node_of_record_key(&entry.key) else {
            continue;
        };
        match decode::<NodeRecord>(&entry.key, &entry.value) {
            Ok(record) if record.uuid == uuid => {
                let state = NodeState::from_alive(alive.contains(&uuid));
                views.insert((record.ordinal, uuid), NodeView { record, state });
            }
            Ok(record) => {
                tracing::warn!(key = %entry.key, named = %record.uuid, "node record names another node; skipped");
            }
            Err(err) => tracing::warn!(error = %err, "skipped a node record"),
        }
    }
    views.into_values().collect()
}

/// Maps an alive-key watch event to a node event.
pub fn node_event(event: &WatchEvent) -> Option<NodeEvent> {
    match event {
        WatchEvent::Put(entry) => keys::node_of_alive_key(&entry.key).map(NodeEvent::Up),
        WatchEvent::Delete { key, .. } => keys::node_of_alive_key(key).map(NodeEvent::Down),
    }
}

impl Membership {
    /// Joins the cluster: ensures the cluster record, claims the ordinal,
    /// writes the node record, and puts the alive key under a new lease of
    /// `lease_ttl` kept alive from now on. Must run inside a tokio runtime.
    pub async fn join(
        etcd: Etcd,
        spec: NodeSpec,
        lease_ttl: Duration,
    ) -> Result<Membership, MembershipError> {
        let cluster = ensure_cluster(&etcd).await?;
        let record_key = keys::node(spec.uuid);
        let previous: Option<NodeRecord> = match etcd.get(&record_key).await? {
            Some((value, _)) => Some(decode(&record_key, &value)?),
            None => None,
        };
        let ordinal = claim_ordinal(&etcd, spec.uuid, previous.as_ref().map(|r| r.ordinal)).await?;
        let record = NodeRecord {
            uuid: spec.uuid,
            name: spec.name,
            ordinal,
            nvme_endpoint: spec.nvme_endpoint,
            discovery_endpoint: spec.discovery_endpoint,
            api_endpoint: spec.api_endpoint,
            replication_endpoint: previous.and_then(|r| r.replication_endpoint),
            failure_domains: spec.failure_domains,
            capacity_bytes: spec.capacity_bytes,
            free_bytes: spec.free_bytes,
        };
        etcd.put(&record_key, encode(&record)).await?;
        let registration = register(&etcd, spec.uuid, lease_ttl).await?;
        tracing::info!(
            cluster = %cluster.uuid,
            node = %record.uuid,
            ordinal,
            lease = registration.lease.id.0,
            lease_ttl_s = registration.lease.ttl.as_secs(),
            "joined the cluster"
        );
        Ok(Membership {
            etcd,
            cluster,
            record: Mutex::new(record),
            lease_ttl,
            registration: Mutex::new(registration),
            left: AtomicBool::new(false),
        })
    }

    /// The cluster record.
    pub fn cluster(&self) -> &ClusterRecord {
        &self.cluster
    }

    /// This node's record as last written.
    pub fn record(&self) -> NodeRecord {
        self.record.lock().clone()
    }

    /// The fencing clock of this node's current lease. After the lease is
    /// lost and [`run`](Membership::run) registers again, a new clock replaces
    /// it: ask again rather than keeping one.
    pub fn lease_clock(&self) -> LeaseClock {
        self.registration.lock().lease.clock.clone()
    }

    /// This node's current lease (keys attached to it go with the node).
    pub fn lease_id(&self) -> LeaseId {
        self.registration.lock().lease.id
    }

    /// Every node of the cluster with its state, sorted by ordinal.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, MembershipError> {
        // Alive keys first: a node that registers between the two reads then
        // shows Inactive once rather than Active without a record.
        let alive = self.etcd.get_prefix(keys::ALIVE_PREFIX).await?;
        let records = self.etcd.get_prefix(keys::NODES_PREFIX).await?;
        Ok(node_views(&records, &alive))
    }

    /// Node up and down events from now on. The receiver closes when the
    /// watch breaks; call [`nodes`](Membership::nodes) after subscribing to
    /// learn the states the events change.
    pub async fn watch(&self) -> Result<mpsc::Receiver<NodeEvent>, MembershipError> {
        let mut events = self.etcd.watch_prefix(keys::ALIVE_PREFIX).await?;
        let (tx, rx) = mpsc::channel(super::etcd::WATCH_EVENTS_MAX);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Some(event) = node_event(&event) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Rewrites this node's record with the REST API's base URL.
    pub async fn set_api_endpoint(&self, api_endpoint: String) -> Result<(), MembershipError> {
        self.update_record(|record| record.api_endpoint = api_endpoint)
            .await
    }

    /// Rewrites this node's record after `change` (endpoints known only once
    /// their listeners are bound).
    pub async fn update_record(
        &self,
        change: impl FnOnce(&mut NodeRecord),
    ) -> Result<(), MembershipError> {
        let record = {
            let mut record = self.record.lock();
            change(&mut record);
            record.clone()
        };
        self.etcd
            .put(&keys::node(record.uuid), encode(&record))
            .await?;
        Ok(())
    }

    /// The etcd connection the node registered through.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// Rewrites this node's record with new capacity figures.
    pub async fn refresh(
        &self,
        capacity_bytes: u64,
        free_bytes: u64,
    ) -> Result<(), MembershipError> {
        let record = {
            let mut record = self.record.lock();
            record.capacity_bytes = capacity_bytes;
            record.free_bytes = free_bytes;
            record.clone()
        };
        self.etcd
            .put(&keys::node(record.uuid), encode(&record))
            .await?;
        Ok(())
    }

    /// Keeps the membership up until the future is dropped or the node
    /// [`leave`](Membership::leave)s: refreshes the
    /// record's capacity from `pool_stats` (capacity, free bytes) every
    /// [`NODE_REFRESH_INTERVAL`], and registers again with a new lease when
    /// the current one is lost.
    pub async fn run<F>(self: Arc<Self>, pool_stats: F)
    where
        F: Fn() -> (u64, u64) + Send + Sync + 'static,
    {
        let mut refresh = tokio::time::interval(NODE_REFRESH_INTERVAL);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.left.load(Ordering::Acquire) {
            let lost = self.registration.lock().keep_alive.lost();
            tokio::select! {
                () = lost => self.register_again().await,
                _ = refresh.tick() => {
                    let (capacity, free) = pool_stats();
                    if let Err(err) = self.refresh(capacity, free).await {
                        tracing::warn!(error = %err, "cannot refresh the node record");
                    }
                }
            }
        }
    }

    async fn register_again(&self) {
        let uuid = self.record.lock().uuid;
        tracing::warn!(node = %uuid, "lease lost; registering again");
        while !self.left.load(Ordering::Acquire) {
            match register(&self.etcd, uuid, self.lease_ttl).await {
                Ok(registration) => {
                    let old = std::mem::replace(&mut *self.registration.lock(), registration);
                    // The old lease is lost already; revoking is only tidiness.
                    let _ = self.etcd.revoke_lease(old.lease.id).await;
                    tracing::info!(node = %uuid, "registered again");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot register again; retrying");
                    tokio::time::sleep(REREGISTER_RETRY).await;
                }
            }
        }
    }

    /// Leaves at once: stops the keep-alive and revokes the lease, so the
    /// alive key goes and the node shows Inactive without waiting for the TTL.
    pub async fn leave(&self) -> Result<(), MembershipError> {
        self.left.store(true, Ordering::Release);
        let lease = {
            let registration = self.registration.lock();
            registration.keep_alive.stop();
            registration.lease.id
        };
        self.etcd.revoke_lease(lease).await?;
        Ok(())
    }
}

/// Grants a lease, starts keeping it alive and puts the alive key under it.
async fn register(
    etcd: &Etcd,
    node: Uuid,
    lease_ttl: Duration,
) -> Result<Registration, MembershipError> {
    let lease = etcd.grant_lease(lease_ttl).await?;
    let keep_alive = etcd.keep_alive(&lease);
    if let Err(err) = etcd
        .put_with_lease(&keys::alive(node), node.to_string(), lease.id)
        .await
    {
        drop(keep_alive);
        let _ = etcd.revoke_lease(lease.id).await;
        return Err(err.into());
    }
    Ok(Registration { lease, keep_alive })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::etcd::Revision;

    fn record(ordinal: u32) -> NodeRecord {
        NodeRecord {
            uuid: Uuid::from_u128(u128::from(ordinal) + 1),
            name: format!("node-{ordinal}"),
            ordinal,
            nvme_endpoint: "127.0.0.1:4420".into(),
            discovery_endpoint: "127.0.0.1:8009".into(),
            api_endpoint: "https://127.0.0.1:8443".into(),
            replication_endpoint: None,
            failure_domains: vec!["rack-a".into()],
            capacity_bytes: 1 << 30,
            free_bytes: 1 << 29,
        }
    }

    fn stored(key: String, value: Vec<u8>) -> Entry {
        Entry {
            key,
            value,
            mod_revision: Revision(7),
        }
    }

    #[test]
    fn the_subsystem_nqn_and_serial_derive_from_the_cluster_uuid() {
        let cluster = ClusterRecord {
            uuid: Uuid::parse_str("6c5b1a3e-7f52-4e0a-9d0c-2b1f3e4d5a6b").expect("uuid"),
            created_at_s: 1,
        };
        assert_eq!(
            cluster.subsystem_nqn(),
            "nqn.2014-08.org.nvmexpress:NVMf:uuid:6c5b1a3e-7f52-4e0a-9d0c-2b1f3e4d5a6b"
        );
        assert_eq!(cluster.serial_number(), "6c5b1a3e7f524e0a9d0c");
        assert_eq!(cluster.serial_number().len(), 20);
    }

    #[test]
    fn a_node_record_round_trips_and_reads_older_and_newer_records() {
        let full = record(2);
        let text = serde_json::to_string(&full).expect("encodes");
        assert_eq!(
            serde_json::from_str::<NodeRecord>(&text).expect("decodes"),
            full
        );

        // An older build wrote no optional fields; a newer one adds fields we
        // do not know.
        let older = r#"{"uuid":"00000000-0000-0000-0000-000000000003","name":"n","ordinal":2,"nvme_endpoint":"127.0.0.1:4420"}"#;
        let parsed: NodeRecord = serde_json::from_str(older).expect("older decodes");
        assert_eq!(parsed.replication_endpoint, None);
        assert!(parsed.failure_domains.is_empty());
        assert_eq!(parsed.capacity_bytes, 0);
        let newer = r#"{"uuid":"00000000-0000-0000-0000-000000000003","name":"n","ordinal":2,"nvme_endpoint":"e","replication_endpoint":"127.0.0.1:4500","shiny":true}"#;
        let parsed: NodeRecord = serde_json::from_str(newer).expect("newer decodes");
        assert_eq!(
            parsed.replication_endpoint.as_deref(),
            Some("127.0.0.1:4500")
        );
    }

    #[test]
    fn a_node_is_active_exactly_while_its_alive_key_exists() {
        let (a, b, c) = (record(0), record(1), record(2));
        let records: Vec<Entry> = [&c, &a, &b]
            .iter()
            .map(|r| stored(keys::node(r.uuid), encode(*r)))
            .collect();
        let alive = vec![
            stored(keys::alive(a.uuid), a.uuid.to_string().into_bytes()),
            stored(keys::alive(c.uuid), c.uuid.to_string().into_bytes()),
            // An alive key without a record shows nothing.
            stored(keys::alive(Uuid::from_u128(99)), Vec::new()),
        ];
        let views = node_views(&records, &alive);
        let states: Vec<(u32, NodeState)> =
            views.iter().map(|v| (v.record.ordinal, v.state)).collect();
        assert_eq!(
            states,
            vec![
                (0, NodeState::Active),
                (1, NodeState::Inactive),
                (2, NodeState::Active)
            ]
        );
    }

    #[test]
    fn a_damaged_or_misfiled_record_is_skipped_not_fatal() {
        let good = record(0);
        let misfiled = record(1);
        let records = vec![
            stored(keys::node(good.uuid), encode(&good)),
            stored(keys::node(Uuid::from_u128(50)), b"{not json".to_vec()),
            stored(keys::node(Uuid::from_u128(51)), encode(&misfiled)),
        ];
        let views = node_views(&records, &[]);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].record, good);
        assert_eq!(views[0].state, NodeState::Inactive);
    }

    #[test]
    fn the_lowest_free_ordinal_fills_gaps_first() {
        assert_eq!(lowest_free_ordinal(&BTreeSet::new()), 0);
        assert_eq!(lowest_free_ordinal(&[0, 1, 2].into()), 3);
        assert_eq!(lowest_free_ordinal(&[0, 2, 3].into()), 1);
        assert_eq!(lowest_free_ordinal(&[1].into()), 0);
    }

    #[test]
    fn alive_key_events_become_node_events() {
        let node = Uuid::new_v4();
        let put = WatchEvent::Put(stored(keys::alive(node), Vec::new()));
        let delete = WatchEvent::Delete {
            key: keys::alive(node),
            mod_revision: Revision(9),
        };
        assert_eq!(node_event(&put), Some(NodeEvent::Up(node)));
        assert_eq!(node_event(&delete), Some(NodeEvent::Down(node)));
        let other = WatchEvent::Put(stored(keys::node(node), Vec::new()));
        assert_eq!(node_event(&other), None);
    }
}
