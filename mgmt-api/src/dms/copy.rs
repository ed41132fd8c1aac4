//! The port a cross-cluster thick clone copies data through: this node as
//! an NVMe/TCP host reading one cluster's namespace and writing another's.
//! The composition root implements it over the NVMe/TCP host of
//! `nvmf-target`; without one, clones between clusters are refused.

/// A namespace as a host reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNamespace {
    /// The I/O portal, `host:port`.
    pub portal: String,
    /// The subsystem NQN.
    pub subsystem_nqn: String,
    /// The namespace id.
    pub nsid: u32,
}

/// One copy: `bytes` from `source` to `destination` in blocks of
/// `block_size`, as host `host_nqn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOrder {
    /// The NQN the copying host connects as (both volumes grant it).
    pub host_nqn: String,
    /// Where the data is read.
    pub source: RemoteNamespace,
    /// Where it is written.
    pub destination: RemoteNamespace,
    /// How many bytes (a whole number of blocks).
    pub bytes: u64,
    /// The namespaces' block size.
    pub block_size: u32,
    /// Read the destination back and compare it with the source.
    pub verify: bool,
}

/// Copies blocks between namespaces over NVMe/TCP.
pub trait BlockCopier: Send + Sync + std::fmt::Debug {
    /// Runs `order`, calling `progress` with the bytes done so far after
    /// each chunk; `progress` answering false stops the copy (canceled).
    /// Blocks until done. The destination must read as zeros where the
    /// source does: blocks of zeros are skipped, so a thin source stays
    /// thin.
    fn copy(
        &self,
        order: &CopyOrder,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<CopyOutcome, String>;
}

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Every byte copied (and, when asked, verified).
    Done,
    /// `progress` asked to stop.
    Stopped,
}
