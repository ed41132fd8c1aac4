//! Model-based property test: random sequences of volume and data operations,
//! interleaved with simulated crashes (process death and power loss with torn,
//! dropped and reordered unflushed writes), checked against an in-memory model.
//!
//! After a crash the engine must hold exactly the model's state after some prefix
//! of the operations issued since the last durable point (a flush, a volume
//! create/delete/resize, or a reopen) — and after process death, all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::io::{CrashMode, DeviceRef, SimDevice};
use engine::{Engine, EngineConfig, IoError, SectorSize, VolumeId};
use proptest::prelude::*;

const SECTORS_MAX: u64 = 96;

#[derive(Clone, Debug)]
enum Op {
    Create {
        sector_4k: bool,
        sectors: u64,
    },
    Write {
        volume: usize,
        lba: u64,
        sectors: u64,
        tag: u8,
    },
    Read {
        volume: usize,
        lba: u64,
        sectors: u64,
    },
    Trim {
        volume: usize,
        lba: u64,
        sectors: u64,
    },
    Flush,
    Grow {
        volume: usize,
        extra: u64,
    },
    Delete {
        volume: usize,
    },
    Checkpoint,
    Crash(CrashKind),
}

#[derive(Clone, Copy, Debug)]
enum CrashKind {
    ProcessKill,
    PowerLossDropAll,
    PowerLossTorn(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<bool>(), 8u64..SECTORS_MAX).prop_map(|(sector_4k, sectors)| Op::Create { sector_4k, sectors }),
        10 => (0usize..4, 0u64..SECTORS_MAX, 1u64..20, any::<u8>())
            .prop_map(|(volume, lba, sectors, tag)| Op::Write { volume, lba, sectors, tag }),
        4 => (0usize..4, 0u64..SECTORS_MAX, 1u64..24).prop_map(|(volume, lba, sectors)| Op::Read { volume, lba, sectors }),
        3 => (0usize..4, 0u64..SECTORS_MAX, 1u64..24).prop_map(|(volume, lba, sectors)| Op::Trim { volume, lba, sectors }),
        2 => Just(Op::Flush),
        1 => (0usize..4, 1u64..16).prop_map(|(volume, extra)| Op::Grow { volume, extra }),
        1 => (0usize..4).prop_map(|volume| Op::Delete { volume }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash(CrashKind::ProcessKill)),
        1 => Just(Op::Crash(CrashKind::PowerLossDropAll)),
        2 => any::<u64>().prop_map(|seed| Op::Crash(CrashKind::PowerLossTorn(seed))),
    ]
}

/// A volume as the model sees it: every sector's content tag (0 = zeros).
#[derive(Clone, Debug, PartialEq)]
struct VolumeModel {
    id: VolumeId,
    sector_bytes: u64,
    sectors: u64,
    content: BTreeMap<u64, u8>,
}

impl VolumeModel {
    fn expected(&self, lba: u64, sectors: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((sectors * self.sector_bytes) as usize);
        for s in lba..lba + sectors {
            out.extend(sector_bytes(
                self.content.get(&s).copied().unwrap_or(0),
                s,
                self.sector_bytes,
            ));
        }
        out
    }
}

