//! An in-memory [`Control`] for this crate's tests (and, with the `test-support`
//! feature, for other crates' tests). It keeps volumes, snapshots, ACLs and clone
//! jobs in maps and offers hooks to hold deletes and clone jobs so tests can
//! observe the intermediate `Deleting` and running states deterministically.
//! Its scrub finds whatever damage a test planted
//! ([`MemoryControl::set_scrub_findings`]) and finishes a pass at the first
//! status read, unless held ([`MemoryControl::hold_scrub`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::{
    AddressAcl, CloneJobId, CloneJobState, CloneJobStatus, Control, ControlError, EngineSnapshot,
    EngineVolume, HostAcl, NodeInfo, NodeStatus, PoolStats, ScrubDamage, ScrubReport, VolumeAccess,
    VolumeRateLimits, VolumeSpec, VolumeUsage,
};

/// The largest namespace id by default, as the NVMe/TCP target's.
const NSID_MAX_DEFAULT: u32 = 1024;
/// The longest a held delete waits for release, so a forgotten hold cannot hang a test.
const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// Blocks a pass of the memory scrub checks.
const SCRUB_PASS_BLOCKS: u64 = 4096;
/// The pace the memory scrub reports (8 MiB/s, keeld's default).
const SCRUB_BYTES_PER_S: u64 = 8 << 20;

#[derive(Debug, Clone)]
struct MemVolume {
    spec: VolumeSpec,
    engine_id: u64,
    access: VolumeAccess,
    rate_limits: VolumeRateLimits,
    nsid: Option<u32>,
    written_bytes: u64,
}

#[derive(Debug, Clone)]
struct MemJob {
    target: Uuid,
    status: CloneJobStatus,
}

#[derive(Debug, Default)]
struct State {
    volumes: BTreeMap<Uuid, MemVolume>,
    snapshots: BTreeMap<Uuid, (Uuid, u64)>,
    jobs: HashMap<CloneJobId, MemJob>,
    /// Engine ids, like the engine's: never reused.
    next_engine_id: u64,
    next_job: u64,
    hold_deletes: bool,
    hold_creates: bool,
    hold_clone_jobs: bool,
    fail_next: Option<ControlError>,
    clone_unsupported: bool,
    scrub: ScrubReport,
    /// What the next completed pass reports: damaged maps and metadata copies.
    scrub_findings: (Vec<ScrubDamage>, u32),
    hold_scrub: bool,
}

/// The in-memory engine and target. Thread-safe; share it as `Arc<MemoryControl>`.
#[derive(Debug)]
pub struct MemoryControl {
    state: Mutex<State>,
    released: Condvar,
    capacity_bytes: u64,
    nsid_max: u32,
    node: NodeInfo,
    /// Set by [`MemoryControl::with_cluster`]: the cluster's identity and nodes.
    cluster: Option<(Uuid, Vec<NodeStatus>)>,
}

impl Default for MemoryControl {
    fn default() -> Self {
        Self::new(1 << 40)
    }
}

