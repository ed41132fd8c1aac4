//! Process-kill crash test: a writer process (examples/crash_writer.rs) is
//! SIGKILLed at random moments, 20 times in a row on one pool. After each kill the
//! pool is reopened and every block must hold its newest acknowledged generation
//! or a newer one that was in flight — never older data, never garbage. Every
//! snapshot the writer took holds, per block, what was acknowledged before it
//! or a write in flight then — also after the collector moved its blocks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig};

const VOLUME_BLOCKS: u64 = 2048;
const KILLS: usize = 20;

fn writer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = debug_dir.join("examples").join("crash_writer");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples`",
        path.display()
    );
    path
}

fn block_content(lba: u64, generation: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data[8..16].copy_from_slice(&generation.to_le_bytes());
    for (i, byte) in data.iter_mut().enumerate().skip(16) {
        *byte = (generation
            .wrapping_mul(31)
            .wrapping_add(lba)
            .wrapping_add(i as u64)
            % 251) as u8;
    }
    data
}

/// What a snapshot must hold: blocks acknowledged before it, at least, and
/// nothing issued after it.
struct SnapshotBounds {
    issued_max: u64,
    acked: HashMap<u64, u64>,
}

#[derive(Default)]
struct Journal {
    issued: HashMap<u64, Vec<u64>>,
    acked: HashMap<u64, u64>,
    last_generation: u64,
    /// By the generation in the snapshot's name.
    snapshots: HashMap<u64, SnapshotBounds>,
}

fn read_journal(path: &Path) -> Journal {
    let mut journal = Journal::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(kind), Some(lba), Some(generation)) = (parts.next(), parts.next(), parts.next())
        else {
            continue; // a line torn by the kill
        };
        let (Ok(lba), Ok(generation)) = (lba.parse::<u64>(), generation.parse::<u64>()) else {
            continue;
        };
        journal.last_generation = journal.last_generation.max(generation);
        match kind {
            "I" => journal.issued.entry(lba).or_default().push(generation),
            "A" => {
                let best = journal.acked.entry(lba).or_insert(0);
                *best = (*best).max(generation);
            }
            // `S <name generation> <newest generation issued>`.
            "S" => {
                journal.snapshots.insert(
                    lba,
                    SnapshotBounds {
                        issued_max: generation,
                        acked: journal.acked.clone(),
                    },
                );
            }
            _ => {}
        }
    }
    journal
}

/// What one verification covered.
#[derive(Default, Clone, Copy)]
struct Verified {
    /// Volume blocks holding data.
    blocks: u64,
    /// Snapshots checked against what was acknowledged before them.
    snapshots: u64,
}

fn verify(pool: &Path, journal: &Journal) -> Verified {
    let spec = DeviceSpec {
        path: pool.into(),
        kind: BackingKind::File,
        create_size: None,
    };
    let engine =
        Engine::open_paths(&[spec], EngineConfig::default(), false).expect("reopen after kill");
    let volume = engine.volume_by_name("crash").expect("volume survives").id;
    let mut verified = Verified {
        blocks: verify_map(
            &engine,
            volume,
            "the volume",
            &journal.acked,
            u64::MAX,
            journal,
        ),
        snapshots: 0,
    };
    for snapshot in engine.snapshots() {
        let Some(name_generation) = snapshot
            .name
            .strip_prefix("snap-")
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        let what = format!("snapshot {}", snapshot.name);
        match journal.snapshots.get(&name_generation) {
            Some(bounds) => {
                verify_map(
                    &engine,
                    snapshot.id,
                    &what,
                    &bounds.acked,
                    bounds.issued_max,
                    journal,
                );
                verified.snapshots += 1;
            }
            // Taken, and killed before its journal line: only its blocks'
            // integrity can be checked.
            None => {
                verify_map(
                    &engine,
                    snapshot.id,
                    &what,
                    &HashMap::new(),
                    u64::MAX,
                    journal,
                );
            }
        }
    }
    drop(engine);
    verified
}

/// Checks every block of `map`: zeros only if nothing was acknowledged for
/// it, else a generation issued for it, at most `issued_max`, at least the
/// one `acked` names. Returns the blocks that held data.
fn verify_map(
    engine: &Engine,
    map: engine::VolumeId,
    what: &str,
    acked_by_lba: &HashMap<u64, u64>,
    issued_max: u64,
    journal: &Journal,
) -> u64 {
    let mut checked = 0;
    for lba in 0..VOLUME_BLOCKS {
        let data = engine.read_wait(map, lba, 1).expect("read");
        let acked = acked_by_lba.get(&lba).copied();
        if data.iter().all(|&b| b == 0) {
            assert!(
                acked.is_none(),
                "{what}: block {lba} reads zeros but generation {acked:?} was acknowledged"
            );
            continue;
        }
        let stored_lba = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let generation = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        assert_eq!(
            stored_lba, lba,
            "{what}: block {lba} holds data written for block {stored_lba}"
        );
        assert_eq!(
            &data[..],
            &block_content(lba, generation)[..],
            "{what}: block {lba} generation {generation} is garbage"
        );
        let issued = journal.issued.get(&lba).map(Vec::as_slice).unwrap_or(&[]);
        assert!(
            issued.contains(&generation) && generation <= issued_max,
            "{what}: block {lba} holds generation {generation}, never written before it"
        );
        if let Some(acked) = acked {
            assert!(
                generation >= acked,
                "{what}: block {lba} went back from acknowledged generation {acked} to {generation}"
            );
        }
        checked += 1;
    }
    checked
}

/// What the kill rounds came to.
#[derive(Default)]
struct Rounds {
    acked: usize,
    /// The most segments the collector reported cleaned in one run.
    cleaned: u64,
    /// The most bytes it reported relocated in one run.
    relocated: u64,
    /// Snapshots checked against what was acknowledged before them.
    snapshots_verified: u64,
}

/// Runs `kills` rounds of: start the writer (with `env`), let it acknowledge a
/// random number of writes in `acks`, SIGKILL it, verify the pool.
fn kill_rounds(kills: usize, acks: std::ops::Range<u64>, env: &[(&str, &str)]) -> Rounds {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = dir.path().join("pool.img");
    let journal_path = dir.path().join("journal");
    let writer = writer_binary();
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut rounds = Rounds::default();
    for round in 0..kills {
        let first_generation = read_journal(&journal_path).last_generation + 1;
        let mut child = Command::new(&writer)
            .arg(&pool)
            .arg(&journal_path)
            .arg(first_generation.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start writer");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill after a random number of acknowledgements, counted on its stdout.
        let kill_after = (acks.start + seed % (acks.end - acks.start)) as usize;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut acked = 0;
        while acked < kill_after {
            match lines.next() {
                Some(Ok(line)) if line == "A" => acked += 1,
                Some(Ok(line)) if line.starts_with("G ") => {
                    let mut fields = line[2..].split(' ').map(|f| f.parse().unwrap_or(0));
                    rounds.cleaned = rounds.cleaned.max(fields.next().unwrap_or(0));
                    rounds.relocated = rounds.relocated.max(fields.next().unwrap_or(0));
                }
                Some(Ok(_)) => {}
                _ => panic!(
                    "writer ended before the kill in round {round}: {:?}",
                    child.wait()
                ),
            }
        }
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reap writer");
        assert!(!status.success(), "writer must die from the signal");
        rounds.acked += acked;
        let journal = read_journal(&journal_path);
        let verified = verify(&pool, &journal);
        rounds.snapshots_verified += verified.snapshots;
        eprintln!(
            "round {round}: killed after {acked} acks; {} blocks and {} snapshots verified",
            verified.blocks, verified.snapshots
        );
    }
    rounds
}

#[test]
fn acknowledged_writes_survive_repeated_sigkill() {
    let rounds = kill_rounds(KILLS, 50..2050, &[]);
    assert!(rounds.acked >= KILLS * 50);
}

/// The same, with the writer's batches written and acknowledged on its own
/// engine ring (the reactors' path), not through the device's ring thread.
#[test]
fn acknowledged_writes_from_a_thread_with_its_own_ring_survive_repeated_sigkill() {
    let rounds = kill_rounds(KILLS / 2, 50..2050, &[("KEEL_CRASH_LOCAL_RING", "1")]);
    assert!(rounds.acked >= KILLS / 2 * 50);
}

/// A 96 MiB pool (eleven 8 MiB segments) holding an 8 MiB volume and up to
/// two snapshots of it, under random overwrites: the collector runs all the
/// time, moving blocks that snapshots share, while the writer is killed; the
/// volume and every snapshot read back right after each kill.
#[test]
fn acknowledged_writes_survive_sigkill_while_garbage_collection_runs() {
    let env = [
        ("KEEL_CRASH_POOL_MIB", "96"),
        ("KEEL_CRASH_SNAPSHOT_EVERY", "1500"),
    ];
    let rounds = kill_rounds(8, 2000..6000, &env);
    assert!(rounds.acked >= 8 * 2000);
    assert!(
        rounds.cleaned > 0 && rounds.relocated > 0,
        "the collector never moved a block: the test proves nothing"
    );
    assert!(
        rounds.snapshots_verified > 0,
        "no snapshot was checked after a kill: the test proves nothing"
    );
}
