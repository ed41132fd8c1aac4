//! Damaged media under the real keeld: acknowledged writes over NVMe/TCP, a
//! kill -9, one damaged byte in the data of a log batch in the middle of the
//! un-checkpointed log, a restart. Every block must read back what was
//! acknowledged — the writes after the damaged batch included — except exactly
//! the damaged block, which answers the NVMe media error Unrecovered Read
//! Error; keeld says what it found in its log.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use common::{pattern, Keeld};
use engine::format::BatchHeader;
use nvmf_target::{Lba, Status};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:c3c3c3c3-3333-4333-8333-c3c3c3c3c3c3";
const BLOCK: u64 = 4096;

/// Batches in the pool file with data: (epoch, seq, byte offset of the data, data blocks).
fn data_batches(pool: &mut std::fs::File) -> Vec<(u64, u64, u64, u64)> {
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
                    if header.data_blocks > 0 {
                        found.push((
                            header.epoch,
                            header.seq,
                            at + (block as u64 + u64::from(header.header_blocks)) * BLOCK,
                            u64::from(header.data_blocks),
                        ));
                    }
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
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("damaged", 64 << 20, &[HOST]);
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid");
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let mut expected: BTreeMap<u64, Bytes> = BTreeMap::new();
    {
        let mut c = k.connect(HOST);
        assert!(c.set_queue_count(1).expect("queues") >= 1);
        let mut io = c.connect_io_queue(1).expect("I/O queue");
        // One acknowledged 4 KiB write at a time: each is its own batch.
        for i in 0..160u64 {
            let lba = (i * 2_654_435_761) % (16 << 20 >> 12);
            let data = pattern(BLOCK as usize, 1000 + i);
            io.write(nsid, Lba(lba), data.clone(), BLOCK as u32)
                .expect("write");
            expected.insert(lba, data);
            if i == 100 {
                io.flush(nsid).expect("flush");
            }
        }
    }
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
    assert!(batches.len() >= 100, "{} batches", batches.len());
    let (_, seq, data_at, _) = batches[batches.len() / 2];
    let mut byte = [0u8; 1];
    pool.seek(SeekFrom::Start(data_at + 777)).expect("seek");
    pool.read_exact(&mut byte).expect("read");
    pool.seek(SeekFrom::Start(data_at + 777)).expect("seek");
    pool.write_all(&[byte[0] ^ 0x04]).expect("damage one bit");
    pool.sync_all().expect("sync");
    drop(pool);

    k.restart();
    k.wait_volume_state(&uuid, "Available");
    assert!(
        k.logged("log batch data failed its checksum"),
        "keeld must report the damage\n{}",
        k.log_tail()
    );
    let mut c = k.connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    let mut media_errors = Vec::new();
    for (lba, data) in &expected {
        match io.read(nsid, Lba(*lba), 1, BLOCK as u32) {
            Ok(got) => assert!(
                got == data.to_vec(),
                "LBA {lba} read back other data with success (damaged batch {seq})"
            ),
            Err(err) => {
                assert_eq!(
                    err.status(),
                    Some(Status::UnrecoveredReadError),
                    "LBA {lba}: {err:?}"
                );
                media_errors.push(*lba);
            }
        }
    }
    assert_eq!(
        media_errors.len(),
        1,
        "exactly the damaged block fails: {media_errors:?}"
    );
    // Rewriting the block heals it.
    let lba = media_errors[0];
    let fresh = pattern(BLOCK as usize, 99);
    io.write(nsid, Lba(lba), fresh.clone(), BLOCK as u32)
        .expect("rewrite");
    assert_eq!(
        io.read(nsid, Lba(lba), 1, BLOCK as u32).expect("read"),
        fresh.to_vec()
    );
}
