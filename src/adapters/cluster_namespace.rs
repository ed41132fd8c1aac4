//! A clustered volume served as an NVMe namespace on one node, whatever that
//! node's role: through its primary term while it is the volume's primary,
//! and answering "path unavailable" while it is a replica (the target's ANA
//! state keeps hosts away then; this is the backstop for commands already
//! past that check).

use std::sync::Arc;

use bytes::Bytes;
use engine::replication::ReplicatedVolume;
use engine::{Engine, SectorSize, VolumeId};
use nvmf_target::backend::{
    BlockSize, Completion, Lba, LbaRange, NamespaceBackend, NamespaceError,
};
use parking_lot::RwLock;

use super::namespace::{deallocate_each, namespace_error};
use super::VolumeNamespace;

/// Serves one clustered volume's local replica: reads and the namespace's
/// shape come from the local volume ([`VolumeNamespace`]), changes go
/// through the primary term.
pub struct ClusterNamespace {
    local: VolumeNamespace,
    term: RwLock<Option<Arc<ReplicatedVolume>>>,
}

impl ClusterNamespace {
    /// Wraps the local replica `volume`; it serves nothing until [`serve`](Self::serve).
    pub fn new(engine: Arc<Engine>, volume: VolumeId, sector: SectorSize, uuid: [u8; 16]) -> Self {
        ClusterNamespace {
            local: VolumeNamespace::new(engine, volume, sector, uuid),
            term: RwLock::new(None),
        }
    }

    /// Serves I/O through `term` (this node became primary), or stops (`None`).
    pub fn serve(&self, term: Option<Arc<ReplicatedVolume>>) {
        *self.term.write() = term;
    }

    fn term(&self) -> Option<Arc<ReplicatedVolume>> {
        self.term.read().clone()
    }

    fn block_bytes(&self) -> u64 {
        u64::from(self.local.block_size().bytes())
    }
}

fn unavailable<T>(done: Completion<T>) {
    done(Err(NamespaceError::PathUnavailable));
}

impl NamespaceBackend for ClusterNamespace {
    fn block_size(&self) -> BlockSize {
        self.local.block_size()
    }

    fn capacity_blocks(&self) -> u64 {
        self.local.capacity_blocks()
    }

    fn uuid(&self) -> [u8; 16] {
        self.local.uuid()
    }

    fn volatile_write_cache(&self) -> bool {
        self.local.volatile_write_cache()
    }

    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        let Some(term) = self.term() else {
            return unavailable(done);
        };
        self.local.read(
            lba,
            blocks,
            Box::new(move |r| {
                // A read is answered only while the term still may serve: a
                // deposed primary's data may be older than its successor's.
                done(match r {
                    Ok(_) if !term.may_serve() => Err(NamespaceError::PathUnavailable),
                    r => r,
                })
            }),
        );
    }

    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        let Some(term) = self.term() else {
            return unavailable(done);
        };
        let blocks = data.len() as u64 / self.block_bytes();
        term.write(
            lba.0,
            data,
            Box::new(move |r| done(r.map_err(|e| namespace_error(e, lba.0, blocks)))),
        );
    }

    fn flush(&self, done: Completion<()>) {
        let Some(term) = self.term() else {
            return unavailable(done);
        };
        term.flush(Box::new(move |r| {
            done(r.map_err(|e| namespace_error(e, 0, 0)))
        }));
    }

    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>) {
        let Some(term) = self.term() else {
            return unavailable(done);
        };
        term.write_zeroes(
            lba.0,
            blocks,
            Box::new(move |r| done(r.map_err(|e| namespace_error(e, lba.0, u64::from(blocks))))),
        );
    }

    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>) {
        let Some(term) = self.term() else {
            return unavailable(done);
        };
        deallocate_each(ranges, done, |lba, blocks, part| {
            term.deallocate(lba, blocks, part)
        });
    }
}
