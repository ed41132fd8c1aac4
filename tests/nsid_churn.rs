//! Namespace ids under churn: tens of thousands of volumes and snapshots over one
//! pool's lifetime, through the real domain service, control adapter, NVMe
//! subsystem and engine, in-process (HTTP adds nothing here and would make the
//! test take minutes). The engine runs on a simulated device and the catalog
//! on tmpfs where there is one, so the test measures ids, not fsyncs.
//!
//! Engine ids are never reused, so before the catalog allocated nsids every
//! create failed once about 1024 engine ids had been spent.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::io::{DeviceRef, SimDevice};
use engine::{Engine, EngineConfig};
use keel::adapters::EngineControl;
use mgmt_api::control::NodeInfo;
use mgmt_api::domain::{NewSnapshot, NewVolume, Service, ServiceConfig, ServiceError};
use nvmf_target::{HostAcl, Subsystem, SubsystemConfig};
use uuid::Uuid;

/// Volumes (each with one snapshot) made and deleted per round.
const BATCH: usize = 4;
/// Rounds: BATCH * ROUNDS volumes and as many snapshots, 20,000 engine ids in all.
const ROUNDS: usize = 2_500;
/// The target's namespace id limit.
const NSID_MAX: u64 = 1024;
/// Longest one delete may take before the test calls it a hang.
const DELETE_WAIT: Duration = Duration::from_secs(30);
const HOST_A: &str = "nqn.2014-08.io.keel:host-a";
const HOST_B: &str = "nqn.2014-08.io.keel:host-b";

fn engine_config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

/// One node: engine, subsystem and domain service, as keeld wires them.
struct Node {
    engine: Arc<Engine>,
    subsystem: Arc<Subsystem>,
    service: Service,
}

impl Node {
    fn start(device: &Arc<SimDevice>, catalog_dir: &Path) -> Node {
        let engine = Arc::new(
            Engine::open(vec![device.clone() as DeviceRef], engine_config()).expect("open pool"),
        );
        let subsystem = Subsystem::new(SubsystemConfig::new(
            "nqn.2024-11.io.keel:node:churn",
            "churn",
        ));
        let node = NodeInfo {
            uuid: Uuid::from_u128(1),
            name: "churn".to_owned(),
            nvme_endpoint: String::new(),
            discovery_endpoint: String::new(),
        };
        let control = Arc::new(EngineControl::new(engine.clone(), subsystem.clone(), node));
        let service =
            Service::open(catalog_dir, control, ServiceConfig::default()).expect("open service");
        Node {
            engine,
            subsystem,
            service,
        }
    }

    /// Stops in keeld's order: service, target, then the engine's checkpoint.
    fn stop(self) {
        let Node {
            engine,
            subsystem,
            service,
        } = self;
        service.shutdown();
        drop(service);
        drop(subsystem);
        let engine = Arc::try_unwrap(engine)
            .unwrap_or_else(|_| panic!("the engine is still referenced after shutdown"));
        engine.shutdown().expect("final checkpoint");
    }

    fn create_volume(&self, name: &str, acl: &str) -> (Uuid, u32) {
        let view = self
            .service
            .create_volume(NewVolume {
                name: name.to_owned(),
                project: "default".to_owned(),
                size_bytes: Some(1 << 20),
                acl: Some(vec![acl.to_owned()]),
                ..NewVolume::default()
            })
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        (view.record.uuid, view.record.nsid.expect("an nsid"))
    }

    fn create_snapshot(&self, name: &str, volume: Uuid) -> Uuid {
        self.service
            .create_snapshot(NewSnapshot {
                name: name.to_owned(),
                project: "default".to_owned(),
                source_volume: volume,
                ..NewSnapshot::default()
            })
            .unwrap_or_else(|e| panic!("snapshot {name}: {e}"))
            .uuid
    }

