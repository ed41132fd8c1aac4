//! keeld's configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything keeld needs to start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the embedded pool file, the control-plane catalog, TLS
    /// material and credentials.
    pub data_dir: PathBuf,
    /// The storage pool.
    pub pool: PoolConfig,
    /// NVMe/TCP serving.
    pub nvme: NvmeConfig,
    /// The management REST API.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
    /// Cluster membership through etcd; `None` (no `[cluster]` section and
    /// no cluster flags) is a single embedded node that needs no etcd.
    pub cluster: Option<ClusterConfig>,
}

/// How this node joins a cluster.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`; a bare `host:port`
    /// gets `http://`.
    pub etcd_endpoints: Vec<String>,
    /// The node's name in the cluster; default: the host name.
    pub node_name: Option<String>,
    /// Failure domains the node belongs to (rack, power feed, ...).
    pub failure_domains: Vec<String>,
    /// TTL of the node's etcd lease in seconds: a node that stops renewing
    /// shows Inactive at most this long (plus etcd's own lag) after.
    pub lease_ttl_s: u64,
    /// Where this node's replica side listens for primaries' replication
    /// streams; default: the first NVMe/TCP listen address's IP, port
    /// [`REPLICATION_PORT_DEFAULT`].
    pub replication_listen: Option<std::net::SocketAddr>,
    /// Pace of resync and rebuild copies, MiB/s.
    pub resync_mib_per_s: u64,
    /// Seconds a replica's node may stay down before its replica is rebuilt
    /// on another node.
    pub replica_replace_after_s: u64,
}

/// The wait before a lost replica is rebuilt elsewhere when
/// `cluster.replica_replace_after_s` is not set (Ceph's `mon_osd_down_out_interval`).
pub const REPLICA_REPLACE_AFTER_S_DEFAULT: u64 = 600;

/// The replication port when `cluster.replication_listen` is not set.
pub const REPLICATION_PORT_DEFAULT: u16 = 4520;
/// The resync pace when `cluster.resync_mib_per_s` is not set.
pub const RESYNC_MIB_PER_S_DEFAULT: u64 = 256;

/// The lease TTL when `cluster.lease_ttl_s` is not set.
pub const LEASE_TTL_S_DEFAULT: u64 = 5;

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            etcd_endpoints: Vec::new(),
            node_name: None,
            failure_domains: Vec::new(),
            lease_ttl_s: LEASE_TTL_S_DEFAULT,
            replication_listen: None,
            resync_mib_per_s: RESYNC_MIB_PER_S_DEFAULT,
            replica_replace_after_s: REPLICA_REPLACE_AFTER_S_DEFAULT,
        }
    }
}

impl ClusterConfig {
    /// The etcd endpoints as URLs (`http://` added where no scheme is given).
    pub fn etcd_urls(&self) -> Vec<String> {
        self.etcd_endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect()
    }

    /// The lease TTL (at least one second, etcd's granularity).
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl_s.max(1))
    }
}

/// Where the pool lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Raw block devices (e.g. `/dev/nvme1n1`) or files forming the pool, or
    /// one `ram:SIZE` for a pool in memory (new at every start, with its
    /// management catalog; for measuring without a disk). Empty means the
    /// embedded default: one sparse file `pool.img` in the data directory.
    pub devices: Vec<PathBuf>,
    /// Size of the embedded pool file when it is created; `None` picks 16 GiB, or
    /// half the free space of the data directory's file system if that is smaller.
    pub file_size: Option<String>,
    /// Format blank block devices on first start (never formats a device holding a pool).
    pub format_blank_devices: bool,
    /// Segment size in 4 KiB blocks for a new pool.
    pub segment_blocks: u32,
    /// Pace of each thick clone job in MiB/s (0: as fast as one copy stream
    /// goes), so foreground I/O keeps its share of the devices.
    pub thick_clone_mib_per_s: u64,
    /// Pace of a scrub pass in MiB/s (0: as fast as reads go). The scrub reads
    /// every live block to find damage before a host does; slow by default so
    /// foreground I/O keeps the devices.
    pub scrub_mib_per_s: u64,
    /// Hours between scheduled scrub passes (the first starts five minutes
    /// after start-up); 0 scrubs only on demand (`POST /api/v2/cluster/scrub`).
    pub scrub_interval_hours: u64,
}

