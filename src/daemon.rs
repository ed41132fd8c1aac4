//! keeld's wiring: open the pool, start the NVMe/TCP target and the REST API over
//! it, wait for SIGINT or SIGTERM, then stop in reverse order and checkpoint.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig};

use crate::config::Config;

/// Default size of the embedded pool file.
const EMBEDDED_POOL_BYTES_DEFAULT: u64 = 16 << 30;
/// Smallest embedded pool file keeld will create.
const EMBEDDED_POOL_BYTES_MIN: u64 = 256 << 20;

/// Opens (creating on first start) the pool the configuration names.
pub fn open_pool(config: &Config) -> anyhow::Result<Engine> {
    let engine_config = EngineConfig { blocks_per_segment: config.pool.segment_blocks, ..EngineConfig::default() };
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
    specs.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn pool_devices(config: &Config) -> anyhow::Result<Vec<DeviceSpec>> {
    if !config.pool.devices.is_empty() {
        return config
            .pool
            .devices
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).with_context(|| format!("pool device {}", path.display()))?;
                use std::os::unix::fs::FileTypeExt;
                let kind = if meta.file_type().is_block_device() { BackingKind::BlockDevice } else { BackingKind::File };
                Ok(DeviceSpec { path: path.clone(), kind, create_size: None })
            })
            .collect();
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("pool.img");
    let size = match &config.pool.file_size {
        Some(text) => crate::units::parse_size(text).map_err(anyhow::Error::msg)?,
        None => embedded_pool_size(&config.data_dir),
    };
    Ok(vec![DeviceSpec { path, kind: BackingKind::File, create_size: Some(size) }])
}

/// 16 GiB, or half the free space of the file system if that is less (the file is
/// sparse, but a pool that can never be filled would promise space that is not there).
fn embedded_pool_size(dir: &Path) -> u64 {
    let free = free_bytes(dir).unwrap_or(EMBEDDED_POOL_BYTES_DEFAULT * 2);
    (free / 2).clamp(EMBEDDED_POOL_BYTES_MIN, EMBEDDED_POOL_BYTES_DEFAULT) & !((1 << 20) - 1)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let output = std::process::Command::new("df").arg("-B1").arg("--output=avail").arg(dir).output().ok()?;
    String::from_utf8_lossy(&output.stdout).lines().nth(1)?.trim().parse().ok()
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let engine = Arc::new(open_pool(&config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("keel-control")
        .build()
        .context("cannot start the control-plane runtime")?;
    runtime.block_on(wait_for_shutdown_signal())?;
    tracing::info!("shutting down");
    drop(runtime);
    let engine = Arc::try_unwrap(engine).map_err(|_| anyhow::anyhow!("engine still referenced at shutdown"))?;
    engine.shutdown().context("final checkpoint failed")?;
    tracing::info!("pool closed cleanly");
    Ok(())
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
