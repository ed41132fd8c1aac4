//! Model-based property test: random sequences of volume, snapshot, clone, revert,
//! data and garbage-collection operations, interleaved with simulated crashes
//! (process death and power loss with torn, dropped and reordered unflushed
//! writes), checked against an in-memory model. Every read of every volume,
//! snapshot and clone must match the model. Bursts of writes in flight
//! together (overlapping or not) have their device writes completed in a
//! random order; they must apply in the order they were issued.
//!
//! After a crash the engine must hold exactly the model's state after some prefix
//! of the operations issued since the last durable point (a flush, a volume or
//! snapshot create/delete/resize/revert, or a reopen) — and after process death,
//! all of them. The one exception is the one FORMAT.md states: after power loss,
//! blocks of a batch torn under its intact header are indistinguishable from
//! damage and read as media errors. Only blocks recovery reports may fail so,
//! never after process death or a power loss that tears nothing; every other
//! block must match, and the harness then rewrites the failing ones as a host
//! would.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::io::{AlignedBuf, CrashMode, DeviceRef, FaultPlan, FaultyDevice, SimDevice};
use engine::{
    CloneState, Engine, EngineConfig, IoError, SectorSize, ThickCloneOptions, VolumeError,
    VolumeId, VolumeOptions, ATOMIC_WRITE_BLOCKS,
};
use proptest::prelude::*;

const SECTORS_MAX: u64 = 96;