impl PoolConfig {
    /// The scrub's pace in bytes per second (0: unpaced).
    pub fn scrub_bytes_per_s(&self) -> u64 {
        self.scrub_mib_per_s.saturating_mul(1 << 20)
    }

    /// Time between scheduled scrub passes; `None`: on demand only.
    pub fn scrub_interval(&self) -> Option<std::time::Duration> {
        (self.scrub_interval_hours > 0)
            .then(|| std::time::Duration::from_secs(self.scrub_interval_hours.saturating_mul(3600)))
    }
}

/// NVMe/TCP listeners and identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmeConfig {
    /// I/O controller listeners (also serve discovery).
    pub listen: Vec<SocketAddr>,
    /// The discovery-only listener (port 8009 by convention).
    pub discovery_listen: Option<SocketAddr>,
    /// Address reported in discovery log entries instead of the one the host
    /// reached (for hosts behind NAT or port forwarding).
    pub advertised_address: Option<SocketAddr>,
    /// The subsystem NQN; default derives from the pool uuid-less node name.
    pub subsystem_nqn: Option<String>,
    /// Reactor threads; 0 means one per core.
    pub reactors: usize,
    /// How reactors drive their sockets: `auto` (io_uring, else epoll),
    /// `io_uring` or `epoll`.
    pub reactor_kind: ReactorBackend,
    /// Reactors submit volume I/O on an io_uring of their own and complete it
    /// on their thread (no hand-off to the device ring threads); io_uring
    /// reactors also put their socket operations on that ring, one per reactor.
    pub reactor_device_rings: bool,
    /// How long (µs) a reactor keeps polling for work after it last served a
    /// connection, instead of sleeping: under load this spares a thread
    /// wake-up per I/O; an idle target never polls. 0 never polls.
    pub busy_poll_us: u64,
    /// NVMe/TCP connections open at once (I/O and discovery ports together).
    /// When full, a new connection takes the place of the oldest one that has
    /// not finished its handshake, so idle peers cannot lock hosts out.
    pub connections_max: usize,
    /// NVMe/TCP connections open at once from one peer address.
    pub connections_per_peer_max: usize,
    /// How long (ms) a new connection may take to send ICReq and complete a
    /// Fabrics Connect before it is closed.
    pub handshake_timeout_ms: u64,
}

/// The reactors' default polling window: longer than a device read or
/// write at queue depth 1 plus a host's turnaround, so a reactor serving one
/// busy host does not fall asleep between its commands.
pub const DEFAULT_BUSY_POLL_US: u64 = 200;

/// How NVMe/TCP reactors drive their sockets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ReactorBackend {
    /// io_uring where the kernel allows it, else epoll (with a warning).
    #[default]
    Auto,
    /// io_uring only; starting fails where it is unavailable.
    IoUring,
    /// epoll readiness.
    Epoll,
}

/// The management API listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address; `None` disables the API.
    pub listen: Option<SocketAddr>,
    /// Serve plain HTTP instead of HTTPS (explicit opt-in only).
    pub insecure_http: bool,
    /// Accept requests without a bearer token (explicit opt-in, development only).
    pub auth_disabled: bool,
    /// PEM certificate chain; default: a self-signed one made on first start.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Most workflows (thick clones) running at once before new ones get 429.
    pub max_running_workflows: usize,
    /// Where the KumoScale Provisioner dialect listens (the Provisioner's
    /// port is 30100); `None` (the default) does not serve it.
    pub kumoscale_listen: Option<SocketAddr>,
    /// Where the PVC storage API dialect listens (PVC's port is 7370);
    /// `None` (the default) does not serve it.
    pub pvc_listen: Option<SocketAddr>,
    /// Let the Cinder dialect (under `/v3`) take `X-Auth-Token: user:project`
    /// as Cinder's noauth mode does: every such caller is an administrator
    /// (explicit opt-in, for clients without Keystone).
    pub cinder_noauth: bool,
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `keel=debug,engine=info`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("keel-data"),
            pool: PoolConfig::default(),
            nvme: NvmeConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            cluster: None,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            devices: Vec::new(),
            file_size: None,
            format_blank_devices: false,
            segment_blocks: 2048,
            thick_clone_mib_per_s: 0,
            scrub_mib_per_s: 8,
            scrub_interval_hours: 24,
        }
    }
}

