//! Ports for listeners a test must name before they start (a server that is
//! restarted where its peers know it, or a process that only takes a port
//! number). They come from below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768 and up by default): a port that
//! binding port 0 found free is an ephemeral one, which any process's
//! outgoing connection may take before the server binds it; one from below
//! the range only a listener can.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, TcpListener};

/// The ports tried: below the default ephemeral range, above the ones
/// services commonly take.
const RANGE: std::ops::Range<u16> = 10_000..32_768;
/// Sets of ports tried before giving up.
const TRIES_MAX: usize = 1000;

/// `N` distinct loopback ports nothing listens on right now.
pub fn unused_ports<const N: usize>() -> [u16; N] {
    unused_ports_on(Ipv4Addr::LOCALHOST.into())
}

/// `N` distinct ports on `ip` nothing listens on right now: all bound at once
/// (so none repeats), then released. Each process starts at its own random
/// place in the range, so parallel tests rarely try the same ports.
pub fn unused_ports_on<const N: usize>(ip: IpAddr) -> [u16; N] {
    let span = u64::from(RANGE.end - RANGE.start);
    let mut at = RandomState::new().hash_one(std::process::id()) % span;
    for _ in 0..TRIES_MAX {
        let ports: [u16; N] =
            std::array::from_fn(|i| RANGE.start + ((at + i as u64) % span) as u16);
        at = (at + N as u64) % span;
        let held: Vec<TcpListener> = ports
            .iter()
            .filter_map(|port| TcpListener::bind((ip, *port)).ok())
            .collect();
        if held.len() == N {
            return ports;
        }
    }
    panic!("no {N} unused ports on {ip} in {RANGE:?}");
}
