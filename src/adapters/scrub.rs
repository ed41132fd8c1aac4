//! The engine's scrub in the control port's terms: damaged maps named by the
//! UUID they are named after, and a pass this port started reported as
//! running from the moment the engine accepted it.
//!
//! The engine's scrub thread takes a request up on its own and shows the pass
//! as running only once it has listed what to read, which on a large pool
//! takes a while. Without [`ScrubStart`], a client that starts a pass and polls
//! until the scrub is idle could read the old idle status and think the pass
//! done before it began, and a second start in that window would be answered
//! as starting another pass.

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

/// A pass requested from the engine that its status does not show yet.
#[derive(Debug, Default)]
pub(super) struct ScrubStart {
    /// The engine's `(passes_completed, last_started_unix_s)` when the pass
    /// was requested; the pass shows once either moves or the scrub runs.
    pending: Option<(u64, Option<u64>)>,
}

impl ScrubStart {
    /// Records that a pass was requested while the engine showed `status`.
    pub(super) fn requested(&mut self, status: &ScrubStatus) {
        self.pending = Some((status.passes_completed, status.last_started_unix_s));
    }

    /// Reports a requested pass the engine does not show yet as running, and
    /// forgets the request once the engine shows the pass.
    pub(super) fn observe(&mut self, status: &mut ScrubStatus) {
        let Some((passes, started)) = self.pending else {
            return;
        };
        let shown = status.running
            || status.passes_completed != passes
            || status.last_started_unix_s != started;
        if shown {
            self.pending = None;
        } else {
            status.running = true;
        }
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

    #[test]
    fn a_requested_pass_reads_as_running_until_the_engine_shows_it() {
        let idle = ScrubStatus {
            passes_completed: 1,
            last_started_unix_s: Some(100),
            ..ScrubStatus::default()
        };
        let mut start = ScrubStart::default();
        let mut seen = idle.clone();
        start.observe(&mut seen);
        assert!(!seen.running, "nothing requested, nothing added");

        start.requested(&idle);
        let mut seen = idle.clone();
        start.observe(&mut seen);
        assert!(seen.running, "accepted but not yet begun");

        // The engine shows the pass (here: it already completed): the
        // engine's status is reported as it is from then on.
        let done = ScrubStatus {
            passes_completed: 2,
            last_started_unix_s: Some(100),
            ..ScrubStatus::default()
        };
        let mut seen = done.clone();
        start.observe(&mut seen);
        assert!(!seen.running);
        let mut again = idle;
        start.observe(&mut again);
        assert!(!again.running, "the request is forgotten once shown");
    }
}
