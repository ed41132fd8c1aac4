//! Entry points shared by the cargo-fuzz target (`fuzz/fuzz_targets/pdu_decode.rs`)
//! and the proptest that runs the same code on stable: hostile bytes in, no
//! panic and bounded memory out. The host side's ANA log page decoder rides
//! along, since it too reads bytes a peer chose.

mod session;

pub use session::{drive_session, SessionReport};

use std::sync::Arc;
use std::time::Instant;

use crate::connection::{Connection, ConnectionContext, Limits, PortKind};
use crate::nvme::log_page::{AnaLog, AnaState};
use crate::pdu::{self, DecodeLimits, Digests, IcReq};
use crate::subsystem::{HostAcl, NamespaceOptions, Subsystem, SubsystemConfig};
use crate::{BlockSize, MemoryNamespace};

fn digests(selector: u8) -> Digests {
    Digests {
        header: selector & 1 != 0,
        data: selector & 2 != 0,
    }
}

/// The context of a fuzzed connection to `subsystem`: small data limits so
/// hostile lengths meet them, loopback addresses, no-op wake-ups.
pub(crate) fn context(subsystem: Arc<Subsystem>) -> ConnectionContext {
    ConnectionContext {
        subsystem,
        limits: Limits {
            maxh2cdata: 8192,
            write_buffer_max: 64 * 1024,
            ..Limits::default()
        },
        port_kind: PortKind::Io,
        local_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 4420)),
        peer_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 50000)),
        io_listeners: Arc::new(vec![std::net::SocketAddr::from(([0, 0, 0, 0], 4420))]),
        advertised_addr: None,
        notifier: Arc::new(|| {}),
        handshake_timeout: crate::reactors::DEFAULT_HANDSHAKE_TIMEOUT,
        discovery_keep_alive: crate::reactors::DEFAULT_DISCOVERY_KEEP_ALIVE,
    }
}

/// Runs the namespace I/O `conn` started (the in-memory namespace answers
/// at once) and hands the completions back, a bounded number of rounds.
pub(crate) fn run_io(conn: &mut Connection, now: Instant) {
    for _ in 0..64 {
        let requests = conn.take_io_requests();
        if requests.is_empty() {
            break;
        }
        for req in requests {
            let (tx, rx) = std::sync::mpsc::channel();
            req.start(move |tag, result| {
                let _ = tx.send((tag, result));
            });
            while let Ok((tag, result)) = rx.try_recv() {
                conn.complete_io(tag, result, now);
            }
        }
    }
}

/// Decodes `bytes` as a stream of PDUs until an error or incomplete input.
/// Returns the number of PDUs decoded.
pub fn decode_stream(selector: u8, bytes: &[u8]) -> usize {
    let limits = DecodeLimits {
        capsule_data_max: 8192,
        data_pdu_max: 64 * 1024,
    };
    let mut rest = bytes;
    let mut count = 0;
    while let Ok(Some(d)) = pdu::decode(rest, digests(selector), &limits) {
        assert!(d.len > 0 && d.len <= rest.len());
        rest = &rest[d.len..];
        count += 1;
    }
    count
}

/// Decodes `bytes` as an ANA log page, as the host side does with what a
/// controller returns. Returns whether it decoded.
pub fn decode_ana_log(bytes: &[u8]) -> bool {
    match AnaLog::decode(bytes) {
        Ok(log) => {
            assert!(log.encode(false).len() <= bytes.len());
            true
        }
        Err(_) => false,
    }
}

/// Feeds `bytes` to a target connection that has completed ICReq/ICResp with
/// the digests `selector` picks, completing every namespace I/O it starts.
/// Selector bit 2 turns ANA reporting on, bit 3 makes the namespace
/// inaccessible on this path.
pub fn drive_connection(selector: u8, bytes: &[u8]) {
    let mut config = SubsystemConfig::new("nqn.2024-01.io.keel:fuzz", "FUZZ");
    config.ana_reporting = selector & 4 != 0;
    let subsystem = Subsystem::new(config);
    let ns = MemoryNamespace::new(BlockSize::B512, 64, [7; 16]);
    let ana_state = if selector & 8 != 0 {
        AnaState::Inaccessible
    } else {
        AnaState::Optimized
    };
    let options = NamespaceOptions::new(HostAcl::AnyHost).with_ana_state(ana_state);
    if subsystem.add_namespace(1, ns, options).is_err() {
        return;
    }
    let ctx = context(subsystem);
    let mut conn = Connection::new(ctx);
    let mut icreq = Vec::new();
    IcReq {
        pfv: 0,
        hpda: selector >> 4 & 0x3,
        digests: digests(selector),
        maxr2t: 0,
    }
    .encode(&mut icreq);
    let now = Instant::now();
    conn.receive(&icreq, now);
    // Feed in a few differently sized pieces to exercise reassembly.
    let split = bytes.len() / 2;
    for piece in [&bytes[..split], &bytes[split..]] {
        conn.receive(piece, now);
        run_io(&mut conn, now);
        let out = conn.take_output();
        let n: usize = out.iter().map(|b| b.len()).sum();
        conn.consumed_output(n);
        conn.tick(now);
    }
    conn.peer_closed();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The session target's seed corpus (kept in git beside the fuzz
    /// targets) replays on stable, and its seeds reach the commands.
    #[test]
    fn the_session_seed_corpus_replays_and_reaches_the_commands() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/session");
        let mut seeds = 0;
        let mut succeeded = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
            let bytes = std::fs::read(entry.expect("a seed").path()).expect("a seed's bytes");
            let Some((&selector, script)) = bytes.split_first() else {
                continue;
            };
            let report = drive_session(selector, script);
            assert!(report.io_queue_connected);
            seeds += 1;
            succeeded += report.succeeded;
        }
        assert!(
            seeds >= 4 && succeeded >= 8,
            "{seeds} seeds, {succeeded} commands succeeded"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn hostile_streams_never_panic(selector in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            decode_stream(selector, &bytes);
            drive_connection(selector, &bytes);
            decode_ana_log(&bytes);
        }

        #[test]
        fn hostile_sessions_past_connect_never_panic(selector in any::<u8>(), script in proptest::collection::vec(any::<u8>(), 0..4096)) {
            drive_session(selector, &script);
        }

        #[test]
        fn hostile_capsules_after_valid_headers_never_panic(selector in any::<u8>(), sqe in proptest::collection::vec(any::<u8>(), 64), data in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let mut full = [0u8; 64];
            full.copy_from_slice(&sqe);
            let mut bytes = Vec::new();
            crate::pdu::CapsuleCmd { sqe: full, data: &data }.encode(digests(selector), &mut bytes);
            drive_connection(selector, &bytes);
        }
    }
}