fn sector_bytes(tag: u8, sector: u64, len: u64) -> Vec<u8> {
    if tag == 0 {
        return vec![0; len as usize];
    }
    (0..len)
        .map(|i| tag ^ (sector as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

fn config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        checkpoint_interval_blocks: 700,
        ..EngineConfig::default()
    }
}

struct Harness {
    sim: Arc<SimDevice>,
    engine: Option<Engine>,
    volumes: Vec<VolumeModel>,
    /// Model states since the last durable point; index 0 is durable.
    history: Vec<Vec<VolumeModel>>,
    volumes_created: usize,
}

impl Harness {
    fn new() -> Harness {
        let sim = Arc::new(SimDevice::new(24 << 20));
        let devices: Vec<DeviceRef> = vec![sim.clone()];
        Engine::format(devices.clone(), &config()).expect("format");
        let engine = Engine::open(devices, config()).expect("open");
        Harness {
            sim,
            engine: Some(engine),
            volumes: Vec::new(),
            history: vec![Vec::new()],
            volumes_created: 0,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    fn durable_point(&mut self) {
        self.history = vec![self.volumes.clone()];
    }

    fn changed(&mut self) {
        self.history.push(self.volumes.clone());
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create { sector_4k, sectors } => {
                let sector_bytes = if sector_4k { 4096 } else { 512 };
                let sectors = sectors.div_ceil(4096 / sector_bytes) * (4096 / sector_bytes);
                self.volumes_created += 1;
                let name = format!("vol{}", self.volumes_created);
                let sector = if sector_4k {
                    SectorSize::B4096
                } else {
                    SectorSize::B512
                };
                match self
                    .engine()
                    .create_volume(&name, sectors * sector_bytes, sector)
                {
                    Ok(info) => {
                        self.volumes.push(VolumeModel {
                            id: info.id,
                            sector_bytes,
                            sectors,
                            content: BTreeMap::new(),
                        });
                        self.durable_point();
                    }
                    Err(err) => prop_assert!(false, "create failed: {err}"),
                }
            }
            Op::Write {
                volume,
                lba,
                sectors,
                tag,
            } => {
                let Some(model) = self.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let tag = tag.max(1);
                let data: Vec<u8> = (lba..lba + sectors)
                    .flat_map(|s| sector_bytes(tag, s, model.sector_bytes))
                    .collect();
                let result = self.engine().write_wait(model.id, lba, Bytes::from(data));
                if lba + sectors > model.sectors {
                    prop_assert!(
                        matches!(result, Err(IoError::OutOfRange { .. })),
                        "{result:?}"
                    );
                } else {
                    prop_assert!(result.is_ok(), "write failed: {result:?}");
                    for s in lba..lba + sectors {
                        self.volumes[volume].content.insert(s, tag);
                    }
                    self.changed();
                }
            }
            Op::Read {
                volume,
                lba,
                sectors,
            } => {
                let Some(model) = self.volumes.get(volume) else {
                    return Ok(());
                };
                let result = self.engine().read_wait(model.id, lba, sectors as u32);
                if lba + sectors > model.sectors {
                    prop_assert!(
                        matches!(result, Err(IoError::OutOfRange { .. })),
                        "{result:?}"
                    );
                } else {
                    let data =
                        result.map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
                    prop_assert!(
                        data[..] == model.expected(lba, sectors)[..],
                        "read mismatch at {lba}+{sectors}"
                    );
                }
            }
            Op::Trim {
                volume,
                lba,
                sectors,
            } => {
                let Some(model) = self.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let result = self.engine().deallocate_wait(model.id, lba, sectors as u32);
                if lba + sectors > model.sectors {
                    prop_assert!(
                        matches!(result, Err(IoError::OutOfRange { .. })),
                        "{result:?}"
                    );
                } else {
                    prop_assert!(result.is_ok(), "trim failed: {result:?}");
                    for s in lba..lba + sectors {
                        self.volumes[volume].content.remove(&s);
                    }
                    self.changed();
                }
            }
            Op::Flush => {
                self.engine()
                    .flush_wait()
                    .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?;
                self.durable_point();
            }
            Op::Grow { volume, extra } => {
                let Some(model) = self.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let per_block = 4096 / model.sector_bytes;
                let sectors = model.sectors + extra * per_block;
                self.engine()
                    .resize_volume(model.id, sectors * model.sector_bytes)
                    .map_err(|e| TestCaseError::fail(format!("grow: {e}")))?;
                self.volumes[volume].sectors = sectors;
                self.durable_point();
            }
            Op::Delete { volume } => {
                if volume >= self.volumes.len() {
                    return Ok(());
                }
                let model = self.volumes.remove(volume);
                self.engine()
                    .delete_volume(model.id)
                    .map_err(|e| TestCaseError::fail(format!("delete: {e}")))?;
                self.durable_point();
            }
            Op::Checkpoint => {
                self.engine()
                    .checkpoint()
                    .map_err(|e| TestCaseError::fail(format!("checkpoint: {e}")))?;
                // A checkpoint flushes: everything acknowledged so far is durable.
                self.durable_point();
            }
            Op::Crash(kind) => self.crash(kind)?,
        }
        Ok(())
    }

    fn crash(&mut self, kind: CrashKind) -> Result<(), TestCaseError> {
        drop(self.engine.take());
        self.sim.crash(match kind {
            CrashKind::ProcessKill => CrashMode::KeepAll,
            CrashKind::PowerLossDropAll => CrashMode::DropAll,
            CrashKind::PowerLossTorn(seed) => CrashMode::Torn(seed),
        });
        let engine = Engine::open(vec![self.sim.clone() as DeviceRef], config())
            .map_err(|e| TestCaseError::fail(format!("reopen after {kind:?}: {e}")))?;
        let candidates: Vec<&Vec<VolumeModel>> = match kind {
            CrashKind::ProcessKill => vec![self.history.last().expect("history is never empty")],
            _ => self.history.iter().collect(),
        };
        let mut matched = None;
        for candidate in candidates.iter().rev() {
            if engine_matches(&engine, candidate) {
                matched = Some((*candidate).clone());
                break;
            }
        }
        let Some(state) = matched else {
            return Err(TestCaseError::fail(format!(
                "after {kind:?} the engine matches none of the {} states since the last durable point",
                self.history.len()
            )));
        };
        self.engine = Some(engine);
        self.volumes = state;
        self.durable_point();
        Ok(())
    }
}

fn engine_matches(engine: &Engine, volumes: &[VolumeModel]) -> bool {
    let live = engine.volumes();
    if live.len() != volumes.len() {
        return false;
    }
    volumes.iter().all(|model| {
        let Some(info) = live.iter().find(|v| v.id == model.id) else {
            return false;
        };
        info.size_bytes == model.sectors * model.sector_bytes
            && engine
                .read_wait(model.id, 0, model.sectors as u32)
                .is_ok_and(|data| data[..] == model.expected(0, model.sectors)[..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("KEEL_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model_across_crashes(ops in proptest::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new();
        for op in ops {
            harness.run(op)?;
        }
        harness.crash(CrashKind::PowerLossTorn(7))?;
    }
}
