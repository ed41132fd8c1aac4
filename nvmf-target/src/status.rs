//! NVMe completion statuses and the one place errors become statuses.
//!
//! Each [`Status`] knows its Status Code Type (SCT), Status Code (SC) and whether
//! the Do Not Retry bit is set (NVMe Base 2.0, section 3.3.3.2). The mapping from
//! [`NamespaceError`] is a single exhaustive `match` so a new error variant cannot
//! silently fall into a generic code, and so is the one from an [`AnaState`]
//! to the status an I/O command gets on that path.

use crate::backend::NamespaceError;
use crate::nvme::log_page::AnaState;

/// A completion status the target reports or the host side decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Successful completion (SCT 0, SC 00h).
    Success,
    /// Invalid Command Opcode (SCT 0, SC 01h).
    InvalidOpcode,
    /// Invalid Field in Command (SCT 0, SC 02h).
    InvalidField,
    /// Command ID Conflict (SCT 0, SC 03h).
    CommandIdConflict,
    /// Data Transfer Error (SCT 0, SC 04h).
    DataTransferError,
    /// Internal Error (SCT 0, SC 06h).
    InternalError,
    /// Command Abort Requested (SCT 0, SC 07h).
    AbortRequested,
    /// Invalid Namespace or Format (SCT 0, SC 0Bh).
    InvalidNamespace,
    /// Command Sequence Error (SCT 0, SC 0Ch).
    CommandSequenceError,
    /// Data SGL Length Invalid (SCT 0, SC 0Fh).
    SglLengthInvalid,
    /// SGL Descriptor Type Invalid (SCT 0, SC 11h).
    SglDescriptorTypeInvalid,
    /// SGL Offset Invalid (SCT 0, SC 16h).
    SglOffsetInvalid,
    /// LBA Out of Range (SCT 0, SC 80h).
    LbaOutOfRange,
    /// Capacity Exceeded (SCT 0, SC 81h).
    CapacityExceeded,
    /// Namespace Not Ready (SCT 0, SC 82h).
    NamespaceNotReady,
    /// Asynchronous Event Request Limit Exceeded (SCT 1, SC 05h).
    AerLimitExceeded,
    /// Invalid Log Page (SCT 1, SC 09h).
    InvalidLogPage,
    /// Feature Identifier Not Saveable (SCT 1, SC 0Dh).
    FeatureNotSaveable,
    /// Connect Incompatible Format (SCT 1, SC 80h).
    ConnectIncompatibleFormat,
    /// Connect Controller Busy (SCT 1, SC 81h).
    ConnectControllerBusy,
    /// Connect Invalid Parameters (SCT 1, SC 82h); DW0 carries IATTR/IPO.
    ConnectInvalidParameters,
    /// Connect Invalid Host (SCT 1, SC 84h).
    ConnectInvalidHost,
    /// Invalid Queue Type (SCT 1, SC 85h): a Disconnect sent on the admin
    /// queue, which only I/O queues may be disconnected from.
    DisconnectInvalidQueueType,
    /// Write Fault (SCT 2, SC 80h).
    WriteFault,
    /// Unrecovered Read Error (SCT 2, SC 81h).
    UnrecoveredReadError,
    /// Transient Transport Error (SCT 3, SC 22h).
    TransientTransportError,
    /// Asymmetric Access Persistent Loss (SCT 3, SC 01h): path related.
    AnaPersistentLoss,
    /// Asymmetric Access Inaccessible (SCT 3, SC 02h): path related.
    AnaInaccessible,
    /// Asymmetric Access Transition (SCT 3, SC 03h): path related.
    AnaTransition,
}