    /// Waits until the worker has finished every pending delete.
    fn wait_deleted(&self, volumes: &[Uuid], snapshots: &[Uuid]) {
        let deadline = Instant::now() + DELETE_WAIT;
        let gone = |r: Result<(), ServiceError>| matches!(r, Err(ServiceError::NotFound { .. }));
        loop {
            let pending = volumes
                .iter()
                .filter(|v| !gone(self.service.volume(**v).map(|_| ())))
                .count()
                + snapshots
                    .iter()
                    .filter(|s| !gone(self.service.snapshot(**s).map(|_| ())))
                    .count();
            if pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{pending} deletes never finished"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The namespaces the subsystem exposes, as (nsid, ACL).
    fn namespaces(&self) -> Vec<(u32, HostAcl)> {
        let mut namespaces = self.subsystem.namespaces();
        namespaces.sort_by_key(|(nsid, _)| *nsid);
        namespaces
    }
}

fn catalog_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("temp dir on tmpfs")
    } else {
        tempfile::tempdir().expect("temp dir")
    }
}

#[test]
fn twenty_thousand_creates_and_deletes_leave_nsids_to_spare_and_a_restart_keeps_them() {
    let device = Arc::new(SimDevice::new(64 << 20));
    Engine::format(vec![device.clone() as DeviceRef], &engine_config()).expect("format");
    let dir = catalog_dir();
    let node = Node::start(&device, dir.path());

    // Two volumes live through the whole churn; the ACL tells them apart in the
    // subsystem.
    let (keep_a, nsid_a) = node.create_volume("keep-a", HOST_A);
    let (keep_b, nsid_b) = node.create_volume("keep-b", HOST_B);
    assert_eq!((nsid_a, nsid_b), (1, 2));
    let kept_snapshot = node.create_snapshot("keep-a-snap", keep_a);

    for round in 0..ROUNDS {
        let mut volumes = Vec::with_capacity(BATCH);
        let mut snapshots = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let (uuid, nsid) = node.create_volume(&format!("v{i}"), HOST_A);
            // Freed nsids are reused: the churn never climbs past the live count.
            assert!(
                (3..=2 + BATCH as u32).contains(&nsid),
                "round {round}: volume {i} got nsid {nsid}"
            );
            snapshots.push(node.create_snapshot(&format!("s{i}"), uuid));
            volumes.push(uuid);
        }
        for (volume, snapshot) in volumes.iter().zip(&snapshots) {
            node.service
                .delete_snapshot(*snapshot, None)
                .expect("delete snapshot");
            node.service
                .delete_volume(*volume, None)
                .expect("delete volume");
        }
        node.wait_deleted(&volumes, &snapshots);
    }

    // Far more engine ids than nsids were spent, and a create still works.
    let (fresh, fresh_nsid) = node.create_volume("after-churn", HOST_B);
    let engine_id = node
        .engine
        .volume_by_name(&fresh.to_string())
        .expect("engine volume")
        .id
        .0;
    assert!(
        engine_id > 2 * BATCH as u64 * ROUNDS as u64 && engine_id > 10 * NSID_MAX,
        "only {engine_id} engine ids were spent"
    );
    assert_eq!(fresh_nsid, 3);
    let before = node.namespaces();
    assert_eq!(
        before,
        vec![
            (1, HostAcl::hosts([HOST_A])),
            (2, HostAcl::hosts([HOST_B])),
            (3, HostAcl::hosts([HOST_B])),
        ]
    );
    node.stop();

    // After a restart every volume is exposed again under the same nsid.
    let node = Node::start(&device, dir.path());
    assert_eq!(node.namespaces(), before);
    for (uuid, nsid) in [(keep_a, 1), (keep_b, 2), (fresh, 3)] {
        let record = node.service.volume(uuid).expect("volume").record;
        assert_eq!(record.nsid, Some(nsid), "{uuid}");
    }
    assert!(node.service.snapshot(kept_snapshot).is_ok());
    // And the lowest free nsid goes to the next volume.
    node.service.delete_volume(keep_b, None).expect("delete");
    node.wait_deleted(&[keep_b], &[]);
    assert_eq!(node.create_volume("next", HOST_A).1, 2);
    node.stop();
}