impl MemoryControl {
    /// A control whose pool holds `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            state: Mutex::new(State {
                next_engine_id: 1,
                next_job: 1,
                scrub: ScrubReport {
                    bytes_per_s: SCRUB_BYTES_PER_S,
                    ..ScrubReport::default()
                },
                ..State::default()
            }),
            released: Condvar::new(),
            capacity_bytes,
            nsid_max: NSID_MAX_DEFAULT,
            node: NodeInfo {
                uuid: Uuid::from_u128(0x6b65_656c_0000_0000_0000_0000_0000_0001),
                name: "memory-node".to_owned(),
                nvme_endpoint: "127.0.0.1:4420".to_owned(),
                discovery_endpoint: "127.0.0.1:8009".to_owned(),
            },
            cluster: None,
        }
    }

    /// A control that reports belonging to cluster `uuid` with these nodes
    /// (as a clustered node's port does).
    pub fn with_cluster(mut self, uuid: Uuid, nodes: Vec<NodeStatus>) -> Self {
        self.cluster = Some((uuid, nodes));
        self
    }

    /// A control whose target accepts namespace ids up to `nsid_max` only.
    pub fn with_nsid_max(mut self, nsid_max: u32) -> Self {
        self.nsid_max = nsid_max;
        self
    }

    /// The nsid the target exposes `volume` under, if it is exposed.
    pub fn exposed_nsid(&self, volume: Uuid) -> Option<u32> {
        self.state.lock().volumes.get(&volume).and_then(|v| v.nsid)
    }

    /// Forgets every namespace and rate limit, as the target of a restarted
    /// daemon has none until reconciliation exposes the volumes again.
    pub fn restart_target(&self) {
        for v in self.state.lock().volumes.values_mut() {
            v.nsid = None;
            v.rate_limits = VolumeRateLimits::UNLIMITED;
        }
    }

    /// While held, `delete_volume` blocks (up to 30 s) so tests can see `Deleting`.
    pub fn hold_deletes(&self, hold: bool) {
        self.state.lock().hold_deletes = hold;
        self.released.notify_all();
    }

    /// While held, `create_volume` and `create_clone` block (up to 30 s) so tests
    /// can see `Creating` and race other requests against it.
    pub fn hold_creates(&self, hold: bool) {
        self.state.lock().hold_creates = hold;
        self.released.notify_all();
    }

    /// While held, clone jobs make no progress so tests can see them running.
    pub fn hold_clone_jobs(&self, hold: bool) {
        self.state.lock().hold_clone_jobs = hold;
    }

    /// Makes thick clones answer `Unsupported`, as an engine without them would.
    pub fn disable_clone_jobs(&self) {
        self.state.lock().clone_unsupported = true;
    }

    /// Every scrub pass completed from now on finds `damaged` maps and
    /// `metadata_damaged` damaged metadata copies.
    pub fn set_scrub_findings(&self, damaged: Vec<ScrubDamage>, metadata_damaged: u32) {
        self.state.lock().scrub_findings = (damaged, metadata_damaged);
    }

    /// While held, a started scrub pass keeps running; released, it completes
    /// at the next status read.
    pub fn hold_scrub(&self, hold: bool) {
        self.state.lock().hold_scrub = hold;
    }

    /// The engine id of `volume`, if the engine holds it.
    pub fn engine_id(&self, volume: Uuid) -> Option<u64> {
        self.state.lock().volumes.get(&volume).map(|v| v.engine_id)
    }

    /// The next mutating call fails with `error`.
    pub fn fail_next(&self, error: ControlError) {
        self.state.lock().fail_next = Some(error);
    }

    /// Pretends a host wrote `bytes` to the volume (for usage statistics).
    pub fn record_write(&self, volume: Uuid, bytes: u64) {
        if let Some(v) = self.state.lock().volumes.get_mut(&volume) {
            v.written_bytes = v.written_bytes.saturating_add(bytes).min(v.spec.size_bytes);
        }
    }

    /// The host ACL the target currently enforces for `volume`.
    pub fn host_acl(&self, volume: Uuid) -> Option<HostAcl> {
        self.state
            .lock()
            .volumes
            .get(&volume)
            .map(|v| v.access.hosts.clone())
    }

    /// The address ACL the target currently enforces for `volume`.
    pub fn address_acl(&self, volume: Uuid) -> Option<AddressAcl> {
        self.state
            .lock()
            .volumes
            .get(&volume)
            .map(|v| v.access.addresses.clone())
    }

    /// The rate limits the target currently enforces for `volume`.
    pub fn rate_limits(&self, volume: Uuid) -> Option<VolumeRateLimits> {
        self.state
            .lock()
            .volumes
            .get(&volume)
            .map(|v| v.rate_limits)
    }

    /// Whether the engine holds `volume`.
    pub fn has_volume(&self, volume: Uuid) -> bool {
        self.state.lock().volumes.contains_key(&volume)
    }

    /// Whether the engine holds `snapshot`.
    pub fn has_snapshot(&self, snapshot: Uuid) -> bool {
        self.state.lock().snapshots.contains_key(&snapshot)
    }

    /// The engine's volume size, if it holds the volume.
    pub fn volume_size(&self, volume: Uuid) -> Option<u64> {
        self.state
            .lock()
            .volumes
            .get(&volume)
            .map(|v| v.spec.size_bytes)
    }

    fn wait_while(
        &self,
        state: &mut parking_lot::MutexGuard<'_, State>,
        held: impl Fn(&State) -> bool,
    ) {
        let deadline = std::time::Instant::now() + HOLD_TIMEOUT;
        while held(state) {
            if self.released.wait_until(state, deadline).timed_out() {
                break;
            }
        }
    }

    fn injected(state: &mut State) -> Result<(), ControlError> {
        match state.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn provisioned(state: &State) -> u64 {
        state.volumes.values().map(|v| v.spec.size_bytes).sum()
    }

    fn insert_volume(
        &self,
        state: &mut State,
        spec: &VolumeSpec,
        written_bytes: u64,
    ) -> Result<(), ControlError> {
        if state.volumes.contains_key(&spec.uuid) {
            return Err(ControlError::AlreadyExists(spec.uuid));
        }
        if spec.size_bytes > self.capacity_bytes {
            return Err(ControlError::NoSpace);
        }
        let engine_id = state.next_engine_id;
        state.next_engine_id += 1;
        state.volumes.insert(
            spec.uuid,
            MemVolume {
                spec: spec.clone(),
                engine_id,
                access: VolumeAccess {
                    hosts: HostAcl::Hosts(Vec::new()),
                    addresses: AddressAcl::AllowAny,
                },
                rate_limits: VolumeRateLimits::UNLIMITED,
                nsid: None,
                written_bytes,
            },
        );
        Ok(())
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Control for MemoryControl {
    fn create_volume(&self, spec: &VolumeSpec) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        self.wait_while(&mut state, |s| s.hold_creates);
        Self::injected(&mut state)?;
        self.insert_volume(&mut state, spec, 0)
    }

    fn grow_volume(&self, volume: Uuid, size_bytes: u64) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        let v = state
            .volumes
            .get_mut(&volume)
            .ok_or(ControlError::NotFound(volume))?;
        if size_bytes < v.spec.size_bytes {
            return Err(ControlError::InvalidArgument(
                "a volume can only grow".to_owned(),
            ));
        }
        v.spec.size_bytes = size_bytes;
        Ok(())
    }

    fn delete_volume(&self, volume: Uuid) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        self.wait_while(&mut state, |s| s.hold_deletes);
        Self::injected(&mut state)?;
        state
            .volumes
            .remove(&volume)
            .map(|_| ())
            .ok_or(ControlError::NotFound(volume))
    }

    fn set_compression(&self, volume: Uuid, enabled: bool) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        let v = state
            .volumes
            .get_mut(&volume)
            .ok_or(ControlError::NotFound(volume))?;
        v.spec.compression = enabled;
        Ok(())
    }

    fn list_volumes(&self) -> Result<Vec<EngineVolume>, ControlError> {
        let state = self.state.lock();
        Ok(state
            .volumes
            .values()
            .map(|v| EngineVolume {
                uuid: v.spec.uuid,
                size_bytes: v.spec.size_bytes,
                engine_id: v.engine_id,
            })
            .collect())
    }

    fn list_snapshots(&self) -> Result<Vec<EngineSnapshot>, ControlError> {
        let state = self.state.lock();
        Ok(state
            .snapshots
            .iter()
            .map(|(&uuid, &(_, size_bytes))| EngineSnapshot { uuid, size_bytes })
            .collect())
    }

    fn volume_usage(&self, volume: Uuid) -> Result<VolumeUsage, ControlError> {
        let state = self.state.lock();
        let v = state
            .volumes
            .get(&volume)
            .ok_or(ControlError::NotFound(volume))?;
        let physical = if v.spec.compression {
            v.written_bytes / 2
        } else {
            v.written_bytes
        };
        let damaged_blocks = state
            .scrub
            .damaged
            .iter()
            .filter(|d| d.uuid == Some(volume))
            .map(|d| d.damaged_blocks)
            .sum();
        Ok(VolumeUsage {
            logical_used_bytes: v.written_bytes,
            physical_used_bytes: physical,
            damaged_blocks,
            qos_delayed_commands: 0,
            qos_delay_ms: 0,
            host_written_bytes: 0,
            device_written_bytes: 0,
        })
    }

    fn pool_stats(&self) -> Result<PoolStats, ControlError> {
        let state = self.state.lock();
        let used: u64 = state.volumes.values().map(|v| v.written_bytes).sum();
        Ok(PoolStats {
            capacity_bytes: self.capacity_bytes,
            used_bytes: used,
            free_bytes: self.capacity_bytes.saturating_sub(used),
            provisioned_bytes: Self::provisioned(&state),
            host_written_bytes: 0,
            device_written_bytes: 0,
            data_capacity_bytes: 0,
        })
    }

    fn create_snapshot(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        let size = state
            .volumes
            .get(&volume)
            .ok_or(ControlError::NotFound(volume))?
            .spec
            .size_bytes;
        if state.snapshots.contains_key(&snapshot) {
            return Err(ControlError::AlreadyExists(snapshot));
        }
        state.snapshots.insert(snapshot, (volume, size));
        Ok(())
    }

    fn delete_snapshot(&self, snapshot: Uuid) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        state
            .snapshots
            .remove(&snapshot)
            .map(|_| ())
            .ok_or(ControlError::NotFound(snapshot))
    }

    fn create_clone(&self, snapshot: Uuid, clone: &VolumeSpec) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        self.wait_while(&mut state, |s| s.hold_creates);
        Self::injected(&mut state)?;
        let (_, size) = *state
            .snapshots
            .get(&snapshot)
            .ok_or(ControlError::NotFound(snapshot))?;
        if clone.size_bytes < size {
            return Err(ControlError::InvalidArgument(
                "a clone cannot be smaller than its snapshot".to_owned(),
            ));
        }
        self.insert_volume(&mut state, clone, 0)
    }

    fn rollback_volume(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        let (source, _) = *state
            .snapshots
            .get(&snapshot)
            .ok_or(ControlError::NotFound(snapshot))?;
        if source != volume {
            return Err(ControlError::InvalidArgument(
                "the snapshot belongs to another volume".to_owned(),
            ));
        }
        if !state.volumes.contains_key(&volume) {
            return Err(ControlError::NotFound(volume));
        }
        Ok(())
    }

    fn start_clone_job(
        &self,
        snapshot: Uuid,
        target: &VolumeSpec,
        _verify: bool,
    ) -> Result<CloneJobId, ControlError> {
        let mut state = self.state.lock();
        if state.clone_unsupported {
            return Err(ControlError::Unsupported("thick clone".to_owned()));
        }
        Self::injected(&mut state)?;
        let (_, size) = *state
            .snapshots
            .get(&snapshot)
            .ok_or(ControlError::NotFound(snapshot))?;
        self.insert_volume(&mut state, target, 0)?;
        let id = CloneJobId(state.next_job);
        state.next_job += 1;
        let status = CloneJobStatus {
            state: CloneJobState::Running,
            copied_bytes: 0,
            total_bytes: size,
        };
        state.jobs.insert(
            id,
            MemJob {
                target: target.uuid,
                status,
            },
        );
        Ok(id)
    }

    fn clone_job_status(&self, job: CloneJobId) -> Result<CloneJobStatus, ControlError> {
        let mut state = self.state.lock();
        let held = state.hold_clone_jobs;
        let j = state
            .jobs
            .get_mut(&job)
            .ok_or_else(|| ControlError::InvalidArgument(format!("no clone job {job}")))?;
        if !held && j.status.state == CloneJobState::Running {
            // Each poll copies a quarter of the data, so a job completes in a few polls.
            let step = (j.status.total_bytes / 4).max(1);
            j.status.copied_bytes = j
                .status
                .copied_bytes
                .saturating_add(step)
                .min(j.status.total_bytes);
            if j.status.copied_bytes == j.status.total_bytes {
                j.status.state = CloneJobState::Completed;
            }
        }
        let status = j.status.clone();
        let target = j.target;
        if status.state == CloneJobState::Completed {
            if let Some(v) = state.volumes.get_mut(&target) {
                v.written_bytes = status.total_bytes.min(v.spec.size_bytes);
            }
        }
        Ok(status)
    }

    fn cancel_clone_job(&self, job: CloneJobId) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        let j = state
            .jobs
            .get_mut(&job)
            .ok_or_else(|| ControlError::InvalidArgument(format!("no clone job {job}")))?;
        if j.status.state == CloneJobState::Running {
            j.status.state = CloneJobState::Cancelled;
        }
        Ok(())
    }

    fn start_scrub(&self) -> Result<bool, ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        if state.scrub.running {
            return Ok(false);
        }
        let scrub = &mut state.scrub;
        scrub.running = true;
        scrub.blocks_checked = 0;
        scrub.blocks_total = SCRUB_PASS_BLOCKS;
        scrub.last_started_unix_s = Some(now_s());
        Ok(true)
    }

    fn scrub_status(&self) -> Result<ScrubReport, ControlError> {
        let mut state = self.state.lock();
        if state.scrub.running && !state.hold_scrub {
            let (damaged, metadata_damaged) = state.scrub_findings.clone();
            let scrub = &mut state.scrub;
            scrub.running = false;
            scrub.blocks_checked = scrub.blocks_total;
            scrub.passes_completed += 1;
            scrub.damaged = damaged;
            scrub.metadata_damaged = metadata_damaged;
            scrub.last_finished_unix_s = Some(now_s());
        }
        Ok(state.scrub.clone())
    }

    fn set_access(&self, volume: Uuid, access: &VolumeAccess) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        let v = state
            .volumes
            .get_mut(&volume)
            .ok_or(ControlError::NotFound(volume))?;
        v.access = access.clone();
        Ok(())
    }

    fn set_rate_limits(&self, volume: Uuid, limits: &VolumeRateLimits) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        state
            .volumes
            .get_mut(&volume)
            .ok_or(ControlError::NotFound(volume))?
            .rate_limits = *limits;
        Ok(())
    }

    fn expose_volume(&self, volume: Uuid, nsid: u32) -> Result<(), ControlError> {
        let mut state = self.state.lock();
        Self::injected(&mut state)?;
        if nsid == 0 || nsid > self.nsid_max {
            return Err(ControlError::InvalidArgument(format!(
                "namespace id {nsid} is outside 1..={}",
                self.nsid_max
            )));
        }
        if let Some(other) = state
            .volumes
            .values()
            .find(|v| v.nsid == Some(nsid) && v.spec.uuid != volume)
        {
            return Err(ControlError::Internal(format!(
                "namespace id {nsid} is already volume {}",
                other.spec.uuid
            )));
        }
        let v = state
            .volumes
            .get_mut(&volume)
            .ok_or(ControlError::NotFound(volume))?;
        match v.nsid {
            Some(current) if current != nsid => Err(ControlError::Internal(format!(
                "volume {volume} is already exposed as namespace {current}"
            ))),
            _ => {
                v.nsid = Some(nsid);
                Ok(())
            }
        }
    }

    fn nsid_max(&self) -> u32 {
        self.nsid_max
    }

    fn subsystem_nqn(&self) -> String {
        "nqn.2016-01.io.keel:subsystem:memory".to_owned()
    }

    fn node_info(&self) -> NodeInfo {
        self.node.clone()
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>, ControlError> {
        match &self.cluster {
            Some((_, nodes)) => Ok(nodes.clone()),
            None => super::single_node(self),
        }
    }

    fn cluster_uuid(&self) -> Option<Uuid> {
        self.cluster.as_ref().map(|(uuid, _)| *uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size_bytes: u64) -> VolumeSpec {
        VolumeSpec {
            uuid: Uuid::new_v4(),
            size_bytes,
            sector_size_bytes: 4096,
            compression: false,
            replica_count: 1,
        }
    }

    #[test]
    fn rejects_duplicate_volume_and_reports_missing_delete() {
        let c = MemoryControl::default();
        let s = spec(1 << 20);
        c.create_volume(&s).unwrap();
        assert_eq!(
            c.create_volume(&s),
            Err(ControlError::AlreadyExists(s.uuid))
        );
        c.delete_volume(s.uuid).unwrap();
        assert_eq!(c.delete_volume(s.uuid), Err(ControlError::NotFound(s.uuid)));
    }

    #[test]
    fn clone_job_completes_within_four_polls() {
        let c = MemoryControl::default();
        let v = spec(1 << 20);
        c.create_volume(&v).unwrap();
        let snap = Uuid::new_v4();
        c.create_snapshot(v.uuid, snap).unwrap();
        let job = c.start_clone_job(snap, &spec(1 << 20), false).unwrap();
        let mut last = None;
        for _ in 0..4 {
            last = Some(c.clone_job_status(job).unwrap());
        }
        assert_eq!(last.map(|s| s.state), Some(CloneJobState::Completed));
    }

    #[test]
    fn a_scrub_pass_runs_while_held_and_then_reports_the_planted_damage() {
        let c = MemoryControl::default();
        let found = vec![ScrubDamage::new(3, None, &[1, 2])];
        c.set_scrub_findings(found.clone(), 1);
        c.hold_scrub(true);
        assert_eq!(c.start_scrub(), Ok(true));
        assert_eq!(c.start_scrub(), Ok(false), "one pass at a time");
        let running = c.scrub_status().unwrap();
        assert!(running.running);
        assert!(running.damaged.is_empty(), "findings wait for the pass");
        c.hold_scrub(false);
        let done = c.scrub_status().unwrap();
        assert!(!done.running);
        assert_eq!(done.passes_completed, 1);
        assert_eq!(done.damaged, found);
        assert_eq!(done.metadata_damaged, 1);
        assert!(done.last_finished_unix_s >= done.last_started_unix_s);
    }

    #[test]
    fn expose_is_idempotent_and_one_nsid_names_one_volume() {
        let c = MemoryControl::default().with_nsid_max(4);
        let v = spec(1 << 20);
        let w = spec(1 << 20);
        c.create_volume(&v).unwrap();
        c.create_volume(&w).unwrap();
        c.expose_volume(v.uuid, 3).unwrap();
        c.expose_volume(v.uuid, 3).unwrap();
        assert_eq!(c.exposed_nsid(v.uuid), Some(3));
        assert!(c.expose_volume(w.uuid, 3).is_err());
        assert!(c.expose_volume(w.uuid, 5).is_err());
        assert!(c.expose_volume(w.uuid, 0).is_err());
        c.expose_volume(w.uuid, 4).unwrap();
    }
}
