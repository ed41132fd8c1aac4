//! Rate-limited reporting of the connections the acceptor refused or evicted.
//!
//! Why: a peer opening connections in a loop would otherwise write a log line
//! per attempt, and the log becomes the resource that runs out. The first
//! refusal after a quiet interval is reported at once; later ones are counted
//! and summarised at most once per interval. Sans-IO: the caller passes the
//! time and logs the [`Summary`] it gets back.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Shortest time between two summaries.
pub(super) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Why the acceptor turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The peer already had its share of connections.
    PeerFull,
    /// The table was full of connections past their handshake.
    TableFull,
    /// An older connection still in its handshake was closed to make room.
    Evicted,
    /// `accept` itself failed (out of descriptors, for one).
    AcceptFailed,
}

/// What happened since the last summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Summary {
    /// Connections refused because their peer was at its cap.
    pub peer_full: u64,
    /// Connections refused because the table was full.
    pub table_full: u64,
    /// Connections closed in their handshake to make room.
    pub evicted: u64,
    /// Failed accepts.
    pub accept_failed: u64,
    /// The peer of the last refusal or eviction, if known.
    pub last_peer: Option<IpAddr>,
}

impl Summary {
    fn is_empty(&self) -> bool {
        self.peer_full == 0 && self.table_full == 0 && self.evicted == 0 && self.accept_failed == 0
    }
}

/// Counts refusals and decides when to report them.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    pending: Summary,
    last_report: Option<Instant>,
}

impl RefusalLog {
    /// Counts one refusal (from `peer`, when known); returns a summary to log
    /// if one is due.
    pub fn record(
        &mut self,
        refusal: Refusal,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Option<Summary> {
        let count = match refusal {
            Refusal::PeerFull => &mut self.pending.peer_full,
            Refusal::TableFull => &mut self.pending.table_full,
            Refusal::Evicted => &mut self.pending.evicted,
            Refusal::AcceptFailed => &mut self.pending.accept_failed,
        };
        *count = count.saturating_add(1);
        if peer.is_some() {
            self.pending.last_peer = peer;
        }
        self.due(now)
    }

    /// Returns the summary of what was counted if the last one is at least
    /// [`SUMMARY_INTERVAL`] old (or there was none); call it now and then so
    /// the tail of a burst is reported too.
    pub fn due(&mut self, now: Instant) -> Option<Summary> {
        if self.pending.is_empty() {
            return None;
        }
        if let Some(last) = self.last_report {
            if now.saturating_duration_since(last) < SUMMARY_INTERVAL {
                return None;
            }
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// Logs `summary` as one line.
pub(super) fn log(summary: &Summary) {
    tracing::warn!(
        refused_peer_full = summary.peer_full,
        refused_table_full = summary.table_full,
        evicted_in_handshake = summary.evicted,
        accept_failed = summary.accept_failed,
        last_peer = ?summary.last_peer,
        interval_s = SUMMARY_INTERVAL.as_secs(),
        "connections refused (summarised at most once per interval)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_reported_at_once_and_a_burst_once_per_interval() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let peer = Some(IpAddr::from([10, 0, 0, 9]));
        let first = log.record(Refusal::TableFull, peer, t0).expect("reported");
        assert_eq!(first.table_full, 1);
        assert_eq!(first.last_peer, peer);
        // A burst inside the interval: counted, not reported.
        for i in 0..1000u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(log.record(Refusal::PeerFull, peer, at), None);
        }
        log.record(Refusal::Evicted, None, t0 + Duration::from_secs(1));
        assert_eq!(
            log.due(t0 + SUMMARY_INTERVAL - Duration::from_millis(1)),
            None
        );
        let tail = log
            .due(t0 + SUMMARY_INTERVAL)
            .expect("the tail is reported");
        assert_eq!(
            tail,
            Summary {
                peer_full: 1000,
                table_full: 0,
                evicted: 1,
                accept_failed: 0,
                last_peer: peer,
            }
        );
        // Nothing new: nothing to report, however long it has been.
        assert_eq!(log.due(t0 + SUMMARY_INTERVAL * 5), None);
    }

    #[test]
    fn a_refusal_after_a_quiet_interval_is_reported_at_once() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert!(log.record(Refusal::AcceptFailed, None, t0).is_some());
        let later = t0 + SUMMARY_INTERVAL * 3;
        let s = log
            .record(Refusal::PeerFull, None, later)
            .expect("reported");
        assert_eq!((s.peer_full, s.accept_failed), (1, 0));
    }
}
