//! keeld's wiring: open the pool, start the NVMe/TCP target and the REST API over
//! it, wait for SIGINT or SIGTERM, then stop in reverse order and checkpoint.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig};

use mgmt_api::control::NodeInfo;
use nvmf_target::{Subsystem, SubsystemConfig, Target, TargetConfig, TargetHandle};
use uuid::Uuid;

use crate::adapters::{ClusterControl, ClusterPort, EngineControl, IoMetricsRegistry};
use crate::cluster::authority::StreamAdmission;
use crate::cluster::catalog::EtcdCatalogStore;
use crate::cluster::membership::{ensure_cluster, NodeSpec};
use crate::cluster::reconciler::{Reconciler, ReconcilerParts};
use crate::cluster::snapshots::SnapshotStore;
use crate::cluster::volumes::VolumeStore;
use crate::cluster::{ClusterRecord, Etcd, Membership};
use crate::config::{ClusterConfig, Config};
use engine::replication::ReplicaServer;

/// Default size of the embedded pool file.
const EMBEDDED_POOL_BYTES_DEFAULT: u64 = 16 << 30;
/// Smallest embedded pool file keeld will create.
const EMBEDDED_POOL_BYTES_MIN: u64 = 256 << 20;

/// Opens (creating on first start) the pool the configuration names.
pub fn open_pool(config: &Config) -> anyhow::Result<Engine> {
    let engine_config = EngineConfig {
        blocks_per_segment: config.pool.segment_blocks,
        scrub_bytes_per_s: config.pool.scrub_bytes_per_s(),
        scrub_interval: config.pool.scrub_interval(),
        ..EngineConfig::default()
    };
    let specs = pool_devices(config)?;
    for spec in &specs {
        tracing::info!(path = %spec.path.display(), kind = ?spec.kind, "opening pool device");
    }
    let engine = Engine::open_paths(&specs, engine_config, config.pool.format_blank_devices)
        .with_context(|| format!("cannot open the pool on {}", describe(&specs)))?;
    let stats = engine.pool_stats();
    tracing::info!(
        capacity_bytes = stats.capacity_bytes,
        free_bytes = stats.free_bytes,
        volumes = stats.volume_count,
        "pool open"
    );
    Ok(engine)
}

