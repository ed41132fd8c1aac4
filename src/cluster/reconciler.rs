//! Each node's volume reconciler: makes this node's replicas, namespaces and
//! primary terms match the volume records in etcd, and takes volumes over
//! from a primary whose lease ended.
//!
//! It runs on its own thread, level-triggered: every round it reads every
//! volume record and every node's state and acts on the difference, so a
//! missed event costs one round, never a wrong state. For each record that
//! places a replica here it:
//! - creates (or grows) the local engine volume and marks it in etcd;
//! - when the primary is down and this node is the record's successor, takes
//!   the volume over by compare-and-swap (a new epoch, the old primary out of
//!   the in-sync set);
//! - when the record names this node primary, starts a primary term with an
//!   epoch this node itself just wrote (so no term ever reuses an epoch), and
//!   stops a term the record no longer names or whose lease was lost;
//! - exposes the namespace with the same nsid and UUID as every other node,
//!   ANA optimized while a term runs here and inaccessible otherwise;
//! - as primary, takes the snapshots and carries out the rollbacks asked for
//!   in etcd ([`super::snapshots`]); as a holder, drops its copy of a
//!   snapshot being deleted.
//!
//! A clone's replica is made from this node's own copy of the snapshot: at
//! once for a thin clone, by a local thick clone job for a thick one (the
//! replica is marked only when the job completed).
//!
//! **Invariant:** the namespace is made optimized only after its term
//! serves it, and the term is stopped only after the namespace is made
//! inaccessible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::replication::{
    Deposed, MemberSpec, MemberState, NodeId, PrimaryConfig, ReplicaServer, ReplicatedVolume,
};
use engine::{
    CloneState, Engine, SectorSize, ThickCloneOptions, VolumeId, VolumeKind, VolumeOptions,
};
use nvmf_target::{AddressAcl, AnaState, HostAcl, NamespaceOptions, RateLimits, Subsystem};
use uuid::Uuid;

use super::authority::TermAuthority;
use super::membership::{Membership, NodeState, NodeView};
use super::snapshots::{RollbackRecord, SnapshotRecord, SnapshotState, SnapshotStore};
use super::volumes::{replacement, Progress, UpdateError, VolumeRecord, VolumeStore};
use crate::adapters::{ClusterNamespace, IoMetricsRegistry, MeteredNamespace};

/// Time between rounds.
const ROUND_INTERVAL: Duration = Duration::from_millis(250);
/// How long a new primary waits for its members' replicas before it starts
/// without the missing ones (they are then dropped and resynced).
const MEMBERS_READY_WAIT: Duration = Duration::from_secs(10);
/// Where a member is assumed to listen when its node record names no
/// replication endpoint (nothing listens there: the member is away).
const NO_ENDPOINT: &str = "127.0.0.1:1";

/// What the reconciler works with.
pub struct ReconcilerParts {
    /// The local pool.
    pub engine: Arc<Engine>,
    /// The node's NVMe subsystem (the cluster's NQN).
    pub subsystem: Arc<Subsystem>,
    /// This node's membership.
    pub membership: Arc<Membership>,
    /// The volume records.
    pub store: VolumeStore,
    /// The snapshot records and rollback requests.
    pub snapshots: SnapshotStore,
    /// This node's replica side.
    pub replica_server: Arc<ReplicaServer>,
    /// The control plane's runtime, for etcd requests.
    pub runtime: tokio::runtime::Handle,
    /// Pace of resync and rebuild copies.
    pub resync_bytes_per_s: u64,
    /// How long a replica's node may be down before the primary rebuilds
    /// the replica on another node.
    pub replace_after: Duration,
    /// Pace of thick clone jobs (None: unpaced).
    pub clone_bytes_per_s: Option<u64>,
    /// Where exposed volumes' I/O is recorded (`/metrics`).
    pub io_metrics: Arc<IoMetricsRegistry>,
}

