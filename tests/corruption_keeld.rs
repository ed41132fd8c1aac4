//! Damaged media under the real keeld: acknowledged writes over NVMe/TCP, a
//! kill -9, one damaged byte in the data of a log batch in the middle of the
//! un-checkpointed log, a restart. Every block must read back what was
//! acknowledged — the writes after the damaged batch included — except exactly
//! the damaged block, which answers the NVMe media error Unrecovered Read
//! Error; keeld says what it found in its log. And the same pool image damaged
//! in turn in the data, a header, the log tail, a root copy and a superblock:
//! keeld either serves every block exactly or as a media error, or, where
//! FORMAT.md says it must, refuses to start with a message naming the damage.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::blocks::{damage, read_back, write_blocks, BLOCK};
use common::{wait_until, Keeld};
use engine::format::BatchHeader;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:c3c3c3c3-3333-4333-8333-c3c3c3c3c3c3";

/// Batches in the pool file with data: (epoch, seq, byte offset of the data, data blocks).
fn data_batches(pool: &mut std::fs::File) -> Vec<(u64, u64, u64, u64)> {
    headers(pool)
        .into_iter()
        .filter(|h| h.data_blocks > 0)
        .map(|h| (h.epoch, h.seq, h.data_at, h.data_blocks))
        .collect()
}

/// A default keeld with a 64 MiB volume `name` that [`HOST`] may use; returns
/// it with the volume's nsid and UUID.
fn keeld_with_volume(name: &str) -> (Keeld, u32, String) {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume(name, 64 << 20, &[HOST]);
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid");
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    (k, nsid, uuid)
}

/// A batch header found in the pool file.
struct FoundHeader {
    epoch: u64,
    seq: u64,
    /// Byte offset of the header.
    at: u64,
    /// Used header bytes.
    used: u64,
    /// Byte offset of its data.
    data_at: u64,
    data_blocks: u64,
}

/// Every intact batch header in the pool file.
fn headers(pool: &mut std::fs::File) -> Vec<FoundHeader> {
    let len = pool.metadata().expect("metadata").len();
    let mut found = Vec::new();
    let mut chunk = vec![0u8; 8 << 20];
    let mut at = 1 << 20;
    while at < len {
        pool.seek(SeekFrom::Start(at)).expect("seek");
        let n = pool.read(&mut chunk).expect("read");
        let mut block = 0;
        while block * BLOCK as usize + BLOCK as usize <= n {
            let bytes = &chunk[block * BLOCK as usize..];
            if bytes.starts_with(b"KEELBTCH") {
                if let Ok(header) = BatchHeader::decode(bytes) {
                    let used = u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]);
                    found.push(FoundHeader {
                        epoch: header.epoch,
                        seq: header.seq,
                        at: at + block as u64 * BLOCK,
                        used: u64::from(used),
                        data_at: at + (block as u64 + u64::from(header.header_blocks)) * BLOCK,
                        data_blocks: u64::from(header.data_blocks),
                    });
                    block += header.total_blocks() as usize;
                    continue;
                }
            }
            block += 1;
        }
        at += n as u64;
    }
    found
}

#[test]
fn a_damaged_batch_in_the_middle_of_the_log_costs_exactly_its_block_over_nvme() {
    let (mut k, nsid, uuid) = keeld_with_volume("damaged");
    let lbas: Vec<u64> = (0..160u64)
        .map(|i| (i * 2_654_435_761) % (16 << 20 >> 12))
        .collect();
    let expected = write_blocks(&k, HOST, nsid, &lbas, Some(100), false);
    k.kill9();

    let pool_path = k.data_dir().join("pool.img");
    let mut pool = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pool_path)
        .expect("open pool.img");
    let mut batches = data_batches(&mut pool);
    let newest_epoch = batches.iter().map(|b| b.0).max().expect("batches");
    batches.retain(|b| b.0 == newest_epoch);
    batches.sort_unstable();
    // Sixteen lone writes share an open batch's header.
    assert!(batches.len() >= 160 / 16, "{} batches", batches.len());
    let (_, seq, data_at, _) = batches[batches.len() / 2];
    drop(pool);
    damage(&pool_path, data_at + 777, 0x04);

    k.restart();
    k.wait_volume_state(&uuid, "Available");
    assert!(
        k.logged("log batch data failed its checksum"),
        "keeld must report the damage\n{}",
        k.log_tail()
    );
    let media_errors = read_back(&k, HOST, nsid, &expected, &format!("damaged batch {seq}"));
    assert_eq!(
        media_errors.len(),
        1,
        "exactly the damaged block fails: {media_errors:?}"
    );
    // Rewriting the block heals it.
    let healed = write_blocks(&k, HOST, nsid, &media_errors, None, false);
    assert!(read_back(&k, HOST, nsid, &healed, "rewritten").is_empty());
}

