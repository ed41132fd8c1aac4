//! Acknowledged 4 KiB blocks over NVMe/TCP and damage to the pool file behind
//! them: what the corruption and scrub system tests share.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use nvmf_target::{Lba, Status};

use super::{pattern, Keeld};

/// Bytes in a block.
pub const BLOCK: u64 = 4096;

/// Writes a distinct pattern to each of `lbas` (4 KiB blocks of `nsid`, one
/// write at a time, so each is its own log batch), flushing after the write at
/// index `flush_after` if given and after the last one if `flush_at_end`;
/// returns what every block must read back.
pub fn write_blocks(
    k: &Keeld,
    host: &str,
    nsid: u32,
    lbas: &[u64],
    flush_after: Option<usize>,
    flush_at_end: bool,
) -> BTreeMap<u64, Bytes> {
    let mut c = k.connect(host);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    let mut expected = BTreeMap::new();
    for (i, &lba) in lbas.iter().enumerate() {
        let data = pattern(BLOCK as usize, 5000 + lba);
        io.write(nsid, Lba(lba), data.clone(), BLOCK as u32)
            .expect("write");
        expected.insert(lba, data);
        if flush_after == Some(i) {
            io.flush(nsid).expect("flush");
        }
    }
    if flush_at_end {
        io.flush(nsid).expect("flush");
    }
    expected
}

/// Reads every block of `expected` back over NVMe/TCP: each must be exactly
/// what was acknowledged or fail with Unrecovered Read Error; returns the
/// blocks that failed. `what` names the case in failure messages.
pub fn read_back(
    k: &Keeld,
    host: &str,
    nsid: u32,
    expected: &BTreeMap<u64, Bytes>,
    what: &str,
) -> Vec<u64> {
    let mut c = k.connect(host);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    let mut media_errors = Vec::new();
    for (lba, data) in expected {
        match io.read(nsid, Lba(*lba), 1, BLOCK as u32) {
            Ok(got) => assert!(
                got == data.to_vec(),
                "{what}: LBA {lba} read back other data with success"
            ),
            Err(err) => {
                assert_eq!(
                    err.status(),
                    Some(Status::UnrecoveredReadError),
                    "{what}: LBA {lba}: {err:?}"
                );
                media_errors.push(*lba);
            }
        }
    }
    media_errors
}

/// XORs the byte at `offset` of the file at `path` with `mask`, durably.
pub fn damage(path: &Path, offset: u64, mask: u8) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the pool file");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&[byte[0] ^ mask]).expect("write");
    file.sync_all().expect("sync");
}