fn describe(specs: &[DeviceSpec]) -> String {
    specs
        .iter()
        .map(|s| s.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pool_devices(config: &Config) -> anyhow::Result<Vec<DeviceSpec>> {
    if !config.pool.devices.is_empty() {
        return config
            .pool
            .devices
            .iter()
            .map(|path| {
                if let Some(size) = memory_device_size(path) {
                    anyhow::ensure!(
                        config.pool.devices.len() == 1,
                        "a memory device (ram:SIZE) must be the pool's only device"
                    );
                    return Ok(DeviceSpec {
                        path: path.clone(),
                        kind: BackingKind::Memory,
                        create_size: Some(size?),
                    });
                }
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("pool device {}", path.display()))?;
                use std::os::unix::fs::FileTypeExt;
                let kind = if meta.file_type().is_block_device() {
                    BackingKind::BlockDevice
                } else {
                    BackingKind::File
                };
                Ok(DeviceSpec {
                    path: path.clone(),
                    kind,
                    create_size: None,
                })
            })
            .collect();
    }
    crate::data_dir::prepare(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("pool.img");
    let size = match &config.pool.file_size {
        Some(text) => crate::units::parse_size(text).map_err(anyhow::Error::msg)?,
        None => embedded_pool_size(&config.data_dir),
    };
    Ok(vec![DeviceSpec {
        path,
        kind: BackingKind::File,
        create_size: Some(size),
    }])
}

/// Prefix of a `--device` that names a pool in memory, e.g. `ram:4GiB`.
const MEMORY_DEVICE_PREFIX: &str = "ram:";

/// The size a `ram:SIZE` device asks for; `None` for any other path.
fn memory_device_size(path: &Path) -> Option<anyhow::Result<u64>> {
    let size = path.to_str()?.strip_prefix(MEMORY_DEVICE_PREFIX)?;
    Some(
        crate::units::parse_size(size)
            .map_err(|err| anyhow::anyhow!("memory device {}: {err}", path.display())),
    )
}

/// Whether the pool lives in memory, so it (and the catalog naming its
/// volumes) is new at every start.
fn pool_in_memory(config: &Config) -> bool {
    config
        .pool
        .devices
        .iter()
        .any(|path| memory_device_size(path).is_some())
}

/// 16 GiB, or half the free space of the file system if that is less (the file is
/// sparse, but a pool that can never be filled would promise space that is not there).
fn embedded_pool_size(dir: &Path) -> u64 {
    let free = free_bytes(dir).unwrap_or(EMBEDDED_POOL_BYTES_DEFAULT * 2);
    (free / 2).clamp(EMBEDDED_POOL_BYTES_MIN, EMBEDDED_POOL_BYTES_DEFAULT) & !((1 << 20) - 1)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let output = std::process::Command::new("df")
        .arg("-B1")
        .arg("--output=avail")
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    crate::data_dir::prepare(&config.data_dir).with_context(|| {
        format!(
            "cannot create or secure data directory {}",
            config.data_dir.display()
        )
    })?;
    anyhow::ensure!(
        config.cluster.is_none() || !pool_in_memory(&config),
        "a clustered node needs a pool that outlives it: memory devices (ram:SIZE) are for a single node"
    );
    let engine = Arc::new(open_pool(&config)?);
    let node = node_identity(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("keel-control")
        .build()
        .context("cannot start the control-plane runtime")?;
    // A clustered node joins before its target exists: the subsystem NQN and
    // serial number are the cluster's, and its controller ids come from the
    // range its ordinal gives it.
    let membership = match &config.cluster {
        Some(cluster) => Some(Arc::new(
            runtime.block_on(join_cluster(&config, cluster, &node, &engine))?,
        )),
        None => {
            // No replica set to make agree: what recovery carried is moot.
            for volume in engine.volumes() {
                engine.forget_unsettled(volume.id);
            }
            None
        }
    };
    let subsystem_config = match &membership {
        Some(membership) => clustered_subsystem(membership)?,
        None => SubsystemConfig::new(
            config
                .nvme
                .subsystem_nqn
                .clone()
                .unwrap_or_else(|| format!("nqn.2024-11.io.keel:node:{}", node.uuid)),
            node.uuid
                .simple()
                .to_string()
                .chars()
                .take(20)
                .collect::<String>(),
        ),
    };
    let nqn = subsystem_config.nqn.clone();
    let subsystem = Subsystem::new(subsystem_config);
    let target = start_target(&config, subsystem.clone())?;
    let node = NodeInfo {
        nvme_endpoint: target
            .local_addrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        discovery_endpoint: target
            .discovery_addrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ..node
    };
    tracing::info!(nqn = %nqn, io = %node.nvme_endpoint, discovery = %node.discovery_endpoint, "NVMe/TCP target listening");
    let io_metrics = Arc::new(IoMetricsRegistry::default());
    let engine_control = EngineControl::new(engine.clone(), subsystem.clone(), node.clone())
        .with_clone_rate(Some(config.pool.thick_clone_mib_per_s << 20))
        .with_io_metrics(io_metrics.clone());
    let (control, replication): (Arc<dyn mgmt_api::Control>, _) =
        match (&membership, &config.cluster) {
            (Some(membership), Some(cluster)) => {
                let local = LocalParts {
                    engine: &engine,
                    subsystem: &subsystem,
                    node: &node,
                    io_metrics: &io_metrics,
                };
                let replication = start_replication(&runtime, cluster, &config, membership, local)?;
                let control = ClusterControl::new(
                    engine_control.with_cluster(ClusterPort::new(
                        membership.clone(),
                        runtime.handle().clone(),
                    )),
                    engine.clone(),
                    membership.clone(),
                    VolumeStore::new(membership.etcd().clone()),
                    SnapshotStore::new(membership.etcd().clone()),
                    runtime.handle().clone(),
                );
                (
                    Arc::new(control) as Arc<dyn mgmt_api::Control>,
                    Some(replication),
                )
            }
            _ => (Arc::new(engine_control) as Arc<dyn mgmt_api::Control>, None),
        };
    runtime.block_on(async {
        let api = match config.api.listen {
            Some(listen) => {
                let catalog = match &membership {
                    Some(m) => Some(Arc::new(EtcdCatalogStore::new(
                        m.clone(),
                        tokio::runtime::Handle::current(),
                    ))
                        as Arc<dyn mgmt_api::domain::catalog_store::CatalogStore>),
                    None if pool_in_memory(&config) => Some(Arc::new(
                        mgmt_api::domain::catalog_store::MemoryCatalogStore::default(),
                    )
                        as Arc<dyn mgmt_api::domain::catalog_store::CatalogStore>),
                    None => None,
                };
                Some(start_api(&config, listen, control.clone(), catalog).await?)
            }
            None => None,
        };
        let upkeep = match &membership {
            Some(membership) => {
                if let Some(api) = &api {
                    membership.set_api_endpoint(api.base_url().to_string()).await?;
                }
                let stats_engine = engine.clone();
                Some(tokio::spawn(membership.clone().run(move || {
                    let stats = stats_engine.pool_stats();
                    (stats.capacity_bytes, stats.free_bytes)
                })))
            }
            None => None,
        };
        wait_for_shutdown_signal().await?;
        tracing::info!("shutting down");
        if let (Some(upkeep), Some(membership)) = (upkeep, &membership) {
            upkeep.abort();
            // Revoking the lease deletes the alive key now, so other nodes see
            // this one Inactive at once instead of after the TTL.
            match membership.leave().await {
                Ok(()) => tracing::info!("left the cluster"),
                Err(err) => tracing::warn!(error = %err, "cannot revoke the lease; it expires after its TTL"),
            }
        }
        if let Some(api) = api {
            api.shutdown().await;
        }
        anyhow::Ok(())
    })?;
    // Terms stop (their hosts are sent elsewhere) before the target goes.
    drop(replication);
    drop(runtime);
    drop(control);
    target.shutdown();
    drop(subsystem);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown().context("final checkpoint failed")?,
        Err(engine) => {
            tracing::warn!(
                "engine still referenced at shutdown; writing a checkpoint without closing"
            );
            engine.checkpoint().context("final checkpoint failed")?;
        }
    }
    tracing::info!("pool closed cleanly");
    Ok(())
}

/// Controller ids each node of a cluster allocates from: a node's ordinal
/// picks a disjoint range (the Linux host refuses two controllers of one
/// subsystem with one id).
const CNTLIDS_PER_NODE: u16 = 1000;

/// The cluster-wide subsystem: the cluster's NQN and serial number on every
/// node, controller ids from this node's range, ANA reporting on.
fn clustered_subsystem(membership: &Membership) -> anyhow::Result<SubsystemConfig> {
    let record = membership.cluster();
    let ordinal = u16::try_from(membership.record().ordinal)
        .ok()
        .filter(|o| {
            u32::from(*o) * u32::from(CNTLIDS_PER_NODE) + u32::from(CNTLIDS_PER_NODE) <= 0xFFEF
        })
        .context("this node's ordinal leaves no controller ids (at most 65 nodes)")?;
    let first = ordinal * CNTLIDS_PER_NODE + 1;
    let mut config = SubsystemConfig::new(record.subsystem_nqn(), record.serial_number());
    config.cntlid_range = nvmf_target::CntlidRange::new(first, first + CNTLIDS_PER_NODE - 1)
        .context("controller id range")?;
    config.ana_reporting = true;
    Ok(config)
}

/// The replica side, and the reconciler that serves this node's volumes.
/// Fields drop in order: the reconciler (stopping every primary term) before
/// the replica side.
struct Replication {
    _reconciler: Reconciler,
    _server: Arc<ReplicaServer>,
}

/// This node's own parts the replication side works with.
struct LocalParts<'a> {
    engine: &'a Arc<Engine>,
    subsystem: &'a Arc<Subsystem>,
    node: &'a NodeInfo,
    io_metrics: &'a Arc<IoMetricsRegistry>,
}

fn start_replication(
    runtime: &tokio::runtime::Runtime,
    cluster: &ClusterConfig,
    config: &Config,
    membership: &Arc<Membership>,
    local: LocalParts<'_>,
) -> anyhow::Result<Replication> {
    let LocalParts {
        engine,
        subsystem,
        node,
        io_metrics,
    } = local;
    let store = VolumeStore::new(membership.etcd().clone());
    let snapshots = SnapshotStore::new(membership.etcd().clone());
    let listen = cluster.replication_listen.unwrap_or_else(|| {
        let ip = config.nvme.listen.first().map_or(
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::ip,
        );
        std::net::SocketAddr::new(ip, crate::config::REPLICATION_PORT_DEFAULT)
    });
    let server = Arc::new(
        ReplicaServer::start(
            engine.clone(),
            listen,
            Arc::new(StreamAdmission::new(
                store.clone(),
                runtime.handle().clone(),
            )),
        )
        .with_context(|| format!("cannot listen for replication on {listen}"))?,
    );
    let replication_endpoint = server.local_addr().to_string();
    let (nvme_endpoint, discovery_endpoint) = (
        host_facing_nvme_endpoint(config, &node.nvme_endpoint),
        node.discovery_endpoint.clone(),
    );
    runtime.block_on(membership.update_record(|record| {
        record.replication_endpoint = Some(replication_endpoint.clone());
        record.nvme_endpoint = nvme_endpoint;
        record.discovery_endpoint = discovery_endpoint;
    }))?;
    tracing::info!(replication = %replication_endpoint, "replica side listening");
    let reconciler = Reconciler::start(ReconcilerParts {
        engine: engine.clone(),
        subsystem: subsystem.clone(),
        membership: membership.clone(),
        store,
        snapshots,
        replica_server: server.clone(),
        runtime: runtime.handle().clone(),
        resync_bytes_per_s: cluster.resync_mib_per_s.max(1) << 20,
        replace_after: std::time::Duration::from_secs(cluster.replica_replace_after_s),
        io_metrics: io_metrics.clone(),
        clone_bytes_per_s: (config.pool.thick_clone_mib_per_s > 0)
            .then_some(config.pool.thick_clone_mib_per_s << 20),
    })
    .context("cannot start the volume reconciler")?;
    Ok(Replication {
        _reconciler: reconciler,
        _server: server,
    })
}

/// Where hosts reach this node's I/O listener: the advertised address when
/// one is configured (NAT, port forwarding), else `listening`. The node
/// record carries it, and every peer lists it in its discovery log
/// (`Subsystem::set_peer_portals`), so it must be an address hosts can use.
fn host_facing_nvme_endpoint(config: &Config, listening: &str) -> String {
    config
        .nvme
        .advertised_address
        .map_or_else(|| listening.to_owned(), |a| a.to_string())
}

/// Connects to etcd and registers this node (endpoints as configured; the
/// bound ones are written once the target listens).
async fn join_cluster(
    config: &Config,
    cluster: &ClusterConfig,
    node: &NodeInfo,
    engine: &Engine,
) -> anyhow::Result<Membership> {
    let (etcd, _) = connect_cluster(config, cluster).await?;
    let spec = NodeSpec {
        uuid: node.uuid,
        name: cluster
            .node_name
            .clone()
            .unwrap_or_else(|| node.name.clone()),
        nvme_endpoint: host_facing_nvme_endpoint(
            config,
            &config
                .nvme
                .listen
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        discovery_endpoint: config
            .nvme
            .discovery_listen
            .map(|a| a.to_string())
            .unwrap_or_default(),
        // Rewritten once the API listens (its port may be chosen then).
        api_endpoint: String::new(),
        failure_domains: cluster.failure_domains.clone(),
        capacity_bytes: engine.pool_stats().capacity_bytes,
        free_bytes: engine.pool_stats().free_bytes,
    };
    Membership::join(etcd, spec, cluster.lease_ttl())
        .await
        .context("cannot join the cluster")
}

/// Connects to etcd and reads (or makes) the cluster record.
async fn connect_cluster(
    config: &Config,
    cluster: &ClusterConfig,
) -> anyhow::Result<(Etcd, ClusterRecord)> {
    anyhow::ensure!(
        !cluster.etcd_endpoints.is_empty(),
        "cluster.etcd_endpoints is empty: give --etcd-endpoints, or drop the cluster settings to run a single node"
    );
    anyhow::ensure!(
        config.nvme.subsystem_nqn.is_none(),
        "nvme.subsystem_nqn cannot be set on a clustered node: every node serves the cluster's NQN"
    );
    let urls = cluster.etcd_urls();
    let etcd = Etcd::connect(&urls)
        .await
        .with_context(|| format!("cannot reach etcd at {}", urls.join(",")))?;
    let record = ensure_cluster(&etcd)
        .await
        .context("cannot read or create the cluster record")?;
    tracing::info!(cluster = %record.uuid, etcd = %urls.join(","), "cluster record read");
    Ok((etcd, record))
}

fn start_target(config: &Config, subsystem: Arc<Subsystem>) -> anyhow::Result<TargetHandle> {
    subsystem.set_host_acl(nvmf_target::HostAcl::AnyHost);
    let mut target_config = TargetConfig::on(std::net::Ipv4Addr::LOCALHOST.into());
    target_config.listen_addrs = config.nvme.listen.clone();
    target_config.discovery_addrs = config.nvme.discovery_listen.into_iter().collect();
    target_config.advertised_addr = config.nvme.advertised_address;
    target_config.reactors = config.nvme.reactors;
    target_config.reactor_kind = match config.nvme.reactor_kind {
        crate::config::ReactorBackend::Auto => nvmf_target::ReactorKind::Auto,
        crate::config::ReactorBackend::IoUring => nvmf_target::ReactorKind::Uring,
        crate::config::ReactorBackend::Epoll => nvmf_target::ReactorKind::Epoll,
    };
    target_config.busy_poll = std::time::Duration::from_micros(config.nvme.busy_poll_us);
    target_config.connections_max = config.nvme.connections_max;
    target_config.connections_per_peer_max = config.nvme.connections_per_peer_max;
    target_config.handshake_timeout =
        std::time::Duration::from_millis(config.nvme.handshake_timeout_ms);
    if config.nvme.reactor_device_rings {
        target_config.reactor_poller = Some(crate::adapters::engine_ring_pollers());
    }
    let target =
        Target::start(target_config, subsystem).context("cannot start the NVMe/TCP target")?;
    tracing::info!(
        reactor_kind = ?target.reactor_kind(),
        device_rings = config.nvme.reactor_device_rings,
        shared_rings = target.stats().shared_rings,
        busy_poll_us = config.nvme.busy_poll_us,
        "NVMe/TCP reactors started"
    );
    Ok(target)
}

async fn start_api(
    config: &Config,
    listen: std::net::SocketAddr,
    control: Arc<dyn mgmt_api::Control>,
    shared_catalog: Option<Arc<dyn mgmt_api::domain::catalog_store::CatalogStore>>,
) -> anyhow::Result<mgmt_api::ApiServer> {
    let mut api_config = mgmt_api::ApiConfig::new(listen, config.data_dir.join("api"));
    api_config.tls = if config.api.insecure_http {
        mgmt_api::TlsMode::PlainHttp
    } else {
        match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => mgmt_api::TlsMode::Files {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            },
            (None, None) => mgmt_api::TlsMode::default(),
            _ => anyhow::bail!("api.tls_cert and api.tls_key must be given together"),
        }
    };
    api_config.auth.disabled = config.api.auth_disabled;
    api_config.service.max_running_workflows = config.api.max_running_workflows;
    if config.cluster.is_some() {
        api_config.service.max_replicas = crate::cluster::volumes::REPLICAS_MAX;
    }
    api_config.catalog_store = shared_catalog;
    api_config.kumoscale_listen = config.api.kumoscale_listen;
    api_config.pvc_listen = config.api.pvc_listen;
    api_config.cinder_noauth = config.api.cinder_noauth;
    api_config.block_copier = Some(Arc::new(crate::adapters::NvmeCopier));
    let server = mgmt_api::ApiServer::bind(api_config, control)
        .await
        .context("cannot start the REST API")?;
    tracing::info!(
        url = %server.base_url(),
        certificate = ?server.certificate_path(),
        admin_password_file = %config.data_dir.join("api").join("admin-password").display(),
        kumoscale = ?server.kumoscale_addr(),
        pvc = ?server.pvc_addr(),
        "REST API listening"
    );
    Ok(server)
}

/// The node's stable identity, kept in `node-id` in the data directory.
fn node_identity(config: &Config) -> anyhow::Result<NodeInfo> {
    let path = config.data_dir.join("node-id");
    let uuid = match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .with_context(|| format!("{} is not a UUID", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let uuid = Uuid::new_v4();
            let tmp = path.with_extension("tmp");
            write_private(&tmp, format!("{uuid}\n").as_bytes()).context("cannot write node-id")?;
            std::fs::rename(&tmp, &path).context("cannot install node-id")?;
            uuid
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let name = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "keel".into());
    Ok(NodeInfo {
        uuid,
        name,
        nvme_endpoint: String::new(),
        discovery_endpoint: String::new(),
    })
}

/// Writes `bytes` to a new file at `path`, readable by keeld's user only, and
/// syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::data_dir::FILE_MODE)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_ram_device_names_a_memory_pool_of_its_size_and_stands_alone() {
        assert_eq!(
            memory_device_size(Path::new("ram:4GiB")).map(|r| r.ok()),
            Some(Some(4 << 30))
        );
        assert!(memory_device_size(Path::new("ram:lots")).is_some_and(|r| r.is_err()));
        assert!(memory_device_size(Path::new("/dev/ram0")).is_none());

        let mut config = Config::default();
        config.pool.devices = vec![PathBuf::from("ram:1GiB")];
        let specs = pool_devices(&config).expect("a memory pool");
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].kind, BackingKind::Memory);
        assert_eq!(specs[0].create_size, Some(1 << 30));
        assert!(pool_in_memory(&config));

        config.pool.devices.push(PathBuf::from("/dev/null"));
        let err = pool_devices(&config).expect_err("memory beside another device");
        assert!(err.to_string().contains("only device"), "{err}");
    }
}
