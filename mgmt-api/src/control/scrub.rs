//! The scrub's side of the control port: what a pass over every live block and
//! checkpoint found, in the port's terms (volumes by UUID, not engine types).
//!
//! A damaged block belongs to one engine map (a volume or a snapshot). The port
//! names it by the UUID the map is named after where the engine still holds it,
//! and always by the engine's own id, which is never reused: a map deleted since
//! the pass, or one not made through the API, is still reported.

use uuid::Uuid;

/// Most damaged LBAs the port carries per map; the count is always complete.
/// Bounds the answer (and its copies) when a whole device goes bad.
pub const SCRUB_LBAS_REPORTED_MAX: usize = 1024;

/// The scrub's state and the findings of its last completed pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrubReport {
    /// Whether a pass is running now.
    pub running: bool,
    /// Passes completed since the engine opened.
    pub passes_completed: u64,
    /// Blocks checked by the running pass, or by the last one when idle.
    pub blocks_checked: u64,
    /// Blocks the running (or last) pass set out to check.
    pub blocks_total: u64,
    /// Damaged maps, in engine id order: from the last completed pass (the
    /// recovery's findings until the first pass ends).
    pub damaged: Vec<ScrubDamage>,
    /// Damaged superblock or root copies, or checkpoint bodies, the last pass found.
    pub metadata_damaged: u32,
    /// When the running or last pass started, in seconds since the Unix epoch.
    pub last_started_unix_s: Option<u64>,
    /// When the last pass finished, in seconds since the Unix epoch.
    pub last_finished_unix_s: Option<u64>,
    /// The pace of a pass in bytes per second (0: unpaced).
    pub bytes_per_s: u64,
}

impl ScrubReport {
    /// Damaged data blocks in every map together.
    pub fn damaged_blocks(&self) -> u64 {
        self.damaged
            .iter()
            .fold(0u64, |sum, d| sum.saturating_add(d.damaged_blocks))
    }
}

/// The damaged blocks of one engine map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubDamage {
    /// The engine's id of the volume or snapshot (never reused).
    pub engine_id: u64,
    /// The REST identity the map is named after, if the engine still holds it
    /// under a UUID name.
    pub uuid: Option<Uuid>,
    /// Damaged 4 KiB blocks in all.
    pub damaged_blocks: u64,
    /// The damaged 4 KiB blocks in ascending order, the first
    /// [`SCRUB_LBAS_REPORTED_MAX`] of them.
    pub lbas: Vec<u64>,
}

impl ScrubDamage {
    /// The damage of one map from its sorted damaged blocks, keeping at most
    /// [`SCRUB_LBAS_REPORTED_MAX`] of them.
    pub fn new(engine_id: u64, uuid: Option<Uuid>, lbas: &[u64]) -> Self {
        Self {
            engine_id,
            uuid,
            damaged_blocks: lbas.len() as u64,
            lbas: lbas.iter().take(SCRUB_LBAS_REPORTED_MAX).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_keeps_the_full_count_but_a_bounded_list() {
        let lbas: Vec<u64> = (0..3000).collect();
        let d = ScrubDamage::new(7, None, &lbas);
        assert_eq!(d.damaged_blocks, 3000);
        assert_eq!(d.lbas.len(), SCRUB_LBAS_REPORTED_MAX);
        assert_eq!(d.lbas.last(), Some(&1023));
        let report = ScrubReport {
            damaged: vec![d, ScrubDamage::new(9, None, &[5])],
            ..ScrubReport::default()
        };
        assert_eq!(report.damaged_blocks(), 3001);
    }
}
