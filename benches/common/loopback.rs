//! The floor of any target's round trip here: a blocking TCP ping-pong over
//! loopback with a 4 KiB read's sizes.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::figures::{Figures, Latencies, Precision};

/// A 4 KiB read's bytes on the wire: a 72-byte command capsule out, and back a
/// C2HData PDU (24-byte header and the data) and a 24-byte response capsule.
pub const PING_BYTES: usize = 72;
pub const PONG_BYTES: usize = 24 + 4096 + 24;

/// Mean round trip of a blocking TCP ping-pong over loopback with a 4 KiB
/// read's sizes, one exchange in flight: what two threads and the kernel's
/// TCP stack cost per I/O before any protocol or storage work.
pub fn tcp_ping_pong(run: Duration) -> Figures {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let addr = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let mut ping = [0u8; PING_BYTES];
        let pong = vec![0x5Au8; PONG_BYTES];
        while socket.read_exact(&mut ping).is_ok() {
            if socket.write_all(&pong).is_err() {
                break;
            }
        }
    });
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let ping = [0xA5u8; PING_BYTES];
    let mut pong = vec![0u8; PONG_BYTES];
    let mut latencies = Latencies::with_capacity(1 << 20);
    let started = Instant::now();
    while started.elapsed() < run {
        let sent = Instant::now();
        socket.write_all(&ping).expect("ping");
        socket.read_exact(&mut pong).expect("pong");
        latencies.record(sent.elapsed());
    }
    let elapsed = started.elapsed();
    drop(socket);
    server.join().expect("ping-pong server");
    Figures::of(latencies, Precision::Nanos, 4096, elapsed)
}
