//! The engine on a real block device: a loop device over a file, opened with
//! O_DIRECT through io_uring. Needs root and losetup; otherwise it says so loudly
//! and fails unless KEEL_ALLOW_SKIP_LOOP=1 (the README test command runs as root).

use std::process::Command;

use bytes::Bytes;
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig, SectorSize};

/// Detaches the loop device when the test ends, pass or fail.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn attach(file: &std::path::Path) -> Result<LoopDevice, String> {
    let output = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(file)
        .output()
        .map_err(|e| format!("losetup not runnable: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(LoopDevice(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

#[test]
fn pool_on_a_loop_device_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("loop-backing.img");
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(256 << 20))
        .expect("backing file");
    let device = match attach(&backing) {
        Ok(device) => device,
        Err(why) => {
            eprintln!("\n!!!!! SKIPPED: no loop device ({why}) !!!!!\n");
            assert!(
                std::env::var("KEEL_ALLOW_SKIP_LOOP").is_ok_and(|v| v == "1"),
                "loop device unavailable: {why}"
            );
            return;
        }
    };
    let spec = DeviceSpec {
        path: device.0.clone().into(),
        kind: BackingKind::BlockDevice,
        create_size: None,
    };
    let engine = Engine::open_paths(std::slice::from_ref(&spec), EngineConfig::default(), true)
        .expect("format and open");
    assert!(engine.pool_stats().capacity_bytes > 200 << 20);
    let volume = engine
        .create_volume("on-loop", 64 << 20, SectorSize::B512)
        .expect("create")
        .id;
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    engine
        .write_wait(volume, 2048, Bytes::from(data.clone()))
        .expect("write 1 MiB");
    engine
        .write_wait(volume, 1, Bytes::from(vec![7u8; 512]))
        .expect("write one sector");
    engine.flush_wait().expect("flush");
    drop(engine);
    let engine = Engine::open_paths(std::slice::from_ref(&spec), EngineConfig::default(), true)
        .expect("reopen");
    assert_eq!(
        &engine.read_wait(volume, 2048, 2048).expect("read")[..],
        &data[..]
    );
    let head = engine.read_wait(volume, 0, 8).expect("read head");
    assert!(head[..512].iter().all(|&b| b == 0));
    assert!(head[512..1024].iter().all(|&b| b == 7));
    engine.shutdown().expect("shutdown");
}
