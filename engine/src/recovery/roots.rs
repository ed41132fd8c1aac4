//! Choosing the checkpoint root to open from. Every root is written twice (its
//! slot and that slot's mirror) before the one flush that completes its
//! checkpoint, so one damaged copy never hides a root, and a damaged copy can be
//! told from a checkpoint that a crash interrupted (FORMAT.md, "Recovery").

use crate::error::OpenError;
use crate::format::{CheckpointRoot, DecodeError};
use crate::io::{read_blocking, write_blocking, AlignedBuf};
use crate::pool::{Pool, ROOT_MIRRORS, ROOT_SLOTS};
use crate::units::BLOCK_SIZE;

/// What one root copy holds.
#[derive(Debug)]
enum Copy {
    /// Zeros: never written (a pool made before mirrors existed, or a parity
    /// not yet used).
    Empty,
    /// Bytes that are not a valid root of this pool.
    Damaged(DecodeError),
    /// A valid root of this pool.
    Valid(CheckpointRoot),
}

impl Copy {
    fn read(pool: &Pool, offset: u64) -> Result<Copy, OpenError> {
        let block = read_blocking(pool.root_device(), offset, BLOCK_SIZE)?;
        if block.as_slice().iter().all(|&b| b == 0) {
            return Ok(Copy::Empty);
        }
        Ok(match CheckpointRoot::decode(block.as_slice()) {
            Ok(root) if root.pool_uuid == pool.uuid => Copy::Valid(root),
            Ok(_) => Copy::Damaged(DecodeError::Invalid {
                field: "root_pool_uuid",
                value: 0,
            }),
            Err(err) => Copy::Damaged(err),
        })
    }

    fn generation(&self) -> Option<u64> {
        match self {
            Copy::Valid(root) => Some(root.generation),
            _ => None,
        }
    }
}

/// The root to open from, and how many root copies were found damaged.
pub(super) struct ChosenRoot {
    pub root: CheckpointRoot,
    pub damaged_copies: u32,
}

/// Picks the valid root with the highest generation, refusing to open when a
/// newer root may have existed and is damaged in both of its copies.
pub(super) fn choose_root(pool: &Pool) -> Result<ChosenRoot, OpenError> {
    let mut copies = Vec::with_capacity(4);
    for parity in 0..2 {
        copies.push([
            Copy::read(pool, ROOT_SLOTS[parity])?,
            Copy::read(pool, ROOT_MIRRORS[parity])?,
        ]);
    }
    let damaged_copies = copies
        .iter()
        .flatten()
        .filter(|c| matches!(c, Copy::Damaged(_)))
        .count() as u32;
    let best = copies
        .iter()
        .flatten()
        .filter_map(|c| match c {
            Copy::Valid(root) => Some(root),
            _ => None,
        })
        .max_by_key(|root| root.generation)
        .cloned();
    let Some(root) = best else {
        let error = copies
            .into_iter()
            .flatten()
            .find_map(|c| match c {
                Copy::Damaged(err) => Some(err),
                _ => None,
            })
            .unwrap_or(DecodeError::BadMagic);
        return Err(OpenError::Corrupt {
            what: "checkpoint root (every copy)",
            source: error,
        });
    };
    // Generation g+1 would have gone to the other parity. If that parity holds
    // a valid copy it names an older root, so a write of g+1 never finished and
    // its flush never completed: nothing was freed on its strength, and the log
    // after root g is whole. If both copies there are damaged, g+1 may have been
    // complete: opening from g would silently lose what followed it.
    let next = &copies[((root.generation + 1) % 2) as usize];
    if matches!(next, [Copy::Damaged(_), Copy::Damaged(_)]) {
        return Err(OpenError::RootDamaged {
            generation: root.generation,
        });
    }
    for (parity, pair) in copies.iter().enumerate() {
        for (copy, offset) in pair.iter().zip([ROOT_SLOTS[parity], ROOT_MIRRORS[parity]]) {
            if let Copy::Damaged(err) = copy {
                tracing::error!(
                    offset,
                    %err,
                    "checkpoint root copy damaged; the other copy of its slot is used"
                );
            }
        }
        let [a, b] = pair;
        if a.generation().is_some() != b.generation().is_some() {
            repair_copy(pool, parity, pair)?;
        }
    }
    Ok(ChosenRoot {
        root,
        damaged_copies,
    })
}

/// Rewrites the copy of a slot that does not hold its partner's valid root, so
/// the pair is whole again before the next checkpoint replaces either. The
/// opening checkpoint's flush makes it durable.
fn repair_copy(pool: &Pool, parity: usize, pair: &[Copy; 2]) -> Result<(), OpenError> {
    let (root, offset) = match pair {
        [Copy::Valid(root), _] => (root, ROOT_MIRRORS[parity]),
        [_, Copy::Valid(root)] => (root, ROOT_SLOTS[parity]),
        _ => return Ok(()),
    };
    write_blocking(
        pool.root_device(),
        offset,
        AlignedBuf::copy_from(&root.encode()),
    )?;
    Ok(())
}

/// How many of the four root copies are damaged, and the newest valid root:
/// what a scrub checks while the pool is open.
pub(super) fn inspect(pool: &Pool) -> Result<(u32, Option<CheckpointRoot>), OpenError> {
    let mut damaged = 0;
    let mut newest: Option<CheckpointRoot> = None;
    for offset in ROOT_SLOTS.into_iter().chain(ROOT_MIRRORS) {
        match Copy::read(pool, offset)? {
            Copy::Damaged(_) => damaged += 1,
            Copy::Valid(root) => {
                if newest
                    .as_ref()
                    .is_none_or(|n| root.generation > n.generation)
                {
                    newest = Some(root);
                }
            }
            Copy::Empty => {}
        }
    }
    Ok((damaged, newest))
}
