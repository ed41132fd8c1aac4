//! The log-structured block engine. Turns files or raw block devices into thin
//! volumes: every change is appended as a checksummed record to a log of segments,
//! an in-memory index maps each volume block to its newest record, and checkpoints
//! bound recovery time. Knows nothing of NVMe, HTTP or async runtimes; the public
//! API is completion-based so callers on reactor threads never block.
#![deny(unsafe_code)]

pub mod format;
pub mod io;
pub mod units;
