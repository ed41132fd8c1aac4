//! The domain service: projects, volumes, snapshots, clones and host ACLs, with
//! the documents' rules and state machine, over the [`Control`] port.
//!
//! One module per resource adds its operations to [`Service`]: `volumes`
//! (volumes and thin clones), `snapshots`; projects and the cluster view are
//! here.
//!
//! Concurrency: the catalog sits behind one mutex that is never held across a
//! call into the port. A create first records the resource as `Creating` under
//! the lock (so a concurrent create of the same name sees it and gets 409), calls
//! the engine without the lock, then records the outcome. Deletes are recorded as
//! `Deleting` and finished by the background worker (`worker.rs`), which also
//! drives workflows. Every catalog change is persisted before it becomes visible.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard};
use uuid::Uuid;

use super::catalog_store::{CatalogStore, FileCatalogStore};
use super::error::ServiceError;
use super::model::{Catalog, Label, ProjectRecord, ResourceState, VolumeRecord, CATALOG_VERSION};
use super::qos::{self, QosPolicyRef};
use super::rules;
use super::store::StoreError;
use crate::control::{AddressAcl, Control, ControlError, HostAcl, PoolStats, VolumeAccess};

mod attachments;
mod federation;
mod hosts;
mod projects;
mod snapshots;
mod transfers;
mod volumes;

pub use snapshots::NewSnapshot;
pub use volumes::{NewVolume, VolumeChanges, VolumeFilter, VolumeView};

/// Most volumes one list call returns (the documents' default and maximum).
pub const LIST_LIMIT_MAX: usize = 1000;

/// Tunables of the domain service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Most replicas the cluster can place (1 on a single node).
    pub max_replicas: u32,
    /// Most workflows running at once; more answer 429.
    pub max_running_workflows: usize,
    /// How often the worker polls running clone jobs.
    pub workflow_poll_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_replicas: 1,
            max_running_workflows: 8,
            workflow_poll_interval: Duration::from_millis(100),
        }
    }
}

/// Cluster-wide facts for `/api/v2/cluster`.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Cluster identity.
    pub uuid: Uuid,
    /// The subsystem NQN.
    pub subsystem_nqn: String,
    /// Most replicas the cluster can place.
    pub max_replicas: u32,
    /// Pool accounting.
    pub pool: PoolStats,
    /// Number of volumes.
    pub volume_count: usize,
    /// Number of snapshots.
    pub snapshot_count: usize,
}

/// Why the service could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The catalog could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog was written by an incompatible version.
    #[error("catalog format version {found} is not supported (expected {CATALOG_VERSION})")]
    Version {
        /// The version on disk.
        found: u32,
    },
    /// The engine could not list its volumes for reconciliation.
    #[error("reconciliation with the engine failed: {0}")]
    Control(#[from] ControlError),
    /// The worker thread could not start.
    #[error("could not start the background worker: {0}")]
    Worker(#[source] std::io::Error),
}

pub(super) struct Inner {
    pub(super) control: Arc<dyn Control>,
    /// The target's largest namespace id (`Control::nsid_max`), read once.
    pub(super) nsid_max: u32,
    pub(super) store: Arc<dyn CatalogStore>,
    /// The catalog as last read or written; see [`Inner::catalog`].
    cached: Mutex<Catalog>,
    /// The store's version of `catalog`, changed only under `catalog`'s lock.
    version: AtomicU64,
    pub(super) config: ServiceConfig,
    pub(super) wake: Condvar,
    pub(super) wake_flag: Mutex<bool>,
    /// Notified (with `cached`'s lock) after every change this node commits.
    committed: Condvar,
    pub(super) shutdown: AtomicBool,
}

/// The domain service. Cheap to share behind `Arc`; every method blocks (call
/// it from `spawn_blocking` in async code).
pub struct Service {
    pub(super) inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("catalog", &self.inner.store.describe())
            .finish_non_exhaustive()
    }
}

pub(super) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A copy of `record` with the name of its QoS policy in `catalog`.
fn named_policy(catalog: &Catalog, record: &VolumeRecord) -> (VolumeRecord, Option<String>) {
    let name = record
        .qos_policy
        .and_then(|p| catalog.qos_policies.get(&p))
        .map(|p| p.name.clone());
    (record.clone(), name)
}

/// Who may see a volume, from its catalog `acl` and `ipAcl` values.
pub fn volume_access(acl: &[String], ip_acl: &[String]) -> VolumeAccess {
    VolumeAccess {
        hosts: host_acl(acl),
        addresses: address_acl(ip_acl),
    }
}

