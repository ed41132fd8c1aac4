//! What the end-to-end benches need around the processes they start: free
//! loopback ports, children that die with the bench, and the machine's load
//! recorded beside each figure.

use std::net::{SocketAddr, TcpListener};
use std::process::Child;

/// A loopback address with a port nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A child process killed (and reaped) when dropped, so a bench that fails
/// leaves no keeld or etcd behind.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