/// Copies a sparse pool file (cp keeps its holes).
fn copy_pool(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp {from:?} {to:?}");
}

/// Runs keeld on `data_dir` expecting it to refuse to start; returns what it
/// printed. A keeld still running after a minute fails the test.
fn refused_start(data_dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keeld"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--pool-size", "1GiB"])
        .args(["--api-listen", "127.0.0.1:0"])
        .args(["--nvme-listen", "127.0.0.1:0"])
        .args(["--discovery-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeld");
    let exited = wait_until(Duration::from_secs(60), || {
        child.try_wait().expect("wait").is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("keeld neither refused nor failed within a minute");
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        !output.status.success(),
        "keeld started on a pool it must refuse"
    );
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

#[test]
fn damage_anywhere_is_served_exactly_or_as_media_errors_or_refused_with_a_reason() {
    let (mut k, nsid, uuid) = keeld_with_volume("victim");
    let lbas: Vec<u64> = (0..96u64)
        .map(|i| (i * 40_503) % (16 << 20 >> 12))
        .collect();
    let expected = write_blocks(&k, HOST, nsid, &lbas, Some(48), false);
    k.kill9();
    let pool_path = k.data_dir().join("pool.img");
    let pristine = k.data_dir().join("pool.img.pristine");
    copy_pool(&pool_path, &pristine);
    let mut found = headers(
        &mut OpenOptions::new()
            .read(true)
            .open(&pool_path)
            .expect("open"),
    );
    let newest_epoch = found.iter().map(|h| h.epoch).max().expect("headers");
    found.retain(|h| h.epoch == newest_epoch && h.data_blocks > 0);
    found.sort_by_key(|h| h.seq);
    // Sixteen lone writes share an open batch's header; the second batch
    // is complete and flushed (after write 48), the middle one is not.
    assert!(
        found.len() >= 96 / 16,
        "{} batches of this run",
        found.len()
    );
    let early = &found[1];
    let middle = &found[found.len() / 2];
    let tail = &found[found.len() - 1];

    // (what, offset, mask, must keeld refuse?)
    let cases: Vec<(&str, u64, u8, bool)> = vec![
        ("data mid-log, bit flip", middle.data_at + 1234, 0x10, false),
        (
            "data of the tail, byte overwrite",
            tail.data_at + 4000,
            0x5A,
            false,
        ),
        (
            "header mid-log, bit flip",
            middle.at + middle.used - 3,
            0x04,
            false,
        ),
        (
            "header of a flushed batch, byte overwrite",
            early.at + early.used - 3,
            0x5A,
            true,
        ),
        ("root slot 1, byte overwrite", BLOCK + 50, 0x5A, false),
        ("root mirror 0, bit flip", 3 * BLOCK + 20, 0x01, false),
        ("superblock, byte overwrite", 20, 0x5A, false),
        ("superblock copy, bit flip", 5 * BLOCK + 40, 0x80, false),
    ];
    for (what, offset, mask, refuse) in cases {
        copy_pool(&pristine, &pool_path);
        damage(&pool_path, offset, mask);
        if refuse {
            let said = refused_start(k.data_dir());
            assert!(
                said.contains("is damaged and may hold acknowledged writes"),
                "{what}: keeld must say why it refuses\n{said}"
            );
            continue;
        }
        k.restart();
        k.wait_volume_state(&uuid, "Available");
        let media_errors = read_back(&k, HOST, nsid, &expected, what).len();
        let allowed = if what.starts_with("data") { 1 } else { 0 };
        assert_eq!(media_errors, allowed, "{what}: media errors");
        k.kill9();
    }
}
