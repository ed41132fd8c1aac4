//! The per-controller Error Information log (log page 01h, NVMe Base 2.0
//! section 5.16.1.2): a bounded ring of the most recent failed commands.
//!
//! Every command that completes with an error status on a queue bound to a
//! controller is recorded with its queue, command id, status, namespace and LBA;
//! the completion then carries the More bit so the host knows to look here.
//! INVARIANT: the ring never holds more than [`ERROR_LOG_ENTRIES`] entries, and
//! error counts are unique and increasing, so the page reads newest first.

use std::collections::VecDeque;

use crate::nvme::log_page::{ErrorInformationEntry, ERROR_ENTRY_LEN, ERROR_LOCATION_NONE};
use crate::status::Status;

/// Entries kept per controller (Identify ELPE reports this minus one).
pub(crate) const ERROR_LOG_ENTRIES: usize = 64;

/// The error ring of one controller.
pub(crate) struct ErrorLog {
    /// Newest first.
    entries: VecDeque<ErrorInformationEntry>,
    /// Error count of the newest entry (0 before the first error).
    count: u64,
}

impl ErrorLog {
    pub fn new() -> ErrorLog {
        ErrorLog {
            entries: VecDeque::with_capacity(ERROR_LOG_ENTRIES),
            count: 0,
        }
    }

    /// Records `entry` under the next error count, dropping the oldest entry
    /// when the ring is full; returns the error count given.
    pub fn record(&mut self, mut entry: ErrorInformationEntry) -> u64 {
        // Zero marks an unused entry, so a (theoretical) wrap skips it.
        self.count = self.count.wrapping_add(1).max(1);
        entry.error_count = self.count;
        if self.entries.len() == ERROR_LOG_ENTRIES {
            self.entries.pop_back();
        }
        self.entries.push_front(entry);
        assert!(self.entries.len() <= ERROR_LOG_ENTRIES);
        self.count
    }

    /// Errors recorded over the controller's life.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The whole log page: [`ERROR_LOG_ENTRIES`] entries, newest first, unused
    /// entries zeroed (error count 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; ERROR_LOG_ENTRIES * ERROR_ENTRY_LEN];
        for (slot, entry) in page.chunks_exact_mut(ERROR_ENTRY_LEN).zip(&self.entries) {
            slot.copy_from_slice(&entry.encode());
        }
        page
    }
}

/// The submission queue entry field an error status points at (Parameter
/// Error Location: byte in bits 7:0, bit in bits 10:8), where one field is to
/// blame; [`ERROR_LOCATION_NONE`] otherwise.
pub(crate) fn parameter_error_location(status: Status) -> u16 {
    match status {
        // OPC, byte 0.
        Status::InvalidOpcode => 0,
        // NSID, bytes 4..8.
        Status::InvalidNamespace => 4,
        // DPTR: the SGL address (24), length (32) and identifier (39) bytes.
        Status::SglOffsetInvalid => 24,
        Status::SglLengthInvalid => 32,
        Status::SglDescriptorTypeInvalid => 39,
        // SLBA, CDW10..11.
        Status::LbaOutOfRange => 40,
        Status::Success
        | Status::InvalidField
        | Status::CommandIdConflict
        | Status::DataTransferError
        | Status::InternalError
        | Status::AbortRequested
        | Status::CommandSequenceError
        | Status::CapacityExceeded
        | Status::NamespaceNotReady
        | Status::AerLimitExceeded
        | Status::InvalidLogPage
        | Status::FeatureNotSaveable
        | Status::ConnectIncompatibleFormat
        | Status::ConnectControllerBusy
        | Status::ConnectInvalidParameters
        | Status::ConnectInvalidHost
        | Status::DisconnectInvalidQueueType
        | Status::WriteFault
        | Status::UnrecoveredReadError
        | Status::TransientTransportError
        | Status::AnaPersistentLoss
        | Status::AnaInaccessible
        | Status::AnaTransition => ERROR_LOCATION_NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cid: u16) -> ErrorInformationEntry {
        ErrorInformationEntry {
            error_count: 0,
            sqid: 1,
            cid,
            status_field: Status::LbaOutOfRange.field(),
            parameter_error_location: 40,
            lba: u64::from(cid),
            nsid: 1,
            trtype: 3,
        }
    }

    fn decode(page: &[u8]) -> Vec<ErrorInformationEntry> {
        page.chunks_exact(ERROR_ENTRY_LEN)
            .filter_map(ErrorInformationEntry::decode)
            .collect()
    }

    #[test]
    fn page_lists_newest_first_and_zeroes_unused_entries() {
        let mut log = ErrorLog::new();
        assert_eq!(log.record(entry(10)), 1);
        assert_eq!(log.record(entry(11)), 2);
        let page = log.encode();
        assert_eq!(page.len(), ERROR_LOG_ENTRIES * ERROR_ENTRY_LEN);
        let entries = decode(&page);
        assert_eq!((entries[0].error_count, entries[0].cid), (2, 11));
        assert_eq!((entries[1].error_count, entries[1].cid), (1, 10));
        assert!(entries[2..].iter().all(|e| e.error_count == 0));
    }

    #[test]
    fn ring_keeps_only_the_most_recent_entries() {
        let mut log = ErrorLog::new();
        for cid in 0..150u16 {
            log.record(entry(cid));
        }
        assert_eq!(log.count(), 150);
        let entries = decode(&log.encode());
        assert_eq!(entries.len(), ERROR_LOG_ENTRIES);
        let counts: Vec<u64> = entries.iter().map(|e| e.error_count).collect();
        let expected: Vec<u64> = (150 - ERROR_LOG_ENTRIES as u64 + 1..=150).rev().collect();
        assert_eq!(counts, expected);
        assert_eq!(entries[0].cid, 149);
    }

    #[test]
    fn locations_point_at_the_blamed_field() {
        assert_eq!(parameter_error_location(Status::LbaOutOfRange), 40);
        assert_eq!(parameter_error_location(Status::InvalidNamespace), 4);
        assert_eq!(
            parameter_error_location(Status::UnrecoveredReadError),
            ERROR_LOCATION_NONE
        );
    }
}