#[derive(Clone, Debug)]
enum Op {
    Create {
        sector_4k: bool,
        sectors: u64,
        compress: bool,
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
    Snapshot {
        volume: usize,
    },
    Clone {
        snapshot: usize,
        extra: u64,
    },
    Revert {
        volume: usize,
        snapshot: usize,
    },
    DeleteSnapshot {
        snapshot: usize,
    },
    ReadSnapshot {
        snapshot: usize,
        lba: u64,
        sectors: u64,
    },
    WriteSnapshot {
        snapshot: usize,
    },
    /// Writes of whole blocks of one volume issued together, each `(block,
    /// blocks, tag)`, whose device writes complete in the order `seed` draws.
    Burst {
        volume: usize,
        writes: Vec<(u64, u64, u8)>,
        seed: u64,
    },
    /// Rewrites a whole volume `rounds` times: makes garbage for the collector.
    Churn {
        volume: usize,
        rounds: u8,
        tag: u8,
    },
    CollectGarbage,
    /// A crash after the first `after_writes` device writes of a checkpoint
    /// (`in_checkpoint`) or of a garbage collection round.
    CrashInside {
        in_checkpoint: bool,
        after_writes: u8,
        kind: CrashKind,
    },
    ThickClone {
        snapshot: usize,
        extra: u64,
        verify: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum CrashKind {
    ProcessKill,
    PowerLossDropAll,
    PowerLossTorn(u64),
}

fn crash_kind() -> impl Strategy<Value = CrashKind> {
    prop_oneof![
        Just(CrashKind::ProcessKill),
        Just(CrashKind::PowerLossDropAll),
        any::<u64>().prop_map(CrashKind::PowerLossTorn),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<bool>(), 8u64..SECTORS_MAX, any::<bool>()).prop_map(|(sector_4k, sectors, compress)| Op::Create { sector_4k, sectors, compress }),
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
        2 => (0usize..4).prop_map(|volume| Op::Snapshot { volume }),
        1 => (0usize..6, 0u64..8).prop_map(|(snapshot, extra)| Op::Clone { snapshot, extra }),
        1 => (0usize..4, 0usize..6).prop_map(|(volume, snapshot)| Op::Revert { volume, snapshot }),
        1 => (0usize..6).prop_map(|snapshot| Op::DeleteSnapshot { snapshot }),
        2 => (0usize..6, 0u64..SECTORS_MAX, 1u64..24).prop_map(|(snapshot, lba, sectors)| Op::ReadSnapshot { snapshot, lba, sectors }),
        1 => (0usize..6).prop_map(|snapshot| Op::WriteSnapshot { snapshot }),
        2 => (0usize..4, 1u8..12, any::<u8>()).prop_map(|(volume, rounds, tag)| Op::Churn { volume, rounds, tag }),
        2 => Just(Op::CollectGarbage),
        3 => (0usize..4, proptest::collection::vec((0u64..12, prop_oneof![3 => 1u64..4, 1 => 16u64..20], any::<u8>()), 2..8), any::<u64>())
            .prop_map(|(volume, writes, seed)| Op::Burst { volume, writes, seed }),
        2 => (any::<bool>(), 0u8..12, crash_kind()).prop_map(|(in_checkpoint, after_writes, kind)| Op::CrashInside { in_checkpoint, after_writes, kind }),
        1 => (0usize..6, 0u64..8, any::<bool>()).prop_map(|(snapshot, extra, verify)| Op::ThickClone { snapshot, extra, verify }),
    ]
}

/// A volume as the model sees it: every sector's content tag (0 = zeros).
#[derive(Clone, Debug, PartialEq)]
struct VolumeModel {
    id: VolumeId,
    /// The id of the volume that started this map's lineage: reverts need a match.
    lineage: VolumeId,
    sector_bytes: u64,
    sectors: u64,
    content: BTreeMap<u64, u8>,
}

/// Everything the engine should hold.
#[derive(Clone, Debug, PartialEq, Default)]
struct PoolModel {
    volumes: Vec<VolumeModel>,
    snapshots: Vec<VolumeModel>,
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

/// The space accounting the collector relies on matches a full recount.
fn audit(engine: &Engine, when: &str) -> Result<(), TestCaseError> {
    let audit = engine.audit_space();
    prop_assert!(
        audit.is_clean(),
        "space accounting {when}: {:?}",
        audit.mismatches
    );
    Ok(())
}

/// A write's data as a host hands it over: for odd tags in a block-aligned
/// buffer, as the NVMe/TCP target receives it (the log then writes it from
/// that buffer), else in an ordinary one (the log gathers it).
fn host_buffer(tag: u8, data: Vec<u8>) -> Bytes {
    if tag % 2 == 1 && data.len().is_multiple_of(4096) {
        Bytes::from_owner(AlignedBuf::copy_from(&data))
    } else {
        Bytes::from(data)
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

/// Sixteen 2 MiB segments: small enough that churn makes the collector work.
const POOL_BYTES: u64 = 33 << 20;

struct Harness {
    sim: Arc<SimDevice>,
    /// The engine's device is the simulator behind this plan, which can hold
    /// its writes back and complete them out of order.
    plan: Arc<FaultPlan>,
    engine: Option<Engine>,
    model: PoolModel,
    /// Model states since the last durable point; index 0 is durable.
    history: Vec<PoolModel>,
    names_used: usize,
}

impl Harness {
    fn new() -> Harness {
        let sim = Arc::new(SimDevice::new(POOL_BYTES));
        let plan = FaultPlan::healthy();
        let devices: Vec<DeviceRef> = vec![Arc::new(FaultyDevice::new(sim.clone(), plan.clone()))];
        Engine::format(devices.clone(), &config()).expect("format");
        let engine = Engine::open(devices, config()).expect("open");
        Harness {
            sim,
            plan,
            engine: Some(engine),
            model: PoolModel::default(),
            history: vec![PoolModel::default()],
            names_used: 0,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    /// The engine's devices: the simulator behind the fault plan.
    fn devices(&self) -> Vec<DeviceRef> {
        vec![Arc::new(FaultyDevice::new(
            self.sim.clone(),
            self.plan.clone(),
        ))]
    }

    /// Issues `writes` of whole blocks to `volume` together, completes their
    /// device writes in an order drawn from `seed`, and waits for them all.
    fn burst(
        &mut self,
        volume: usize,
        writes: &[(u64, u64, u8)],
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let Some(model) = self.model.volumes.get(volume).cloned() else {
            return Ok(());
        };
        let per_block = 4096 / model.sector_bytes;
        let volume_blocks = model.sectors / per_block;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut issued = Vec::new();
        self.plan
            .hold_writes
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for &(block, blocks, tag) in writes {
            let blocks = blocks.min(volume_blocks);
            let block = block % (volume_blocks - blocks + 1);
            let (lba, sectors) = (block * per_block, blocks * per_block);
            let tag = tag.max(1);
            let data: Vec<u8> = (lba..lba + sectors)
                .flat_map(|s| sector_bytes(tag, s, model.sector_bytes))
                .collect();
            let tx = tx.clone();
            let at = issued.len();
            self.engine().write(
                model.id,
                lba,
                host_buffer(tag, data),
                Box::new(move |result| {
                    let _ = tx.send((at, result));
                }),
            );
            issued.push((lba, sectors, tag));
        }
        self.plan
            .hold_writes
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut state = seed | 1;
        self.plan.release_held_writes(|left| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % left as u64) as usize
        });
        for _ in 0..issued.len() {
            let (at, result) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .map_err(|_| TestCaseError::fail("a burst write was never acknowledged"))?;
            prop_assert!(result.is_ok(), "burst write {at} failed: {result:?}");
        }
        // Applied in the order issued, whatever order the device took.
        for (lba, sectors, tag) in issued {
            for s in lba..lba + sectors {
                self.model.volumes[volume].content.insert(s, tag);
            }
            self.changed();
        }
        // Read back before anything else closes the open batch.
        check_read(self.engine(), &self.model.volumes[volume], 0, model.sectors)?;
        Ok(())
    }

    fn durable_point(&mut self) {
        self.history = vec![self.model.clone()];
    }

    fn changed(&mut self) {
        self.history.push(self.model.clone());
    }

    fn next_name(&mut self, prefix: &str) -> String {
        self.names_used += 1;
        format!("{prefix}{}", self.names_used)
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create {
                sector_4k,
                sectors,
                compress,
            } => {
                let sector_bytes = if sector_4k { 4096 } else { 512 };
                let sectors = sectors.div_ceil(4096 / sector_bytes) * (4096 / sector_bytes);
                let name = self.next_name("vol");
                let sector = if sector_4k {
                    SectorSize::B4096
                } else {
                    SectorSize::B512
                };
                match self.engine().create_volume_with_options(
                    &name,
                    sectors * sector_bytes,
                    sector,
                    VolumeOptions {
                        compression: compress,
                    },
                ) {
                    Ok(info) => {
                        let model = VolumeModel {
                            id: info.id,
                            lineage: info.id,
                            sector_bytes,
                            sectors,
                            content: BTreeMap::new(),
                        };
                        self.model.volumes.push(model);
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
                let Some(model) = self.model.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let tag = tag.max(1);
                let data: Vec<u8> = (lba..lba + sectors)
                    .flat_map(|s| sector_bytes(tag, s, model.sector_bytes))
                    .collect();
                let result = self
                    .engine()
                    .write_wait(model.id, lba, host_buffer(tag, data));
                if lba + sectors > model.sectors {
                    prop_assert!(
                        matches!(result, Err(IoError::OutOfRange { .. })),
                        "{result:?}"
                    );
                } else {
                    prop_assert!(result.is_ok(), "write failed: {result:?}");
                    for s in lba..lba + sectors {
                        self.model.volumes[volume].content.insert(s, tag);
                    }
                    self.changed();
                }
            }
            Op::Read {
                volume,
                lba,
                sectors,
            } => {
                let Some(model) = self.model.volumes.get(volume) else {
                    return Ok(());
                };
                check_read(self.engine(), model, lba, sectors)?;
            }
            Op::Trim {
                volume,
                lba,
                sectors,
            } => {
                let Some(model) = self.model.volumes.get(volume).cloned() else {
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
                        self.model.volumes[volume].content.remove(&s);
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
                let Some(model) = self.model.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let per_block = 4096 / model.sector_bytes;
                let sectors = model.sectors + extra * per_block;
                self.engine()
                    .resize_volume(model.id, sectors * model.sector_bytes)
                    .map_err(|e| TestCaseError::fail(format!("grow: {e}")))?;
                self.model.volumes[volume].sectors = sectors;
                self.durable_point();
            }
            Op::Delete { volume } => {
                if volume >= self.model.volumes.len() {
                    return Ok(());
                }
                let model = self.model.volumes.remove(volume);
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
            Op::Snapshot { volume } => {
                let Some(source) = self.model.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                let name = self.next_name("snap");
                let info = self
                    .engine()
                    .create_snapshot(source.id, &name)
                    .map_err(|e| TestCaseError::fail(format!("snapshot: {e}")))?;
                self.model.snapshots.push(VolumeModel {
                    id: info.id,
                    ..source
                });
                self.durable_point();
            }
            Op::Clone { snapshot, extra } => {
                let Some(source) = self.model.snapshots.get(snapshot).cloned() else {
                    return Ok(());
                };
                let name = self.next_name("clone");
                let sectors = source.sectors + extra * (4096 / source.sector_bytes);
                let info = self
                    .engine()
                    .create_clone(source.id, &name, Some(sectors * source.sector_bytes), None)
                    .map_err(|e| TestCaseError::fail(format!("clone: {e}")))?;
                self.model.volumes.push(VolumeModel {
                    id: info.id,
                    sectors,
                    ..source
                });
                self.durable_point();
            }
            Op::Revert { volume, snapshot } => {
                let (Some(target), Some(source)) = (
                    self.model.volumes.get(volume).cloned(),
                    self.model.snapshots.get(snapshot).cloned(),
                ) else {
                    return Ok(());
                };
                let result = self.engine().revert_volume(target.id, source.id);
                if target.lineage != source.lineage {
                    prop_assert!(
                        matches!(result, Err(VolumeError::NotRelated { .. })),
                        "{result:?}"
                    );
                    return Ok(());
                }
                result.map_err(|e| TestCaseError::fail(format!("revert: {e}")))?;
                // Sector sizes match within a lineage; the size stays.
                self.model.volumes[volume].content = source.content.clone();
                self.durable_point();
            }
            Op::DeleteSnapshot { snapshot } => {
                if snapshot >= self.model.snapshots.len() {
                    return Ok(());
                }
                let model = self.model.snapshots.remove(snapshot);
                self.engine()
                    .delete_volume(model.id)
                    .map_err(|e| TestCaseError::fail(format!("delete snapshot: {e}")))?;
                self.durable_point();
            }
            Op::ReadSnapshot {
                snapshot,
                lba,
                sectors,
            } => {
                let Some(model) = self.model.snapshots.get(snapshot) else {
                    return Ok(());
                };
                check_read(self.engine(), model, lba, sectors)?;
            }
            Op::WriteSnapshot { snapshot } => {
                let Some(model) = self.model.snapshots.get(snapshot) else {
                    return Ok(());
                };
                let data = Bytes::from(vec![7u8; model.sector_bytes as usize]);
                let result = self.engine().write_wait(model.id, 0, data);
                prop_assert!(matches!(result, Err(IoError::ReadOnly(_))), "{result:?}");
            }
            Op::Burst {
                volume,
                writes,
                seed,
            } => self.burst(volume, &writes, seed)?,
            Op::Churn {
                volume,
                rounds,
                tag,
            } => {
                let Some(model) = self.model.volumes.get(volume).cloned() else {
                    return Ok(());
                };
                for round in 0..rounds {
                    let tag = tag.wrapping_add(round).max(1);
                    let data: Vec<u8> = (0..model.sectors)
                        .flat_map(|s| sector_bytes(tag, s, model.sector_bytes))
                        .collect();
                    match self.engine().write_wait(model.id, 0, Bytes::from(data)) {
                        Ok(()) => {
                            // A write larger than the atomic unit survives power
                            // loss as a prefix of its pieces.
                            let piece = ATOMIC_WRITE_BLOCKS as u64 * (4096 / model.sector_bytes);
                            for start in (0..model.sectors).step_by(piece as usize) {
                                for s in start..(start + piece).min(model.sectors) {
                                    self.model.volumes[volume].content.insert(s, tag);
                                }
                                self.changed();
                            }
                        }
                        // Snapshots can pin enough data to fill this small pool.
                        Err(IoError::NoSpace) => break,
                        Err(err) => prop_assert!(false, "churn write failed: {err}"),
                    }
                }
            }
            Op::ThickClone {
                snapshot,
                extra,
                verify,
            } => {
                let Some(source) = self.model.snapshots.get(snapshot).cloned() else {
                    return Ok(());
                };
                let name = self.next_name("thick");
                let sectors = source.sectors + extra * (4096 / source.sector_bytes);
                let options = ThickCloneOptions {
                    size_bytes: Some(sectors * source.sector_bytes),
                    verify,
                    ..ThickCloneOptions::default()
                };
                let job = match self.engine().start_thick_clone(source.id, &name, options) {
                    Ok(job) => job,
                    Err(VolumeError::Io(IoError::NoSpace)) => return Ok(()),
                    Err(err) => return Err(TestCaseError::fail(format!("thick clone: {err}"))),
                };
                let done = job.wait(std::time::Duration::from_secs(60));
                match done.state {
                    CloneState::Completed => {
                        let id = done.destination;
                        self.model.volumes.push(VolumeModel {
                            id,
                            lineage: id,
                            sectors,
                            ..source
                        });
                        self.durable_point();
                    }
                    // The small pool may fill up: the clone fails and is deleted.
                    CloneState::Failed(why) if why.contains("out of space") => {
                        self.engine()
                            .delete_volume(done.destination)
                            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                        self.durable_point();
                    }
                    other => {
                        return Err(TestCaseError::fail(format!("thick clone ended {other:?}")))
                    }
                }
            }
            Op::CollectGarbage => {
                self.engine()
                    .collect_garbage()
                    .map_err(|e| TestCaseError::fail(format!("gc: {e}")))?;
                audit(self.engine(), "after a collection round")?;
            }
            Op::CrashInside {
                in_checkpoint,
                after_writes,
                kind,
            } => {
                // Neither changes what any map holds, so every state the
                // crash may leave is one the model already has.
                self.sim.crash_after_writes(u64::from(after_writes));
                if in_checkpoint {
                    let _ = self.engine().checkpoint();
                } else {
                    let _ = self.engine().collect_garbage();
                }
                self.crash(kind)?;
            }
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
        let engine = Engine::open(self.devices(), config())
            .map_err(|e| TestCaseError::fail(format!("reopen after {kind:?}: {e}")))?;
        audit(&engine, &format!("after recovery from {kind:?}"))?;
        let damaged = Damaged::from_report(&engine);
        if matches!(kind, CrashKind::ProcessKill | CrashKind::PowerLossDropAll) {
            prop_assert!(
                damaged.is_empty(),
                "{kind:?} tears nothing, yet recovery reports {:?}",
                engine.recovery_report()
            );
        }
        let candidates: Vec<&PoolModel> = match kind {
            CrashKind::ProcessKill => vec![self.history.last().expect("history is never empty")],
            _ => self.history.iter().collect(),
        };
        let mut matched = None;
        for candidate in candidates.iter().rev() {
            if engine_matches(&engine, candidate, &damaged) {
                matched = Some((*candidate).clone());
                break;
            }
        }
        let Some(state) = matched else {
            let durable = describe_mismatch(&engine, &self.history[0], &damaged);
            let newest = describe_mismatch(
                &engine,
                self.history.last().expect("history is never empty"),
                &damaged,
            );
            return Err(TestCaseError::fail(format!(
                "after {kind:?} the engine matches none of the {} states since the last durable point; \
                 against the durable one: {durable}; against the newest: {newest}; recovery found {:?}",
                self.history.len(),
                engine.recovery_report()
            )));
        };
        for (&(volume, block), _) in damaged.blocks.iter() {
            let Some(model) = state.volumes.iter().find(|m| m.id.0 == volume) else {
                continue;
            };
            let spb = 4096 / model.sector_bytes;
            let sectors = spb.min(model.sectors.saturating_sub(block * spb));
            if sectors == 0
                || engine
                    .read_wait(model.id, block * spb, sectors as u32)
                    .is_ok()
            {
                continue;
            }
            engine
                .write_wait(
                    model.id,
                    block * spb,
                    Bytes::from(model.expected(block * spb, sectors)),
                )
                .map_err(|e| TestCaseError::fail(format!("rewriting a damaged block: {e}")))?;
        }
        // Damage recovery found lives on in the opening checkpoint: only a
        // durable rewrite ends it, so the repair must be flushed before the
        // model's durable point.
        engine
            .flush_wait()
            .map_err(|e| TestCaseError::fail(format!("flushing the rewrites: {e}")))?;
        self.engine = Some(engine);
        self.model = state;
        self.durable_point();
        Ok(())
    }
}

/// The 4 KiB volume blocks recovery reported damaged, by (volume id, block).
struct Damaged {
    blocks: BTreeMap<(u64, u64), ()>,
}

impl Damaged {
    fn from_report(engine: &Engine) -> Damaged {
        let mut blocks = BTreeMap::new();
        for extent in &engine.recovery_report().damaged_extents {
            for block in extent.lba..extent.lba + extent.blocks {
                blocks.insert((extent.volume.0, block), ());
            }
        }
        Damaged { blocks }
    }

    fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    fn contains(&self, volume: VolumeId, block: u64) -> bool {
        self.blocks.contains_key(&(volume.0, block))
    }
}

/// Reads `sectors` at `lba` of a volume or snapshot: out of range must fail as
/// such, anything else must match the model.
fn check_read(
    engine: &Engine,
    model: &VolumeModel,
    lba: u64,
    sectors: u64,
) -> Result<(), TestCaseError> {
    let result = engine.read_wait(model.id, lba, sectors as u32);
    if lba + sectors > model.sectors {
        prop_assert!(
            matches!(result, Err(IoError::OutOfRange { .. })),
            "{result:?}"
        );
    } else {
        let data =
            result.map_err(|e| TestCaseError::fail(format!("{} read failed: {e}", model.id)))?;
        prop_assert!(
            data[..] == model.expected(lba, sectors)[..],
            "{} read mismatch at {lba}+{sectors}",
            model.id
        );
    }
    Ok(())
}

/// Says how the engine differs from `pool`, for failure messages.
fn describe_mismatch(engine: &Engine, pool: &PoolModel, damaged: &Damaged) -> String {
    let mut out = Vec::new();
    for (what, live, models) in [
        ("volumes", engine.volumes(), &pool.volumes),
        ("snapshots", engine.snapshots(), &pool.snapshots),
    ] {
        let ids: Vec<_> = live.iter().map(|v| (v.id.0, v.size_bytes)).collect();
        let want: Vec<_> = models
            .iter()
            .map(|m| (m.id.0, m.sectors * m.sector_bytes))
            .collect();
        if ids != want {
            out.push(format!("{what} {ids:?} != {want:?}"));
            continue;
        }
        for model in models {
            let spb = 4096 / model.sector_bytes;
            for block in 0..model.sectors.div_ceil(spb) {
                let sectors = spb.min(model.sectors - block * spb);
                let expected = model.expected(block * spb, sectors);
                match engine.read_wait(model.id, block * spb, sectors as u32) {
                    Err(IoError::Media { .. }) if damaged.contains(model.id, block) => {}
                    Err(err) => out.push(format!("{} block {block}: read error {err}", model.id)),
                    Ok(data) => {
                        if let Some(at) = (0..data.len()).find(|&i| data[i] != expected[i]) {
                            out.push(format!(
                                "{} block {block} differs at byte {at}: {:?}.. where {:?}.. was expected",
                                model.id,
                                &data[at..(at + 4).min(data.len())],
                                &expected[at..(at + 4).min(expected.len())],
                            ));
                        }
                    }
                }
            }
        }
    }
    out.join(", ")
}

fn engine_matches(engine: &Engine, pool: &PoolModel, damaged: &Damaged) -> bool {
    maps_match(engine, &engine.volumes(), &pool.volumes, damaged)
        && maps_match(engine, &engine.snapshots(), &pool.snapshots, damaged)
}

/// Whether every map matches its model, 4 KiB block by block: a block
/// `damaged` names may fail as a media error (a later write may have replaced
/// the damaged data), every other must match.
fn maps_match(
    engine: &Engine,
    live: &[engine::VolumeInfo],
    volumes: &[VolumeModel],
    damaged: &Damaged,
) -> bool {
    if live.len() != volumes.len() {
        return false;
    }
    volumes.iter().all(|model| {
        let Some(info) = live.iter().find(|v| v.id == model.id) else {
            return false;
        };
        let spb = 4096 / model.sector_bytes;
        info.size_bytes == model.sectors * model.sector_bytes
            && (0..model.sectors.div_ceil(spb)).all(|block| {
                let sectors = spb.min(model.sectors - block * spb);
                let read = engine.read_wait(model.id, block * spb, sectors as u32);
                let matches = |data: &Bytes| data[..] == model.expected(block * spb, sectors)[..];
                match read {
                    Ok(data) => matches(&data),
                    Err(IoError::Media { .. }) => damaged.contains(model.id, block),
                    Err(_) => false,
                }
            })
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
