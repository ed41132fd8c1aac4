//! keeld: the Keel storage daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use keel::config::Config;

/// Serve Keel volumes over NVMe/TCP and manage them over REST.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// TOML configuration file; flags override its values.
    #[arg(long, short = 'c', env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (embedded pool file, catalog, TLS material, credentials).
    #[arg(long, env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A pool device or file; repeat for a multi-device pool; `ram:SIZE`
    /// (e.g. `ram:4GiB`) for a pool in memory that is new at every start.
    /// Default: the embedded file pool in the data directory.
    #[arg(long = "device")]
    devices: Vec<PathBuf>,
    /// Size of the embedded pool file on first start, e.g. 16GiB.
    #[arg(long)]
    pool_size: Option<String>,
    /// Format blank block devices given with --device.
    #[arg(long)]
    format_blank_devices: bool,
    /// Pace each thick clone job to this many MiB/s (0: unpaced).
    #[arg(long)]
    thick_clone_mib_per_s: Option<u64>,
    /// Pace a scrub pass to this many MiB/s (0: unpaced).
    #[arg(long)]
    scrub_mib_per_s: Option<u64>,
    /// Hours between scheduled scrub passes (0: only on demand over REST).
    #[arg(long)]
    scrub_interval_hours: Option<u64>,
    /// NVMe/TCP I/O listener; repeat for several.
    #[arg(long = "nvme-listen")]
    nvme_listen: Vec<SocketAddr>,
    /// NVMe/TCP discovery listener.
    #[arg(long)]
    discovery_listen: Option<SocketAddr>,
    /// Address to report in discovery log entries (NAT, port forwarding).
    #[arg(long)]
    advertised_address: Option<SocketAddr>,
    /// How NVMe/TCP reactors drive their sockets.
    #[arg(long, value_enum)]
    reactor_kind: Option<keel::config::ReactorBackend>,
    /// Send volume I/O through the engine's device ring threads instead of an
    /// io_uring on each reactor thread.
    #[arg(long)]
    no_reactor_device_rings: bool,
    /// How long (µs) NVMe/TCP reactors poll for work after serving a
    /// connection before they sleep (0: never poll).
    #[arg(long)]
    busy_poll_us: Option<u64>,
    /// NVMe/TCP connections open at once; when full, the oldest connection
    /// still in its handshake gives way to a new one.
    #[arg(long)]
    connections_max: Option<usize>,
    /// NVMe/TCP connections open at once from one peer address.
    #[arg(long)]
    connections_per_peer_max: Option<usize>,
    /// How long (ms) a new NVMe/TCP connection may take to send ICReq and
    /// complete a Fabrics Connect.
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// REST API listener.
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// Where to serve the KumoScale Provisioner dialect (e.g. 127.0.0.1:30100).
    #[arg(long)]
    kumoscale_listen: Option<SocketAddr>,
    /// Where to serve the PVC storage API dialect (e.g. 127.0.0.1:7370).
    #[arg(long)]
    pvc_listen: Option<SocketAddr>,
    /// Let the Cinder dialect take `X-Auth-Token: user:project` (Cinder's
    /// noauth mode; every such caller is an administrator).
    #[arg(long)]
    cinder_noauth: bool,
    /// Serve the REST API over plain HTTP (no TLS).
    #[arg(long)]
    insecure_http: bool,
    /// Accept REST requests without authentication (development only).
    #[arg(long)]
    no_auth: bool,
    /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379): join
    /// the cluster whose metadata they hold. Without it (and without a
    /// `[cluster]` section) keeld is a single node and needs no etcd.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// A failure domain this node belongs to; repeat for several.
    #[arg(long = "failure-domain")]
    failure_domains: Vec<String>,
    /// Where this node receives replication streams (default: the NVMe/TCP
    /// address's IP, port 4520).
    #[arg(long)]
    replication_listen: Option<std::net::SocketAddr>,
    /// Seconds a replica's node may stay down before the replica is rebuilt
    /// on another node (default 600).
    #[arg(long)]
    replica_replace_after_s: Option<u64>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

fn main() -> std::process::ExitCode {
    match run(Flags::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keeld: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags) -> anyhow::Result<()> {
    let mut config = match &flags.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = flags.data_dir {
        config.data_dir = dir;
    }
    if !flags.devices.is_empty() {
        config.pool.devices = flags.devices;
    }
    if flags.pool_size.is_some() {
        config.pool.file_size = flags.pool_size;
    }
    config.pool.format_blank_devices |= flags.format_blank_devices;
    if let Some(rate) = flags.thick_clone_mib_per_s {
        config.pool.thick_clone_mib_per_s = rate;
    }
    if let Some(rate) = flags.scrub_mib_per_s {
        config.pool.scrub_mib_per_s = rate;
    }
    if let Some(hours) = flags.scrub_interval_hours {
        config.pool.scrub_interval_hours = hours;
    }
    if !flags.nvme_listen.is_empty() {
        config.nvme.listen = flags.nvme_listen;
    }
    if flags.discovery_listen.is_some() {
        config.nvme.discovery_listen = flags.discovery_listen;
    }
    if flags.advertised_address.is_some() {
        config.nvme.advertised_address = flags.advertised_address;
    }
    if let Some(kind) = flags.reactor_kind {
        config.nvme.reactor_kind = kind;
    }
    if flags.no_reactor_device_rings {
        config.nvme.reactor_device_rings = false;
    }
    if let Some(window) = flags.busy_poll_us {
        config.nvme.busy_poll_us = window;
    }
    if let Some(max) = flags.connections_max {
        config.nvme.connections_max = max;
    }
    if let Some(max) = flags.connections_per_peer_max {
        config.nvme.connections_per_peer_max = max;
    }
    if let Some(timeout) = flags.handshake_timeout_ms {
        config.nvme.handshake_timeout_ms = timeout;
    }
    if flags.api_listen.is_some() {
        config.api.listen = flags.api_listen;
    }
    if flags.kumoscale_listen.is_some() {
        config.api.kumoscale_listen = flags.kumoscale_listen;
    }
    if flags.pvc_listen.is_some() {
        config.api.pvc_listen = flags.pvc_listen;
    }
    config.api.cinder_noauth |= flags.cinder_noauth;
    config.api.insecure_http |= flags.insecure_http;
    config.api.auth_disabled |= flags.no_auth;
    if !flags.etcd_endpoints.is_empty()
        || flags.node_name.is_some()
        || !flags.failure_domains.is_empty()
        || flags.replication_listen.is_some()
        || flags.replica_replace_after_s.is_some()
    {
        let cluster = config.cluster.get_or_insert_with(Default::default);
        if !flags.etcd_endpoints.is_empty() {
            cluster.etcd_endpoints = flags.etcd_endpoints;
        }
        if flags.node_name.is_some() {
            cluster.node_name = flags.node_name;
        }
        if !flags.failure_domains.is_empty() {
            cluster.failure_domains = flags.failure_domains;
        }
        if flags.replication_listen.is_some() {
            cluster.replication_listen = flags.replication_listen;
        }
        if let Some(seconds) = flags.replica_replace_after_s {
            cluster.replica_replace_after_s = seconds;
        }
    }
    if let Some(format) = flags.log_format {
        config.log.format = format;
    }
    init_logging(&config)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "keeld starting");
    keel::daemon::run(config)
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .context("invalid log filter")?;
    // Colour only for a person at a terminal: a log file or a journal gets
    // plain text, not escape sequences.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("unknown log format {other:?}: use text or json"),
    }
    Ok(())
}
