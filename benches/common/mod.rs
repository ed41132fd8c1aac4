//! What the engine benches share: the loop that keeps N operations in flight
//! from one thread ([`load`]), the figures a run is summarised into
//! ([`figures`]), the same loop over an NVMe/TCP I/O queue of the crate's
//! own host ([`host_load`]), and the small knobs every bench reads (environment numbers,
//! the directory of its pool file, a reproducible random sequence), and the
//! end-to-end benches' child processes and free ports ([`process`]).
//!
//! Each bench target includes this module with `mod common;` (cargo builds only
//! the top-level files of `benches/` as targets, so this directory is none) and
//! keeps its own rules — when to stop submitting, what counts as an error, what
//! it samples — in the closures it hands to [`load::keep_in_flight`].
// Every bench target compiles the whole module and uses a part of it.
#![allow(dead_code)]

pub mod figures;
pub mod host_load;
pub mod load;
pub mod loopback;
pub mod process;

use std::path::PathBuf;

/// The number in environment variable `name`, or `default` when it is unset or
/// not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Where a bench puts its pool file: `KEEL_BENCH_DIR`, default `target/`.
pub fn bench_dir() -> PathBuf {
    std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// xorshift64: cheap and reproducible, so two runs visit the same addresses.
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The seed the benches start their address sequences from.
    pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The next number of the sequence (the state must not be 0).
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