/// The address ACL for catalog `ipAcl` values: `ALLOW_ANY` (and no values
/// at all, as catalogs written before the IP ACL was enforced hold) admits
/// every address, `ALLOW_NONE` none.
pub fn address_acl(values: &[String]) -> AddressAcl {
    if values.is_empty() || values.iter().any(|v| v == rules::ALLOW_ANY) {
        AddressAcl::AllowAny
    } else {
        AddressAcl::Networks(
            values
                .iter()
                .filter(|v| *v != rules::ALLOW_NONE)
                .cloned()
                .collect(),
        )
    }
}

/// The engine ACL for catalog ACL values.
pub fn host_acl(values: &[String]) -> HostAcl {
    if values.iter().any(|v| v == rules::ALLOW_ANY) {
        HostAcl::AllowAny
    } else {
        HostAcl::Hosts(
            values
                .iter()
                .filter(|v| *v != rules::ALLOW_NONE)
                .cloned()
                .collect(),
        )
    }
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

fn check_labels(labels: &[Label]) -> Result<(), ServiceError> {
    let pairs: Vec<(String, String)> = labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    rules::check_labels(&pairs).map_err(invalid)
}

/// Checks that `etag` (if any) matches `revision`; `*` matches anything.
pub fn check_etag(etag: Option<&str>, revision: u64) -> Result<(), ServiceError> {
    let Some(tag) = etag else { return Ok(()) };
    let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
    if tag == "*" || tag == revision.to_string() {
        Ok(())
    } else {
        Err(ServiceError::EtagMismatch {
            current: revision.to_string(),
        })
    }
}

impl Service {
    /// Opens (or creates) the catalog in `data_dir`, reconciles it with the
    /// engine, and starts the background worker.
    pub fn open(
        data_dir: &Path,
        control: Arc<dyn Control>,
        config: ServiceConfig,
    ) -> Result<Self, OpenError> {
        let store = Arc::new(FileCatalogStore::new(data_dir.join("catalog.json")));
        Self::open_with_store(store, control, config)
    }

    /// Opens (or creates) the catalog kept in `store` (shared by every node
    /// of a cluster), reconciles it with the engine, and starts the worker.
    pub fn open_with_store(
        store: Arc<dyn CatalogStore>,
        control: Arc<dyn Control>,
        config: ServiceConfig,
    ) -> Result<Self, OpenError> {
        let (catalog, version) = {
            let _lock = store.lock()?;
            match store.load_if_changed(0)? {
                Some((bytes, version)) => {
                    let c: Catalog = decode_catalog(store.as_ref(), &bytes)?;
                    if c.version != CATALOG_VERSION {
                        return Err(OpenError::Version { found: c.version });
                    }
                    (c, version)
                }
                None => {
                    let c = Catalog::new();
                    let version = store.save(&encode_catalog(&c))?;
                    (c, version)
                }
            }
        };
        let inner = Arc::new(Inner {
            nsid_max: control.nsid_max(),
            control,
            store,
            cached: Mutex::new(catalog),
            version: AtomicU64::new(version),
            config,
            wake: Condvar::new(),
            committed: Condvar::new(),
            wake_flag: Mutex::new(false),
            shutdown: AtomicBool::new(false),
        });
        inner.reconcile()?;
        let worker_inner = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("mgmt-api-worker".to_owned())
            .spawn(move || worker_inner.run_worker())
            .map_err(OpenError::Worker)?;
        Ok(Self {
            inner,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Stops the background worker (waits for its current step). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.notify();
        if let Some(handle) = self.worker.lock().take() {
            if handle.join().is_err() {
                tracing::error!("mgmt-api worker thread panicked");
            }
        }
    }

    /// The control port (for cluster and node information).
    pub fn control(&self) -> &Arc<dyn Control> {
        &self.inner.control
    }

    /// The service's configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The cluster identity: the cluster's when the node belongs to one, else
    /// the catalog's own.
    pub fn cluster_uuid(&self) -> Uuid {
        self.inner
            .control
            .cluster_uuid()
            .unwrap_or_else(|| self.inner.catalog().cluster_uuid)
    }

    /// Cluster information and pool statistics.
    pub fn cluster(&self) -> Result<ClusterView, ServiceError> {
        let pool = self.inner.control.pool_stats()?;
        let clustered = self.inner.control.cluster_uuid();
        let catalog = self.inner.catalog();
        Ok(ClusterView {
            uuid: clustered.unwrap_or(catalog.cluster_uuid),
            subsystem_nqn: self.inner.control.subsystem_nqn(),
            max_replicas: self.inner.config.max_replicas,
            pool,
            volume_count: catalog.volumes.len(),
            snapshot_count: catalog.snapshots.len(),
        })
    }

    /// Waits until none of `ids` (volumes or snapshots marked Deleting) is
    /// left in the catalog, for dialects whose deletes answer only once done;
    /// false if some are still there after `timeout`.
    pub fn await_removal(&self, ids: &[Uuid], timeout: std::time::Duration) -> bool {
        // Another node of a cluster changes the store without notifying
        // this one: its changes are read at least this often.
        const STORE_REREAD: std::time::Duration = std::time::Duration::from_millis(100);
        let deadline = std::time::Instant::now() + timeout;
        self.inner.notify();
        let mut c = self.inner.catalog();
        loop {
            if !ids
                .iter()
                .any(|id| c.volumes.contains_key(id) || c.snapshots.contains_key(id))
            {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            self.inner
                .committed
                .wait_for(&mut c, (deadline - now).min(STORE_REREAD));
            if let Err(err) = self.inner.refresh(&mut c) {
                tracing::warn!(%err, "waiting on the last known catalog");
            }
        }
    }

    // ---- projects -------------------------------------------------------

    /// Every project.
    pub fn projects(&self) -> Vec<ProjectRecord> {
        self.inner.catalog().projects.values().cloned().collect()
    }

    /// Whether `name` is a project.
    pub fn project_exists(&self, name: &str) -> bool {
        self.inner.catalog().projects.contains_key(name)
    }

    /// Fails with 404 unless `name` is a project.
    pub fn require_project(&self, name: &str) -> Result<(), ServiceError> {
        rules::check_name("projectName", name).map_err(invalid)?;
        if self.project_exists(name) {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "project",
                id: name.to_owned(),
            })
        }
    }

    /// Creates a project.
    /// `default_qos_policy` (a global policy: no project's policy can exist
    /// before the project) is what its new volumes get when they name none.
    pub fn create_project(
        &self,
        name: &str,
        description: &str,
        default_qos_policy: Option<&QosPolicyRef>,
    ) -> Result<ProjectRecord, ServiceError> {
        rules::check_name("name", name).map_err(invalid)?;
        rules::check_description(description).map_err(invalid)?;
        self.inner.commit(|c| {
            if c.projects.contains_key(name) {
                return Err(ServiceError::AlreadyExists {
                    what: "project",
                    name: name.to_owned(),
                });
            }
            let default_qos_policy = default_qos_policy
                .map(|r| qos::resolve(c, name, "defaultQosPolicy", r))
                .transpose()?;
            let p = ProjectRecord {
                name: name.to_owned(),
                description: description.to_owned(),
                default_qos_policy,
                quota: None,
            };
            c.projects.insert(name.to_owned(), p.clone());
            Ok(p)
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The catalog as stored (compact JSON).
fn encode_catalog(catalog: &Catalog) -> Vec<u8> {
    // INVARIANT: the catalog is plain structs, maps and strings, which
    // serde_json always encodes.
    serde_json::to_vec(catalog).expect("the catalog always encodes")
}

fn decode_catalog(store: &dyn CatalogStore, bytes: &[u8]) -> Result<Catalog, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        path: store.describe().into(),
        source,
    })
}

/// Fails unless `state` allows a user operation: Deleting/Failed answer 400,
/// Creating/Updating 503.
pub(super) fn require_stable(
    what: &'static str,
    id: Uuid,
    state: ResourceState,
) -> Result<(), ServiceError> {
    match state {
        ResourceState::Available => Ok(()),
        ResourceState::Creating | ResourceState::Updating => {
            Err(ServiceError::TemporaryState { what, id, state })
        }
        ResourceState::Deleting | ResourceState::Failed => {
            Err(ServiceError::InvalidState { what, id, state })
        }
    }
}

impl Inner {
    /// Applies `f` to a copy of the catalog, persists the copy if it changed, and
    /// only then makes it visible. On error nothing changes.
    ///
    /// The change runs under the store's lock on its newest catalog, so a
    /// change another node made meanwhile is neither lost nor overwritten.
    pub(super) fn commit<R>(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<R, ServiceError>,
    ) -> Result<R, ServiceError> {
        let _lock = self.store.lock()?;
        let mut guard = self.cached.lock();
        self.refresh(&mut guard)?;
        let mut next = guard.clone();
        let result = f(&mut next)?;
        if next != *guard {
            let version = self.store.save(&encode_catalog(&next))?;
            self.version.store(version, Ordering::Release);
            *guard = next;
            self.committed.notify_all();
        }
        Ok(result)
    }

    /// The catalog, first brought up to date with the store (another node
    /// of a cluster may have changed it). If the store cannot be read the
    /// last known catalog is served.
    pub(super) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        let mut guard = self.cached.lock();
        if let Err(err) = self.refresh(&mut guard) {
            tracing::warn!(%err, "serving the last known catalog");
        }
        guard
    }

    /// Replaces `guard` with the stored catalog if the store's changed.
    fn refresh(&self, guard: &mut Catalog) -> Result<(), ServiceError> {
        let known = self.version.load(Ordering::Acquire);
        if let Some((bytes, version)) = self.store.load_if_changed(known)? {
            *guard = decode_catalog(self.store.as_ref(), &bytes)?;
            self.version.store(version, Ordering::Release);
        }
        Ok(())
    }

    /// The nsid a new volume record in `catalog` takes (see `nsids`).
    pub(super) fn reserve_nsid(&self, catalog: &Catalog) -> Result<u32, ServiceError> {
        super::nsids::lowest_free(catalog, self.nsid_max)
            .ok_or(ServiceError::NamespaceIdsExhausted { max: self.nsid_max })
    }

    /// Wakes the worker.
    pub(super) fn notify(&self) {
        *self.wake_flag.lock() = true;
        self.wake.notify_all();
    }

    /// Undoes a failed create: removes the engine volume if any, and the record;
    /// marks the record Failed if the engine volume cannot be removed.
    pub(super) fn abandon_volume(&self, uuid: Uuid, cause: &ControlError) {
        tracing::warn!(%uuid, error = %cause, "volume create failed; rolling back");
        let cleanup = match self.control.delete_volume(uuid) {
            Ok(()) | Err(ControlError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = self.commit(|c| {
            match &cleanup {
                Ok(()) => {
                    c.remove_volume(&uuid);
                }
                Err(e) => {
                    if let Some(v) = c.volumes.get_mut(&uuid) {
                        v.state = ResourceState::Failed;
                        v.failure = Some(format!("create failed: {cause}; cleanup failed: {e}"));
                        v.revision = v.revision.wrapping_add(1);
                    }
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::memory::MemoryControl;

    fn open(dir: &Path, control: &Arc<MemoryControl>) -> Service {
        Service::open(dir, control.clone(), ServiceConfig::default()).unwrap()
    }

    fn new_volume(name: &str) -> NewVolume {
        NewVolume {
            name: name.to_owned(),
            project: "default".to_owned(),
            size_bytes: Some(1 << 20),
            ..NewVolume::default()
        }
    }

    #[test]
    fn a_failed_persist_changes_nothing_and_fences_the_catalog() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(&dir, &control);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            service.create_project("p1", "", None),
            Err(ServiceError::Store(StoreError::Io { .. }))
        ));
        assert_eq!(
            service.projects().len(),
            1,
            "the failed change stayed invisible"
        );
        std::fs::create_dir(&dir).unwrap();
        assert!(matches!(
            service.create_project("p1", "", None),
            Err(ServiceError::Store(StoreError::Fenced(_)))
        ));
        assert!(matches!(
            service.create_volume(new_volume("v")),
            Err(ServiceError::Store(StoreError::Fenced(_)))
        ));
        assert!(
            control.list_volumes().unwrap().is_empty(),
            "no engine volume without a catalog record"
        );
    }

    #[test]
    fn a_volume_the_engine_lost_is_failed_after_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let uuid = {
            let service = open(tmp.path(), &control);
            service.create_volume(new_volume("v")).unwrap().record.uuid
        };
        control.delete_volume(uuid).unwrap();
        let service = open(tmp.path(), &control);
        let v = service.volume(uuid).unwrap().record;
        assert_eq!(v.state, ResourceState::Failed);
        assert!(v.failure.is_some());
        // A Failed volume may still be deleted.
        service.delete_volume(uuid, None).unwrap();
    }

    #[test]
    fn a_failed_engine_update_leaves_the_volume_available_and_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(tmp.path(), &control);
        let before = service.create_volume(new_volume("v")).unwrap().record;
        control.fail_next(ControlError::Internal("device gone".to_owned()));
        let changes = VolumeChanges {
            size_bytes: Some(2 << 20),
            ..VolumeChanges::default()
        };
        assert!(matches!(
            service.update_volume(before.uuid, changes, None),
            Err(ServiceError::Control(_))
        ));
        let after = service.volume(before.uuid).unwrap().record;
        assert_eq!(after.state, ResourceState::Available);
        assert_eq!(after.size_bytes, before.size_bytes);
    }

    fn revision(service: &Service, uuid: Uuid) -> u64 {
        service.volume(uuid).unwrap().record.revision
    }

    #[test]
    fn refused_or_empty_updates_keep_the_etag_and_successful_ones_raise_it_once() {
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(tmp.path(), &control);
        let uuid = service.create_volume(new_volume("v")).unwrap().record.uuid;
        let r0 = revision(&service, uuid);
        let refused = [
            VolumeChanges {
                size_bytes: Some(1 << 19),
                ..VolumeChanges::default()
            },
            VolumeChanges {
                size_bytes: Some((2 << 20) + 1),
                ..VolumeChanges::default()
            },
            VolumeChanges {
                acl: Some(vec!["not-an-nqn".to_owned()]),
                ..VolumeChanges::default()
            },
            VolumeChanges {
                qos_policy: Some(QosPolicyRef::Name("no-such-policy".to_owned())),
                ..VolumeChanges::default()
            },
        ];
        for changes in refused {
            let err = service.update_volume(uuid, changes.clone(), None);
            assert!(
                matches!(err, Err(ServiceError::InvalidArgument(_))),
                "{changes:?}: {err:?}"
            );
            assert_eq!(revision(&service, uuid), r0, "{changes:?} moved the ETag");
        }
        let grow = VolumeChanges {
            size_bytes: Some(2 << 20),
            ..VolumeChanges::default()
        };
        let stale = (r0 + 7).to_string();
        assert!(matches!(
            service.update_volume(uuid, grow.clone(), Some(&stale)),
            Err(ServiceError::EtagMismatch { .. })
        ));
        assert_eq!(revision(&service, uuid), r0);
        // Asking for what is already there changes nothing, ETag included.
        let same = VolumeChanges {
            size_bytes: Some(1 << 20),
            compression: Some(false),
            labels: Some(Vec::new()),
            ..VolumeChanges::default()
        };
        service.update_volume(uuid, same, None).unwrap();
        assert_eq!(revision(&service, uuid), r0);
        // A grow (engine work) and a labels change (catalog only) raise it once each.
        let grown = service
            .update_volume(uuid, grow, Some(&r0.to_string()))
            .unwrap();
        assert_eq!(grown.record.revision, r0 + 1);
        assert_eq!(grown.record.state, ResourceState::Available);
        let labels = VolumeChanges {
            labels: Some(vec![Label {
                key: "k".to_owned(),
                value: "v".to_owned(),
            }]),
            ..VolumeChanges::default()
        };
        let labelled = service.update_volume(uuid, labels, None).unwrap();
        assert_eq!(labelled.record.revision, r0 + 2);
        // Several fields at once still raise it once.
        let many = VolumeChanges {
            size_bytes: Some(4 << 20),
            compression: Some(true),
            acl: Some(vec![rules::ALLOW_ANY.to_owned()]),
            ip_acl: Some(vec!["10.0.0.0/8".to_owned()]),
            ..VolumeChanges::default()
        };
        assert_eq!(
            service
                .update_volume(uuid, many, None)
                .unwrap()
                .record
                .revision,
            r0 + 3
        );
        // An engine failure on the first step changes nothing, ETag included.
        control.fail_next(ControlError::Internal("device gone".to_owned()));
        let failed = VolumeChanges {
            size_bytes: Some(8 << 20),
            ..VolumeChanges::default()
        };
        assert!(matches!(
            service.update_volume(uuid, failed, None),
            Err(ServiceError::Control(_))
        ));
        let after = service.volume(uuid).unwrap().record;
        assert_eq!(after.revision, r0 + 3);
        assert_eq!(after.state, ResourceState::Available);
        assert_eq!(after.size_bytes, 4 << 20);
    }

    #[test]
    fn a_rollback_raises_the_etag_once_and_a_failed_one_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(tmp.path(), &control);
        let uuid = service.create_volume(new_volume("v")).unwrap().record.uuid;
        let snapshot = service
            .create_snapshot(NewSnapshot {
                name: "s".to_owned(),
                project: "default".to_owned(),
                source_volume: uuid,
                ..NewSnapshot::default()
            })
            .unwrap()
            .uuid;
        let r0 = revision(&service, uuid);
        control.fail_next(ControlError::Busy("cleaner".to_owned()));
        assert!(service.rollback_volume(uuid, snapshot).is_err());
        assert_eq!(revision(&service, uuid), r0);
        let rolled = service.rollback_volume(uuid, snapshot).unwrap().record;
        assert_eq!(
            (rolled.revision, rolled.state),
            (r0 + 1, ResourceState::Available)
        );
    }

    #[test]
    fn etags_match_exactly_quoted_or_wildcard() {
        assert!(check_etag(None, 3).is_ok());
        assert!(check_etag(Some("3"), 3).is_ok());
        assert!(check_etag(Some("\"3\""), 3).is_ok());
        assert!(check_etag(Some("*"), 3).is_ok());
        assert!(matches!(
            check_etag(Some("2"), 3),
            Err(ServiceError::EtagMismatch { .. })
        ));
    }

    #[test]
    fn a_project_quota_refuses_creates_and_grows_past_it_and_never_falls_below_use() {
        use crate::domain::model::ProjectQuota;
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(tmp.path(), &control);
        service.create_project("t1", "tenant", None).unwrap();
        let quota = |mib: u64| ProjectQuota {
            capacity_bytes: mib << 20,
            iops: 1000,
            bandwidth_bytes_per_s: 1 << 30,
        };
        service
            .set_project_quota("t1", None, Some(quota(3)))
            .unwrap();
        let in_t1 = |name: &str, mib: u64| NewVolume {
            project: "t1".to_owned(),
            size_bytes: Some(mib << 20),
            ..new_volume(name)
        };
        let a = service.create_volume(in_t1("a", 2)).unwrap().record.uuid;
        assert!(matches!(
            service.create_volume(in_t1("b", 2)),
            Err(ServiceError::QuotaExceeded(_))
        ));
        assert!(
            service.volume_by_name("t1", "b").is_err(),
            "nothing was created"
        );
        let grow = |mib: u64| VolumeChanges {
            size_bytes: Some(mib << 20),
            ..VolumeChanges::default()
        };
        assert!(matches!(
            service.update_volume(a, grow(4), None),
            Err(ServiceError::QuotaExceeded(_))
        ));
        assert_eq!(service.volume(a).unwrap().record.size_bytes, 2 << 20);
        service.update_volume(a, grow(3), None).unwrap();
        assert_eq!(service.project_provisioned("t1").capacity_bytes, 3 << 20);
        assert!(matches!(
            service.set_project_quota("t1", None, Some(quota(2))),
            Err(ServiceError::QuotaExceeded(_))
        ));
        // Other projects are not held to it.
        service.create_volume(new_volume("elsewhere")).unwrap();
        assert!(matches!(
            service.delete_project("t1"),
            Err(ServiceError::InUse(_))
        ));
        assert!(service
            .delete_project(crate::domain::model::DEFAULT_PROJECT)
            .is_err());
    }

    #[test]
    fn a_rename_keeps_the_volume_and_refuses_taken_or_illegal_names() {
        let tmp = tempfile::tempdir().unwrap();
        let control = Arc::new(MemoryControl::default());
        let service = open(tmp.path(), &control);
        let a = service.create_volume(new_volume("a")).unwrap().record;
        service.create_volume(new_volume("b")).unwrap();
        let renamed = service.rename_volume(a.uuid, "c").unwrap().record;
        assert_eq!((renamed.uuid, renamed.nsid), (a.uuid, a.nsid));
        assert_eq!(renamed.name, "c");
        assert_eq!(renamed.revision, a.revision + 1);
        assert!(matches!(
            service.rename_volume(a.uuid, "b"),
            Err(ServiceError::AlreadyExists { .. })
        ));
        assert!(matches!(
            service.rename_volume(a.uuid, "no/slash"),
            Err(ServiceError::InvalidArgument(_))
        ));
        let same = service.rename_volume(a.uuid, "c").unwrap().record;
        assert_eq!(
            same.revision, renamed.revision,
            "a rename to the same name changes nothing"
        );
        service.delete_volume(a.uuid, None).unwrap();
        assert!(service.await_removal(&[a.uuid], std::time::Duration::from_secs(10)));
        assert!(matches!(
            service.rename_volume(a.uuid, "d"),
            Err(ServiceError::NotFound { .. })
        ));
    }
}