/// The running reconciler; stops (and stops every term) when dropped.
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reconciler {
    /// Starts the reconciler thread.
    pub fn start(parts: ReconcilerParts) -> std::io::Result<Reconciler> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("keel-reconcile".into())
                .spawn(move || {
                    let mut state = State {
                        parts,
                        served: HashMap::new(),
                        peers: Vec::new(),
                        down_since: HashMap::new(),
                        orphans: BTreeSet::new(),
                        cloning: HashMap::new(),
                    };
                    while !stop.load(Ordering::Acquire) {
                        state.round();
                        std::thread::sleep(ROUND_INTERVAL);
                    }
                    state.stop_all();
                })?
        };
        Ok(Reconciler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct State {
    parts: ReconcilerParts,
    served: HashMap<Uuid, Served>,
    peers: Vec<SocketAddr>,
    /// When each inactive node was first seen down.
    down_since: HashMap<Uuid, Instant>,
    /// Local replicas no record places here, seen last round.
    orphans: BTreeSet<Uuid>,
    /// Replicas a local thick clone job is still filling.
    cloning: HashMap<Uuid, VolumeId>,
}

/// One volume this node holds a replica of.
struct Served {
    namespace: Arc<ClusterNamespace>,
    /// The nsid it is exposed under, once exposed.
    nsid: Option<u32>,
    /// The host and address lists last given to the target.
    acl: (Option<Vec<String>>, Option<Vec<String>>),
    /// The rate limits last given to the target.
    rate_limits: RateLimits,
    ana: AnaState,
    term: Option<Term>,
    marked: bool,
    first_seen: Instant,
    /// The resync progress last published for it.
    progress: Option<Progress>,
}

struct Term {
    epoch: u64,
    volume: Arc<ReplicatedVolume>,
}

/// What one round knows of the cluster.
struct View {
    nodes: Vec<NodeView>,
    alive: BTreeSet<Uuid>,
    replication: BTreeMap<Uuid, SocketAddr>,
    marks: BTreeSet<(Uuid, Uuid)>,
    snapshots: Vec<SnapshotRecord>,
    rollbacks: Vec<(Uuid, RollbackRecord)>,
}

impl State {
    fn me(&self) -> Uuid {
        self.parts.membership.record().uuid
    }

    fn round(&mut self) {
        let runtime = self.parts.runtime.clone();
        let read = runtime.block_on(async {
            let records = self.parts.store.list().await?;
            let nodes = self.parts.membership.nodes().await?;
            let marks = self.parts.store.replica_marks().await?;
            let snapshots = self.parts.snapshots.list().await?;
            let rollbacks = self.parts.snapshots.rollbacks().await?;
            Ok::<_, super::MembershipError>((records, nodes, marks, snapshots, rollbacks))
        });
        let (records, nodes, marks, snapshots, rollbacks) = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(error = %err, "reconcile round skipped: cluster store unreachable");
                return;
            }
        };
        let me = self.me();
        let mut peers: Vec<SocketAddr> = nodes
            .iter()
            .filter(|n| n.record.uuid != me && n.state == NodeState::Active)
            .filter_map(|n| n.record.nvme_endpoint.parse().ok())
            .collect();
        peers.sort();
        if peers != self.peers {
            self.parts.subsystem.set_peer_portals(peers.clone());
            self.peers = peers;
        }
        let now = Instant::now();
        for node in &nodes {
            if node.state == NodeState::Active {
                self.down_since.remove(&node.record.uuid);
            } else {
                self.down_since.entry(node.record.uuid).or_insert(now);
            }
        }
        let view = View {
            nodes: nodes.clone(),
            alive: nodes
                .iter()
                .filter(|n| n.state == NodeState::Active)
                .map(|n| n.record.uuid)
                .collect(),
            replication: nodes
                .iter()
                .filter_map(|n| {
                    let addr = n.record.replication_endpoint.as_ref()?.parse().ok()?;
                    Some((n.record.uuid, addr))
                })
                .collect(),
            marks,
            snapshots,
            rollbacks,
        };
        let mut wanted = BTreeSet::new();
        for record in records {
            if record.is_placed_on(me) {
                wanted.insert(record.uuid);
                if let Err(err) = self.reconcile(record.clone(), &view) {
                    tracing::warn!(volume = %record.uuid, error = %err, "cannot reconcile the volume yet");
                }
            }
        }
        let gone: Vec<Uuid> = self
            .served
            .keys()
            .filter(|v| !wanted.contains(v))
            .copied()
            .collect();
        for volume in gone {
            self.remove(volume);
        }
        self.abandon_clones(&wanted);
        self.remove_orphans(&wanted, &view);
        self.drop_retired_snapshots(&view);
    }

    /// Stops the thick clone jobs of replicas no record places here any more
    /// (the clone was cancelled or deleted) and deletes what they filled.
    fn abandon_clones(&mut self, wanted: &BTreeSet<Uuid>) {
        let engine = &self.parts.engine;
        self.cloning.retain(|volume, id| {
            if wanted.contains(volume) {
                return true;
            }
            if let Some(job) = engine.clone_job(*id) {
                job.cancel();
                job.wait(Duration::from_secs(10));
            }
            match engine.delete_volume(*id) {
                Ok(()) => tracing::info!(%volume, "deleted an abandoned clone replica"),
                Err(err) => {
                    tracing::warn!(%volume, error = %err, "cannot delete an abandoned clone replica")
                }
            }
            false
        });
    }

    /// Drops this node's copy of every snapshot being deleted (or that
    /// failed), leaves its holder list, and deletes a deleted snapshot's
    /// record once no node holds it. A copy made while this node was being
    /// rebuilt, before it was listed, is dropped too.
    fn drop_retired_snapshots(&mut self, view: &View) {
        let me = self.me();
        let engine = &self.parts.engine;
        for snapshot in &view.snapshots {
            let retired = matches!(
                snapshot.state,
                SnapshotState::Deleting | SnapshotState::Failed(_)
            );
            let local = engine.volume_by_name(&snapshot.uuid.to_string());
            if !retired || (!snapshot.holders.contains(&me) && local.is_none()) {
                continue;
            }
            if let Some(info) = local {
                if info.kind != VolumeKind::Snapshot {
                    continue;
                }
                if let Err(err) = engine.delete_volume(info.id) {
                    tracing::warn!(snapshot = %snapshot.uuid, error = %err, "cannot drop the local copy of a snapshot");
                    continue;
                }
                tracing::info!(snapshot = %snapshot.uuid, "dropped the local copy of a deleted snapshot");
            }
            let store = &self.parts.snapshots;
            let result = self.parts.runtime.block_on(async {
                let left = store
                    .update(snapshot.uuid, |r| {
                        r.holders.retain(|n| *n != me);
                        Ok::<(), ()>(())
                    })
                    .await?;
                if left.holders.is_empty() && left.state == SnapshotState::Deleting {
                    store.delete(snapshot.uuid).await?;
                }
                Ok::<(), UpdateError<()>>(())
            });
            if let Err(err) = result {
                tracing::warn!(snapshot = %snapshot.uuid, error = %err, "cannot update the snapshot's holders");
            }
        }
    }

    /// Deletes local replicas whose record no longer places them here (the
    /// replica was rebuilt elsewhere while this node was down). Only a
    /// replica etcd still marks as this node's is touched, so volumes made
    /// before the node joined a cluster are never taken for orphans, and a
    /// replica must look orphaned in two rounds in a row.
    fn remove_orphans(&mut self, wanted: &BTreeSet<Uuid>, view: &View) {
        let me = self.me();
        let engine = &self.parts.engine;
        let orphans: BTreeSet<Uuid> = engine
            .volumes()
            .iter()
            .filter_map(|v| Uuid::parse_str(&v.name).ok())
            .filter(|v| !wanted.contains(v) && !self.served.contains_key(v))
            .filter(|v| view.marks.contains(&(*v, me)))
            .collect();
        for volume in orphans.intersection(&self.orphans) {
            if let Some(info) = engine.volume_by_name(&volume.to_string()) {
                // Its snapshots went with it: the replica rebuilt elsewhere
                // holds them now.
                for snapshot in engine
                    .snapshots()
                    .into_iter()
                    .filter(|s| s.parent == Some(info.id))
                {
                    match engine.delete_volume(snapshot.id) {
                        Ok(()) => {
                            tracing::info!(%volume, snapshot = %snapshot.name, "deleted a snapshot of a replica no record places here")
                        }
                        Err(err) => {
                            tracing::warn!(%volume, snapshot = %snapshot.name, error = %err, "cannot delete a snapshot of an orphaned replica")
                        }
                    }
                }
                match engine.delete_volume(info.id) {
                    Ok(()) => tracing::info!(%volume, "deleted a replica no record places here"),
                    Err(err) => {
                        tracing::warn!(%volume, error = %err, "cannot delete an orphaned replica")
                    }
                }
            }
            let _ = self
                .parts
                .runtime
                .block_on(self.parts.store.unmark_replica(*volume, me));
        }
        self.orphans = orphans;
    }

    fn reconcile(&mut self, mut record: VolumeRecord, view: &View) -> anyhow::Result<()> {
        let me = self.me();
        if !self.ensure_replica(&record, view)? {
            return Ok(());
        }
        if record.successor(&view.alive) == Some(me) && self.lease_valid() {
            let dead = record.primary;
            let epoch = record.epoch;
            match self.swap(record.uuid, |r| {
                if r.primary != dead || r.epoch != epoch {
                    return Err(Deposed);
                }
                *r = r.promoted(me);
                Ok(())
            }) {
                Ok(promoted) => {
                    tracing::warn!(volume = %record.uuid, old_primary = %dead, epoch = promoted.epoch, "took the volume over from a primary whose lease ended");
                    record = promoted;
                    self.start_term(&record, view)?;
                }
                Err(err) => {
                    tracing::info!(volume = %record.uuid, error = %err, "another node took the volume over")
                }
            }
        }
        if record.primary == me {
            let running = self
                .served
                .get(&record.uuid)
                .and_then(|s| s.term.as_ref())
                .is_some_and(|t| t.epoch == record.epoch && t.volume.holds_term());
            if !running {
                self.stop_term(record.uuid);
                if self.lease_valid() && self.members_ready(&record, view) {
                    let epoch = record.epoch;
                    let next = self.swap(record.uuid, |r| {
                        if r.primary != me || r.epoch != epoch {
                            return Err(Deposed);
                        }
                        r.epoch += 1;
                        Ok(())
                    })?;
                    record = next;
                    self.start_term(&record, view)?;
                }
            } else {
                self.grow_term(&record)?;
                self.follow_member_endpoints(&record, view);
                self.replace_lost_members(&record, view)?;
                self.publish_progress(record.uuid)?;
                self.take_snapshots(&record, view);
                self.roll_back(&record, view);
            }
        } else {
            self.stop_term(record.uuid);
        }
        self.expose(&record)
    }

    fn lease_valid(&self) -> bool {
        let clock = self.parts.membership.lease_clock();
        !clock.is_lost() && clock.is_valid(Instant::now())
    }

    fn swap(
        &self,
        volume: Uuid,
        change: impl FnMut(&mut VolumeRecord) -> Result<(), Deposed>,
    ) -> anyhow::Result<VolumeRecord> {
        match self
            .parts
            .runtime
            .block_on(self.parts.store.update(volume, change))
        {
            Ok(record) => Ok(record),
            Err(UpdateError::Refused(Deposed)) => anyhow::bail!("the record changed meanwhile"),
            Err(UpdateError::Missing) => anyhow::bail!("the volume was deleted"),
            Err(UpdateError::Store(err)) => Err(err.into()),
        }
    }

    /// The local engine volume exists with at least the record's size, and
    /// etcd knows it does. False while a thick clone job still fills it.
    fn ensure_replica(&mut self, record: &VolumeRecord, _view: &View) -> anyhow::Result<bool> {
        let engine = self.parts.engine.clone();
        let name = record.uuid.to_string();
        let info = match engine.volume_by_name(&name) {
            Some(info) if !info.complete => {
                let job = engine.clone_job(info.id).map(|job| job.progress().state);
                match job {
                    Some(CloneState::Running) => return Ok(false),
                    Some(CloneState::Completed) => info,
                    other => {
                        // Failed, cancelled, or lost with a restart: start over.
                        tracing::warn!(volume = %record.uuid, state = ?other, "a local thick clone did not finish; starting it again");
                        engine.delete_volume(info.id)?;
                        self.cloning.remove(&record.uuid);
                        return Ok(false);
                    }
                }
            }
            Some(info) => info,
            None => match self.make_replica(record)? {
                Some(info) => info,
                None => return Ok(false),
            },
        };
        self.cloning.remove(&record.uuid);
        if info.compression != record.compression {
            engine.set_compression(info.id, record.compression)?;
        }
        let me = self.me();
        let served = self.served.entry(record.uuid).or_insert_with(|| Served {
            namespace: Arc::new(ClusterNamespace::new(
                engine,
                info.id,
                info.sector_size,
                *record.uuid.as_bytes(),
            )),
            nsid: None,
            acl: (None, None),
            rate_limits: RateLimits::UNLIMITED,
            ana: AnaState::Inaccessible,
            term: None,
            marked: false,
            first_seen: Instant::now(),
            progress: None,
        });
        if !served.marked {
            self.parts
                .runtime
                .block_on(self.parts.store.mark_replica(record.uuid, me))?;
            served.marked = true;
        }
        Ok(true)
    }

    /// Makes the local replica: empty, or from this node's copy of the
    /// snapshot a clone is made from. `None` while a thick clone job fills it.
    fn make_replica(
        &mut self,
        record: &VolumeRecord,
    ) -> anyhow::Result<Option<engine::VolumeInfo>> {
        let engine = &self.parts.engine;
        let name = record.uuid.to_string();
        let sector = SectorSize::from_bytes(record.sector_bytes)
            .ok_or_else(|| anyhow::anyhow!("sector size {}", record.sector_bytes))?;
        let source = record.clone_of.and_then(|of| {
            engine
                .volume_by_name(&of.snapshot.to_string())
                .filter(|s| s.kind == VolumeKind::Snapshot)
                .map(|s| (of, s))
        });
        let Some((of, snapshot)) = source else {
            if record.clone_of.is_some() && record.epoch == 0 {
                anyhow::bail!("this node holds no copy of the snapshot the clone is made from");
            }
            // A new volume, or a replica rebuilt from a full copy.
            tracing::info!(volume = %record.uuid, size = record.size_bytes, "creating the local replica");
            return Ok(Some(engine.create_volume_with_options(
                &name,
                record.size_bytes,
                sector,
                VolumeOptions {
                    compression: record.compression,
                },
            )?));
        };
        if of.thick {
            let job = engine.start_thick_clone(
                snapshot.id,
                &name,
                ThickCloneOptions {
                    size_bytes: Some(record.size_bytes),
                    sector: Some(sector),
                    compression: record.compression,
                    verify: of.verify,
                    max_bytes_per_s: self.parts.clone_bytes_per_s,
                },
            )?;
            tracing::info!(volume = %record.uuid, snapshot = %of.snapshot, "thick clone of the local snapshot started");
            self.cloning.insert(record.uuid, job.progress().destination);
            return Ok(None);
        }
        tracing::info!(volume = %record.uuid, snapshot = %of.snapshot, "thin clone of the local snapshot made");
        Ok(Some(engine.create_clone(
            snapshot.id,
            &name,
            Some(record.size_bytes),
            Some(sector),
        )?))
    }

    /// As primary, takes the snapshots asked of `record`'s volume.
    fn take_snapshots(&mut self, record: &VolumeRecord, view: &View) {
        let me = self.me();
        let Some(term) = self.term_serving(record.uuid) else {
            return;
        };
        let store = self.parts.snapshots.clone();
        let runtime = self.parts.runtime.clone();
        let asked = view
            .snapshots
            .iter()
            .filter(|s| s.volume == record.uuid && s.state == SnapshotState::Creating);
        for snapshot in asked {
            let claim = snapshot.claimed_at_epoch;
            if claim.is_some() {
                // Claimed and never answered: the primary that claimed it
                // died or lost etcd meanwhile; copies may differ.
                let _ = runtime.block_on(store.update(snapshot.uuid, |r| {
                    if r.state != SnapshotState::Creating || r.claimed_at_epoch != claim {
                        return Err(());
                    }
                    r.state = SnapshotState::Failed(
                        "interrupted: the primary changed while it was taken".into(),
                    );
                    Ok(())
                }));
                continue;
            }
            let epoch = record.epoch;
            let claimed = runtime.block_on(store.update(snapshot.uuid, |r| {
                if r.state != SnapshotState::Creating || r.claimed_at_epoch.is_some() {
                    return Err(());
                }
                r.claimed_at_epoch = Some(epoch);
                Ok(())
            }));
            if claimed.is_err() {
                continue;
            }
            let result = term.snapshot(&snapshot.uuid.to_string());
            let taken_here = self
                .parts
                .engine
                .volume_by_name(&snapshot.uuid.to_string())
                .is_some();
            let size = self
                .parts
                .engine
                .volume_by_name(&record.uuid.to_string())
                .map_or(record.size_bytes, |v| v.size_bytes);
            let answered = runtime.block_on(store.update(snapshot.uuid, |r| {
                match &result {
                    Ok(members) => {
                        r.holders = std::iter::once(me)
                            .chain(members.iter().map(|m| Uuid::from_bytes(m.0)))
                            .collect();
                        if r.state == SnapshotState::Creating {
                            r.state = SnapshotState::Ready;
                            r.size_bytes = size;
                        }
                    }
                    Err(err) => {
                        r.holders = if taken_here { vec![me] } else { Vec::new() };
                        if r.state == SnapshotState::Creating {
                            r.state = SnapshotState::Failed(err.to_string());
                        }
                    }
                }
                Ok::<(), ()>(())
            }));
            match (&result, answered) {
                (Ok(members), Ok(_)) => {
                    tracing::info!(volume = %record.uuid, snapshot = %snapshot.uuid, members = members.len(), "snapshot taken")
                }
                (result, answered) => {
                    tracing::warn!(volume = %record.uuid, snapshot = %snapshot.uuid, ?result, answered = answered.is_ok(), "snapshot not taken")
                }
            }
        }
    }

    /// As primary, carries out the rollback asked of `record`'s volume.
    fn roll_back(&mut self, record: &VolumeRecord, view: &View) {
        let me = self.me();
        let Some(term) = self.term_serving(record.uuid) else {
            return;
        };
        let Some((_, asked)) = view
            .rollbacks
            .iter()
            .find(|(v, r)| *v == record.uuid && r.outcome.is_none())
        else {
            return;
        };
        let store = self.parts.snapshots.clone();
        let runtime = self.parts.runtime.clone();
        let request = asked.request;
        let answer = |outcome: Result<(), String>| {
            let _ = runtime.block_on(store.update_rollback(record.uuid, |r| {
                if r.request != request || r.outcome.is_some() {
                    return Err(());
                }
                r.outcome = Some(outcome.clone());
                Ok(())
            }));
        };
        if asked.claimed_at_epoch.is_some() {
            answer(Err(
                "interrupted: the primary changed during the rollback; the volume may or may not be rolled back".into(),
            ));
            return;
        }
        let epoch = record.epoch;
        let claimed = runtime.block_on(store.update_rollback(record.uuid, |r| {
            if r.request != request || r.claimed_at_epoch.is_some() {
                return Err(());
            }
            r.claimed_at_epoch = Some(epoch);
            Ok(())
        }));
        if claimed.is_err() {
            return;
        }
        let held_here = view.snapshots.iter().any(|s| {
            s.uuid == asked.snapshot && s.state == SnapshotState::Ready && s.holders.contains(&me)
        });
        let outcome = if held_here {
            term.rollback(&asked.snapshot.to_string())
                .map_err(|err| format!("rollback failed: {err}"))
        } else {
            Err(format!(
                "the volume's primary holds no copy of snapshot {} (it was catching up when the snapshot was taken)",
                asked.snapshot
            ))
        };
        match &outcome {
            Ok(()) => {
                tracing::warn!(volume = %record.uuid, snapshot = %asked.snapshot, "volume rolled back")
            }
            Err(why) => {
                tracing::warn!(volume = %record.uuid, snapshot = %asked.snapshot, why, "rollback not done")
            }
        }
        answer(outcome);
    }

    /// The term serving `volume` here, once it may serve (its members agree).
    fn term_serving(&self, volume: Uuid) -> Option<Arc<ReplicatedVolume>> {
        self.served
            .get(&volume)
            .and_then(|s| s.term.as_ref())
            .map(|t| t.volume.clone())
            .filter(|v| v.may_serve())
    }

    /// True when every in-sync member holds its replica, or the wait for
    /// them is over.
    fn members_ready(&self, record: &VolumeRecord, view: &View) -> bool {
        let me = self.me();
        let waited = self
            .served
            .get(&record.uuid)
            .is_some_and(|s| s.first_seen.elapsed() >= MEMBERS_READY_WAIT);
        waited
            || record
                .in_sync
                .iter()
                .filter(|n| **n != me)
                .all(|n| view.marks.contains(&(record.uuid, *n)))
    }

    fn start_term(&mut self, record: &VolumeRecord, view: &View) -> anyhow::Result<()> {
        let me = self.me();
        let engine = &self.parts.engine;
        let name = record.uuid.to_string();
        let local = engine
            .volume_by_name(&name)
            .ok_or_else(|| anyhow::anyhow!("the local replica is missing"))?;
        let members = record
            .placement
            .iter()
            .filter(|n| **n != me)
            .map(|n| MemberSpec {
                node: NodeId(*n.as_bytes()),
                addr: view
                    .replication
                    .get(n)
                    .copied()
                    .unwrap_or_else(|| NO_ENDPOINT.parse().expect("a literal address")),
                in_sync: record.is_in_sync(*n),
                left_at_this_term: record.left_at_this_term(*n),
            })
            .collect();
        let authority = Arc::new(TermAuthority::new(
            self.parts.store.clone(),
            self.parts.snapshots.clone(),
            self.parts.runtime.clone(),
            me,
            self.parts.membership.lease_clock(),
        ));
        let uncertain = self.parts.replica_server.take_uncertain(&name);
        let config = PrimaryConfig {
            volume_name: name,
            epoch: record.epoch,
            node: NodeId(*me.as_bytes()),
            resync_bytes_per_s: self.parts.resync_bytes_per_s,
            reconnect_interval: Duration::from_secs(1),
            uncertain,
        };
        let volume = Arc::new(ReplicatedVolume::start(
            engine.clone(),
            local.id,
            config,
            members,
            authority,
        )?);
        tracing::info!(volume = %record.uuid, epoch = record.epoch, "serving as primary");
        if let Some(served) = self.served.get_mut(&record.uuid) {
            served.namespace.serve(Some(volume.clone()));
            served.term = Some(Term {
                epoch: record.epoch,
                volume,
            });
        }
        Ok(())
    }

    /// Points the term's members at the replication addresses their nodes
    /// publish now: a node restarted on another port is reached there.
    fn follow_member_endpoints(&self, record: &VolumeRecord, view: &View) {
        let me = self.me();
        let Some(term) = self.served.get(&record.uuid).and_then(|s| s.term.as_ref()) else {
            return;
        };
        for node in record.placement.iter().filter(|n| **n != me) {
            if let Some(addr) = view.replication.get(node) {
                term.volume.set_member_addr(NodeId(*node.as_bytes()), *addr);
            }
        }
    }

    /// Rebuilds on another node each replica whose node has been down for
    /// `replace_after` (it is out of the in-sync set by then).
    fn replace_lost_members(&mut self, record: &VolumeRecord, view: &View) -> anyhow::Result<()> {
        let me = self.me();
        let Some(term) = self.served.get(&record.uuid).and_then(|s| s.term.as_ref()) else {
            return Ok(());
        };
        let term_volume = term.volume.clone();
        let detached: BTreeSet<Uuid> = term_volume
            .status()
            .members
            .iter()
            .filter(|m| m.state == MemberState::Detached)
            .map(|m| Uuid::from_bytes(m.node.0))
            .collect();
        for lost in record.placement.iter().copied().filter(|n| *n != me) {
            let long_down = self
                .down_since
                .get(&lost)
                .is_some_and(|t| t.elapsed() >= self.parts.replace_after);
            if !long_down || record.is_in_sync(lost) || !detached.contains(&lost) {
                continue;
            }
            let Some(new) = replacement(&view.nodes, record, lost) else {
                continue;
            };
            let epoch = record.epoch;
            self.swap(record.uuid, |r| {
                if r.primary != me || r.epoch != epoch || r.is_in_sync(lost) {
                    return Err(Deposed);
                }
                let Some(slot) = r.placement.iter_mut().find(|n| **n == lost) else {
                    return Err(Deposed);
                };
                *slot = new;
                r.left_in_sync_at.remove(&lost);
                Ok(())
            })?;
            let addr = view
                .replication
                .get(&new)
                .copied()
                .unwrap_or_else(|| NO_ENDPOINT.parse().expect("a literal address"));
            self.forget_holder(record.uuid, lost, view);
            let replaced = term_volume.replace_member(
                NodeId(*lost.as_bytes()),
                MemberSpec {
                    node: NodeId(*new.as_bytes()),
                    addr,
                    in_sync: false,
                    left_at_this_term: false,
                },
                self.snapshots_to_seed(record.uuid, view),
            );
            tracing::warn!(volume = %record.uuid, %lost, %new, replaced, "rebuilding a replica lost for good on another node");
            if !replaced {
                // The record moved on without the term: restart the term so
                // it serves the record's placement.
                self.stop_term(record.uuid);
            }
        }
        Ok(())
    }

    /// The volume's snapshots this node holds, by engine name, oldest first:
    /// what a replica rebuilt on a new node is given before the volume.
    fn snapshots_to_seed(&self, volume: Uuid, view: &View) -> Vec<String> {
        let me = self.me();
        let engine = &self.parts.engine;
        let mut held: Vec<(engine::VolumeId, String)> = view
            .snapshots
            .iter()
            .filter(|s| s.volume == volume && s.state == SnapshotState::Ready)
            .filter(|s| s.holders.contains(&me))
            .filter_map(|s| {
                let name = s.uuid.to_string();
                let local = engine.volume_by_name(&name)?;
                (local.kind == VolumeKind::Snapshot).then_some((local.id, name))
            })
            .collect();
        held.sort();
        held.into_iter().map(|(_, name)| name).collect()
    }

    /// `lost` no longer holds the volume's snapshots (its replica is being
    /// rebuilt elsewhere): it leaves their holder lists.
    fn forget_holder(&self, volume: Uuid, lost: Uuid, view: &View) {
        for snapshot in view.snapshots.iter().filter(|s| s.volume == volume) {
            if !snapshot.holders.contains(&lost) {
                continue;
            }
            let result =
                self.parts
                    .runtime
                    .block_on(self.parts.snapshots.update(snapshot.uuid, |r| {
                        r.holders.retain(|n| *n != lost);
                        Ok::<(), ()>(())
                    }));
            if let Err(err) = result {
                tracing::warn!(snapshot = %snapshot.uuid, %lost, error = %err, "cannot take a lost node out of a snapshot's holders");
            }
        }
    }

    /// Publishes how far the members that lack blocks have caught up (the
    /// API's `rebuildProgress`), when it changed.
    fn publish_progress(&mut self, volume: Uuid) -> anyhow::Result<()> {
        let Some(served) = self.served.get_mut(&volume) else {
            return Ok(());
        };
        let Some(term) = &served.term else {
            return Ok(());
        };
        let status = term.volume.status();
        let catching_up: Vec<_> = status
            .members
            .iter()
            .filter(|m| m.missed_blocks > 0 && m.resync_total_blocks > 0)
            .collect();
        let progress = (!catching_up.is_empty()).then(|| {
            let total: u64 = catching_up.iter().map(|m| m.resync_total_blocks).sum();
            let missed: u64 = catching_up.iter().map(|m| m.missed_blocks).sum();
            Progress {
                done_blocks: total.saturating_sub(missed),
                total_blocks: total,
            }
        });
        if progress != served.progress {
            self.parts
                .runtime
                .block_on(self.parts.store.set_progress(volume, progress))?;
            served.progress = progress;
        }
        Ok(())
    }

    /// Grows the volume through its term when the record asks for more.
    fn grow_term(&mut self, record: &VolumeRecord) -> anyhow::Result<()> {
        let size = self
            .parts
            .engine
            .volume_by_name(&record.uuid.to_string())
            .map_or(0, |v| v.size_bytes);
        if size >= record.size_bytes {
            return Ok(());
        }
        if let Some(term) = self.served.get(&record.uuid).and_then(|s| s.term.as_ref()) {
            term.volume.resize(record.size_bytes)?;
        }
        if let Some(nsid) = self.served.get(&record.uuid).and_then(|s| s.nsid) {
            let _ = self.parts.subsystem.namespace_resized(nsid);
        }
        Ok(())
    }

    /// Stops this node's term of `volume`, if it has one: hosts are sent
    /// elsewhere first, then waiting changes fail.
    fn stop_term(&mut self, volume: Uuid) {
        let Some(served) = self.served.get_mut(&volume) else {
            return;
        };
        let Some(term) = served.term.take() else {
            return;
        };
        if let Some(nsid) = served.nsid {
            let _ = self
                .parts
                .subsystem
                .set_ana_state(nsid, AnaState::Inaccessible);
            served.ana = AnaState::Inaccessible;
        }
        served.namespace.serve(None);
        tracing::warn!(%volume, epoch = term.epoch, "no longer primary");
        drop(term);
    }

    /// Exposes the namespace under the record's nsid and ACL with the ANA
    /// state this node's role gives it.
    fn expose(&mut self, record: &VolumeRecord) -> anyhow::Result<()> {
        let subsystem = self.parts.subsystem.clone();
        let Some(served) = self.served.get_mut(&record.uuid) else {
            return Ok(());
        };
        let Some(nsid) = record.nsid else {
            return Ok(());
        };
        // Optimized once the term may serve: not before its members agree on
        // what the old term left uncertain.
        let state = if served.term.as_ref().is_some_and(|t| t.volume.may_serve()) {
            AnaState::Optimized
        } else {
            AnaState::Inaccessible
        };
        let acl = match &record.acl {
            None => HostAcl::AnyHost,
            Some(hosts) => HostAcl::hosts(hosts.iter().cloned()),
        };
        let addresses = match &record.ip_acl {
            None => AddressAcl::AnyAddress,
            Some(networks) => crate::adapters::address_acl(networks)?,
        };
        let lists = (record.acl.clone(), record.ip_acl.clone());
        let limits = crate::adapters::target_rate_limits(&record.rate_limits.unwrap_or_default());
        match served.nsid {
            None => {
                let metered = MeteredNamespace::new(
                    served.namespace.clone(),
                    self.parts.io_metrics.volume(record.uuid),
                );
                subsystem.add_namespace(
                    nsid,
                    Arc::new(metered),
                    NamespaceOptions::new(acl)
                        .with_addresses(addresses)
                        .with_ana_state(state)
                        .with_rate_limits(limits),
                )?;
                served.nsid = Some(nsid);
                served.acl = lists;
                served.rate_limits = limits;
                served.ana = state;
                tracing::info!(volume = %record.uuid, nsid, ?state, "namespace exposed");
                let me = self.parts.membership.record().uuid;
                self.parts.runtime.block_on(self.parts.store.mark_exposed(
                    record.uuid,
                    me,
                    nsid,
                ))?;
            }
            Some(current) => {
                if served.acl != lists {
                    subsystem.set_namespace_access(current, acl, addresses)?;
                    served.acl = lists;
                }
                if served.rate_limits != limits {
                    subsystem.set_namespace_rate_limits(current, limits)?;
                    served.rate_limits = limits;
                }
                if served.ana != state {
                    subsystem.set_ana_state(current, state)?;
                    served.ana = state;
                    tracing::info!(volume = %record.uuid, nsid = current, ?state, "ANA state changed");
                }
            }
        }
        Ok(())
    }

    /// The volume was deleted or moved away: stop serving it and drop the
    /// local replica.
    fn remove(&mut self, volume: Uuid) {
        self.stop_term(volume);
        let Some(served) = self.served.remove(&volume) else {
            return;
        };
        if let Some(nsid) = served.nsid {
            let _ = self.parts.subsystem.remove_namespace(nsid);
        }
        self.parts.io_metrics.remove(volume);
        let name = volume.to_string();
        self.parts.replica_server.close_stream(&name);
        if let Some(info) = self.parts.engine.volume_by_name(&name) {
            match self.parts.engine.delete_volume(info.id) {
                Ok(()) => tracing::info!(%volume, "local replica deleted"),
                Err(err) => {
                    tracing::warn!(%volume, error = %err, "cannot delete the local replica")
                }
            }
        }
        let me = self.me();
        let _ = self
            .parts
            .runtime
            .block_on(self.parts.store.unmark_replica(volume, me));
    }

    fn stop_all(&mut self) {
        let volumes: Vec<Uuid> = self.served.keys().copied().collect();
        for volume in volumes {
            self.stop_term(volume);
        }
    }
}