impl Status {
    /// Status Code Type and Status Code.
    pub fn sct_sc(self) -> (u8, u8) {
        match self {
            Status::Success => (0, 0x00),
            Status::InvalidOpcode => (0, 0x01),
            Status::InvalidField => (0, 0x02),
            Status::CommandIdConflict => (0, 0x03),
            Status::DataTransferError => (0, 0x04),
            Status::InternalError => (0, 0x06),
            Status::AbortRequested => (0, 0x07),
            Status::InvalidNamespace => (0, 0x0B),
            Status::CommandSequenceError => (0, 0x0C),
            Status::SglLengthInvalid => (0, 0x0F),
            Status::SglDescriptorTypeInvalid => (0, 0x11),
            Status::SglOffsetInvalid => (0, 0x16),
            Status::LbaOutOfRange => (0, 0x80),
            Status::CapacityExceeded => (0, 0x81),
            Status::NamespaceNotReady => (0, 0x82),
            Status::AerLimitExceeded => (1, 0x05),
            Status::InvalidLogPage => (1, 0x09),
            Status::FeatureNotSaveable => (1, 0x0D),
            Status::ConnectIncompatibleFormat => (1, 0x80),
            Status::ConnectControllerBusy => (1, 0x81),
            Status::ConnectInvalidParameters => (1, 0x82),
            Status::ConnectInvalidHost => (1, 0x84),
            Status::DisconnectInvalidQueueType => (1, 0x85),
            Status::WriteFault => (2, 0x80),
            Status::UnrecoveredReadError => (2, 0x81),
            Status::TransientTransportError => (3, 0x22),
            Status::AnaPersistentLoss => (3, 0x01),
            Status::AnaInaccessible => (3, 0x02),
            Status::AnaTransition => (3, 0x03),
        }
    }

    /// Whether the host should not retry the command (DNR). Path related
    /// statuses never set it: Linux checks DNR before it considers failing
    /// the command over to another path, so DNR would fail the I/O instead.
    pub fn do_not_retry(self) -> bool {
        !matches!(
            self,
            Status::Success
                | Status::NamespaceNotReady
                | Status::TransientTransportError
                | Status::AbortRequested
                | Status::ConnectControllerBusy
                | Status::InternalError
                | Status::AnaPersistentLoss
                | Status::AnaInaccessible
                | Status::AnaTransition
        )
    }

    /// The status of an I/O command on a namespace whose ANA state is
    /// `state`: `None` when the state lets I/O through.
    pub fn for_ana_state(state: AnaState) -> Option<Status> {
        match state {
            AnaState::Optimized | AnaState::NonOptimized => None,
            AnaState::Inaccessible => Some(Status::AnaInaccessible),
            AnaState::PersistentLoss => Some(Status::AnaPersistentLoss),
            AnaState::Change => Some(Status::AnaTransition),
        }
    }

    /// Whether this is an Asymmetric Namespace Access status: the path (this
    /// controller) cannot serve the namespace now, another path may.
    pub fn is_ana_path_error(self) -> bool {
        matches!(
            self,
            Status::AnaPersistentLoss | Status::AnaInaccessible | Status::AnaTransition
        )
    }

    /// The 15-bit status field (bits 15:1 of CQE DW3 upper half, without the phase
    /// tag), i.e. the value to shift left by one into the CQE.
    pub fn field(self) -> u16 {
        let (sct, sc) = self.sct_sc();
        let dnr = if self.do_not_retry() { 1u16 << 14 } else { 0 };
        dnr | (u16::from(sct & 0x7) << 8) | u16::from(sc)
    }

    /// Decodes a status field (as produced by [`Status::field`]), ignoring DNR/More/CRD.
    pub fn from_field(field: u16) -> Result<Status, UnknownStatus> {
        let sct = ((field >> 8) & 0x7) as u8;
        let sc = (field & 0xFF) as u8;
        ALL.iter()
            .copied()
            .find(|s| s.sct_sc() == (sct, sc))
            .ok_or(UnknownStatus { sct, sc })
    }

    /// True for [`Status::Success`].
    pub fn is_success(self) -> bool {
        self == Status::Success
    }
}

/// A status field this crate has no [`Status`] variant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown NVMe status sct {sct:#x} sc {sc:#x}")]
pub struct UnknownStatus {
    /// Status Code Type.
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
}

