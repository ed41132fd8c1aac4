//! Set-up shared by the crate's unit tests.

use std::sync::Arc;

use crate::io::{DeviceRef, SimDevice};
use crate::{Engine, EngineConfig};

/// Segments of 512 blocks (2 MiB), so a few MiB of writes fill several.
fn small_segments() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

/// A pool of `bytes` on a simulated device, formatted and opened with small
/// segments; the device is returned to crash and reopen it.
pub(crate) fn sim_pool(bytes: u64) -> (Arc<SimDevice>, Engine) {
    let sim = Arc::new(SimDevice::new(bytes));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &small_segments()).expect("format");
    let engine = Engine::open(devices, small_segments()).expect("open");
    (sim, engine)
}

/// Opens the pool on `sim` again (after a crash, say).
pub(crate) fn reopen(sim: &Arc<SimDevice>) -> Engine {
    Engine::open(vec![sim.clone() as DeviceRef], small_segments()).expect("reopen")
}