impl Default for NvmeConfig {
    fn default() -> NvmeConfig {
        NvmeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 4420))],
            discovery_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8009))),
            advertised_address: None,
            subsystem_nqn: None,
            reactors: 0,
            reactor_kind: ReactorBackend::Auto,
            reactor_device_rings: true,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            connections_max: 1024,
            connections_per_peer_max: nvmf_target::reactors::DEFAULT_CONNECTIONS_PER_PEER_MAX,
            handshake_timeout_ms: u64::try_from(
                nvmf_target::reactors::DEFAULT_HANDSHAKE_TIMEOUT.as_millis(),
            )
            .unwrap_or(u64::MAX),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8443))),
            insecure_http: false,
            auth_disabled: false,
            tls_cert: None,
            tls_key: None,
            max_running_workflows: 8,
            kumoscale_listen: None,
            pvc_listen: None,
            cinder_noauth: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    /// Loads a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_runs_daily_at_8_mib_per_s_unless_configured() {
        let defaults = Config::default();
        assert_eq!(defaults.pool.scrub_bytes_per_s(), 8 << 20);
        assert_eq!(
            defaults.pool.scrub_interval(),
            Some(std::time::Duration::from_secs(24 * 3600))
        );
        let config: Config =
            toml::from_str("[pool]\nscrub_mib_per_s = 0\nscrub_interval_hours = 0").expect("valid");
        assert_eq!(config.pool.scrub_bytes_per_s(), 0);
        assert_eq!(config.pool.scrub_interval(), None);
    }

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_rejected() {
        let text = r#"
            data_dir = "/var/lib/keel"
            [pool]
            devices = ["/dev/loop3"]
            format_blank_devices = true
            [nvme]
            listen = ["127.0.0.1:4420"]
            advertised_address = "10.0.0.5:4420"
            busy_poll_us = 0
            connections_per_peer_max = 16
            handshake_timeout_ms = 2000
            [api]
            listen = "127.0.0.1:443"
            [log]
            format = "json"
        "#;
        let config: Config = toml::from_str(text).expect("valid");
        assert_eq!(config.pool.devices, vec![PathBuf::from("/dev/loop3")]);
        assert_eq!(config.log.format, "json");
        assert_eq!(config.nvme.busy_poll_us, 0);
        assert_eq!(config.nvme.connections_per_peer_max, 16);
        assert_eq!(config.nvme.handshake_timeout_ms, 2000);
        assert_eq!(config.nvme.connections_max, 1024);
        assert_eq!(Config::default().nvme.busy_poll_us, DEFAULT_BUSY_POLL_US);
        assert!(toml::from_str::<Config>("[pool]\ndevise = []").is_err());
        assert_eq!(config.cluster, None);
    }

    #[test]
    fn a_cluster_section_turns_on_etcd_and_defaults_the_lease_to_5_s() {
        let config: Config = toml::from_str(
            r#"
            [cluster]
            etcd_endpoints = ["127.0.0.1:2379", "https://etcd.example:2379"]
            node_name = "n1"
            failure_domains = ["rack-a"]
        "#,
        )
        .expect("valid");
        let cluster = config.cluster.expect("clustered");
        assert_eq!(
            cluster.etcd_urls(),
            vec!["http://127.0.0.1:2379", "https://etcd.example:2379"]
        );
        assert_eq!(cluster.lease_ttl(), std::time::Duration::from_secs(5));
        assert_eq!(cluster.node_name.as_deref(), Some("n1"));
        assert!(toml::from_str::<Config>("[cluster]\netcd = []").is_err());
        assert_eq!(Config::default().cluster, None);
    }
}
