//! The engine's scrub in the control port's terms: damaged maps named by the
//! UUID they are named after.

use engine::{ScrubStatus, VolumeId};
use mgmt_api::control::{ScrubDamage, ScrubReport};
use uuid::Uuid;

/// The port's view of the engine's scrub status: each damaged map named by
/// the UUID it is named after (`uuid_of`), where it still exists under one.
pub(super) fn scrub_report(
    status: ScrubStatus,
    uuid_of: impl Fn(VolumeId) -> Option<Uuid>,
) -> ScrubReport {
    ScrubReport {
        running: status.running,
        passes_completed: status.passes_completed,
        blocks_checked: status.blocks_checked,
        blocks_total: status.blocks_total,
        damaged: status
            .damaged
            .iter()
            .map(|d| ScrubDamage::new(d.volume.0, uuid_of(d.volume), &d.lbas))
            .collect(),
        metadata_damaged: status.metadata_damaged,
        last_started_unix_s: status.last_started_unix_s,
        last_finished_unix_s: status.last_finished_unix_s,
        bytes_per_s: status.bytes_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::VolumeDamage;

    #[test]
    fn damage_is_named_by_uuid_where_the_map_has_one() {
        let named = Uuid::from_u128(7);
        let status = ScrubStatus {
            passes_completed: 2,
            damaged: vec![
                VolumeDamage {
                    volume: VolumeId(3),
                    lbas: vec![4, 5],
                },
                VolumeDamage {
                    volume: VolumeId(9),
                    lbas: (0..5000).collect(),
                },
            ],
            metadata_damaged: 1,
            bytes_per_s: 8 << 20,
            ..ScrubStatus::default()
        };
        let report = scrub_report(status, |id| (id == VolumeId(3)).then_some(named));
        assert_eq!(report.passes_completed, 2);
        assert_eq!(report.metadata_damaged, 1);
        assert_eq!(report.bytes_per_s, 8 << 20);
        assert_eq!(report.damaged[0], ScrubDamage::new(3, Some(named), &[4, 5]));
        assert_eq!(report.damaged[1].uuid, None);
        assert_eq!(report.damaged[1].damaged_blocks, 5000);
        assert_eq!(report.damaged_blocks(), 5002);
    }
}
