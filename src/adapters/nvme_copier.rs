//! `mgmt_api::dms::copy::BlockCopier` over the NVMe/TCP host of
//! `nvmf-target`: the DMS's thick clones between clusters read the source
//! namespace and write the destination's as this node, one chunk at a time.
//! Blocks of zeros are not written (the destination is new and reads as
//! zeros), so a thin source makes a thin copy.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use mgmt_api::dms::copy::{BlockCopier, CopyOrder, CopyOutcome, RemoteNamespace};
use nvmf_target::host::{HostController, HostOptions, IoQueue};
use nvmf_target::Lba;

/// Bytes per read and write command.
const CHUNK_BYTES: u64 = 128 * 1024;
/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies as an NVMe/TCP host.
#[derive(Debug, Default)]
pub struct NvmeCopier;

/// A connected namespace: the controller (kept for the connection's life)
/// and its I/O queue.
struct Connected {
    controller: HostController,
    io: IoQueue,
    nsid: u32,
}

fn connect(host_nqn: &str, ns: &RemoteNamespace) -> Result<Connected, String> {
    let addr: SocketAddr = ns
        .portal
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", ns.portal))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", ns.portal))?;
    let mut options = HostOptions::new(host_nqn, ns.subsystem_nqn.clone());
    options.kato_ms = 0;
    options.timeout = COMMAND_TIMEOUT;
    if let Some(id) = host_nqn
        .rsplit(':')
        .next()
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
    {
        options.host_id = *id.as_bytes();
    }
    let fail = |what: &str, e: nvmf_target::host::HostError| format!("{what} {}: {e}", ns.portal);
    let mut controller =
        HostController::connect(addr, options).map_err(|e| fail("connect to", e))?;
    controller
        .set_queue_count(1)
        .map_err(|e| fail("queues on", e))?;
    let io = controller
        .connect_io_queue(1)
        .map_err(|e| fail("I/O queue on", e))?;
    Ok(Connected {
        controller,
        io,
        nsid: ns.nsid,
    })
}

impl Connected {
    fn read(&mut self, offset: u64, len: u64, block: u32) -> Result<Vec<u8>, String> {
        let blocks = u32::try_from(len / u64::from(block)).map_err(|e| e.to_string())?;
        self.io
            .read(self.nsid, Lba(offset / u64::from(block)), blocks, block)
            .map_err(|e| format!("read at byte {offset}: {e}"))
    }

    fn close(self) {
        let _ = self.io.disconnect();
        let _ = self.controller.shutdown();
    }
}

/// The byte ranges of `data` made of whole blocks that are not all zeros,
/// each run of such blocks as one range.
fn data_runs(data: &[u8], block: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, chunk) in data.chunks(block).enumerate() {
        if chunk.iter().all(|b| *b == 0) {
            continue;
        }
        let (start, end) = (i * block, i * block + chunk.len());
        match runs.last_mut() {
            Some(run) if run.1 == start => run.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

impl BlockCopier for NvmeCopier {
    fn copy(
        &self,
        order: &CopyOrder,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<CopyOutcome, String> {
        let block = order.block_size;
        if block == 0 || !order.bytes.is_multiple_of(u64::from(block)) {
            return Err(format!(
                "{} bytes is not a whole number of {block}-byte blocks",
                order.bytes
            ));
        }
        let chunk = CHUNK_BYTES - CHUNK_BYTES % u64::from(block);
        let mut source = connect(&order.host_nqn, &order.source)?;
        let mut destination = connect(&order.host_nqn, &order.destination)?;
        let mut offset = 0;
        while offset < order.bytes {
            let len = chunk.min(order.bytes - offset);
            let data = Bytes::from(source.read(offset, len, block)?);
            for (start, end) in data_runs(&data, block as usize) {
                let at = offset + start as u64;
                destination
                    .io
                    .write(
                        destination.nsid,
                        Lba(at / u64::from(block)),
                        data.slice(start..end),
                        block,
                    )
                    .map_err(|e| format!("write at byte {at}: {e}"))?;
            }
            offset += len;
            if !progress(offset) {
                source.close();
                destination.close();
                return Ok(CopyOutcome::Stopped);
            }
        }
        destination
            .io
            .flush(destination.nsid)
            .map_err(|e| format!("flush: {e}"))?;
        if order.verify {
            let mut offset = 0;
            while offset < order.bytes {
                let len = chunk.min(order.bytes - offset);
                if source.read(offset, len, block)? != destination.read(offset, len, block)? {
                    return Err(format!(
                        "verify: the copy differs from the source in the {len} bytes at {offset}"
                    ));
                }
                offset += len;
            }
        }
        source.close();
        destination.close();
        Ok(CopyOutcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blocks_holding_data_are_written_in_runs() {
        let mut data = vec![0u8; 8 * 4];
        data[4] = 1; // block 1
        data[9] = 1; // block 2
        data[31] = 1; // block 7
        assert_eq!(data_runs(&data, 4), [(4, 12), (28, 32)]);
        assert!(data_runs(&[0; 16], 4).is_empty());
    }
}