const ALL: [Status; 29] = [
    Status::Success,
    Status::InvalidOpcode,
    Status::InvalidField,
    Status::CommandIdConflict,
    Status::DataTransferError,
    Status::InternalError,
    Status::AbortRequested,
    Status::InvalidNamespace,
    Status::CommandSequenceError,
    Status::SglLengthInvalid,
    Status::SglDescriptorTypeInvalid,
    Status::SglOffsetInvalid,
    Status::LbaOutOfRange,
    Status::CapacityExceeded,
    Status::NamespaceNotReady,
    Status::AerLimitExceeded,
    Status::InvalidLogPage,
    Status::FeatureNotSaveable,
    Status::ConnectIncompatibleFormat,
    Status::ConnectControllerBusy,
    Status::ConnectInvalidParameters,
    Status::ConnectInvalidHost,
    Status::DisconnectInvalidQueueType,
    Status::WriteFault,
    Status::UnrecoveredReadError,
    Status::TransientTransportError,
    Status::AnaPersistentLoss,
    Status::AnaInaccessible,
    Status::AnaTransition,
];

impl From<&NamespaceError> for Status {
    fn from(err: &NamespaceError) -> Status {
        match err {
            NamespaceError::OutOfRange { .. } => Status::LbaOutOfRange,
            NamespaceError::Media { .. } => Status::UnrecoveredReadError,
            NamespaceError::NoSpace => Status::CapacityExceeded,
            NamespaceError::Fenced => Status::WriteFault,
            NamespaceError::Device => Status::InternalError,
            NamespaceError::Invalid => Status::InvalidField,
            NamespaceError::PathUnavailable => Status::AnaInaccessible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Lba;

    #[test]
    fn every_status_round_trips_through_its_field() {
        for s in ALL {
            assert_eq!(Status::from_field(s.field()), Ok(s));
        }
    }

    #[test]
    fn connect_invalid_host_matches_linux_encoding() {
        // Linux: NVME_SC_CONNECT_INVALID_HOST = 0x184, DNR = 0x4000.
        assert_eq!(Status::ConnectInvalidHost.field(), 0x4184);
        assert_eq!(Status::LbaOutOfRange.field(), 0x4080);
        assert_eq!(Status::UnrecoveredReadError.field(), 0x4281);
    }

    #[test]
    fn ana_states_map_to_path_related_statuses_without_dnr() {
        // Linux: NVME_SC_ANA_PERSISTENT_LOSS 0x301, _INACCESSIBLE 0x302,
        // _TRANSITION 0x303; nvme_is_path_error tests SCT 3.
        let field = |state| Status::for_ana_state(state).map(Status::field);
        assert_eq!(field(AnaState::PersistentLoss), Some(0x301));
        assert_eq!(field(AnaState::Inaccessible), Some(0x302));
        assert_eq!(field(AnaState::Change), Some(0x303));
        assert_eq!(field(AnaState::Optimized), None);
        assert_eq!(field(AnaState::NonOptimized), None);
        assert!(Status::AnaInaccessible.is_ana_path_error());
        assert!(!Status::NamespaceNotReady.is_ana_path_error());
    }

    #[test]
    fn namespace_errors_map_to_distinct_statuses() {
        assert_eq!(
            Status::from(&NamespaceError::OutOfRange {
                lba: Lba(1),
                blocks: 1
            }),
            Status::LbaOutOfRange
        );
        assert_eq!(
            Status::from(&NamespaceError::Media { lba: Lba(1) }),
            Status::UnrecoveredReadError
        );
        assert_eq!(
            Status::from(&NamespaceError::NoSpace),
            Status::CapacityExceeded
        );
        assert_eq!(Status::from(&NamespaceError::Fenced), Status::WriteFault);
        assert_eq!(Status::from(&NamespaceError::Device), Status::InternalError);
        assert_eq!(Status::from(&NamespaceError::Invalid), Status::InvalidField);
        assert_eq!(
            Status::from(&NamespaceError::PathUnavailable),
            Status::AnaInaccessible
        );
    }
}
