//! Peers that hold connections without speaking, against the real target over
//! loopback: they cannot keep a real host (this crate's host side) out, a
//! connection that never finishes its handshake is closed after the
//! configured timeout, and one address cannot take more than its share of
//! the connection table. Every test runs once per reactor backend.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nvmf_target::host::{HostController, IoQueue};
use nvmf_target::nvme::DISCOVERY_NQN;
use nvmf_target::pdu::{Digests, IcReq};
use nvmf_target::{Lba, ReactorKind};

use common::{pattern, wait_until, Fixture, HOST_A};

/// A second loopback address: a peer other than the host's 127.0.0.1.
const OTHER_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Bound on how long a test waits for the target to close a socket: the
/// failure bound of a wait, never a measure of speed.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A TCP connection to `to` from address `from` (port chosen by the kernel).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind a loopback source address");
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// True once the target has closed `stream` (end of stream or a reset);
/// fails the test if nothing happens within [`CLOSE_WAIT`].
fn closed_by_target(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // Bytes (an ICResp) mean the target answered: not closed.
            Ok(_) => return false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("waiting for the target to close a connection: {e}"),
        }
    }
}

fn icreq_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }
    .encode(&mut out);
    out
}

/// Connects as a host with I/O queue 1 and no keep-alive timeout, so a
/// loaded machine that stalls the test between commands cannot expire it.
fn connect_host(f: &Fixture) -> (HostController, IoQueue) {
    let mut o = f.options(HOST_A);
    o.kato_ms = 0;
    let mut c = HostController::connect(f.addr(), o).unwrap();
    c.set_queue_count(1).unwrap();
    let q = c.connect_io_queue(1).unwrap();
    (c, q)
}

/// Connects as a host with I/O queue 1 and checks a write reads back.
fn host_does_io(f: &Fixture, seed: u8) {
    let (_c, mut q) = connect_host(f);
    let data = pattern(4096, seed);
    q.write(1, Lba(u64::from(seed)), data.clone(), 512).unwrap();
    assert_eq!(q.read(1, Lba(u64::from(seed)), 8, 512).unwrap(), data);
}

fn idle_connections_do_not_keep_a_host_out(kind: ReactorKind) {
    const TABLE: usize = 16;
    const IDLE: usize = 300;
    let f = Fixture::configured(kind, |c| {
        c.connections_max = TABLE;
        c.connections_per_peer_max = IDLE;
        // Long enough never to close the idle connections itself: eviction
        // alone must let the host in.
        c.handshake_timeout = Duration::from_secs(600);
        c.discovery_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    });
    let io_port = f.addr();
    let discovery_port = f.target.discovery_addrs()[0];
    // A flood of connections that never send ICReq, to both kinds of port:
    // far more than the table holds.
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let to = if i % 2 == 0 { io_port } else { discovery_port };
            TcpStream::connect(to).unwrap()
        })
        .collect();
    wait_until("the acceptor to place every idle connection", || {
        f.target.stats().connections_evicted == IDLE - TABLE
    });
    // The host's two connections (admin and I/O queue) take the places of
    // two idle ones.
    host_does_io(&f, 1);
    wait_until("the host's and the evicted connections to close", || {
        f.target.stats().connections == TABLE - 2
    });
    // A second flood while a host holds its connections: the host's
    // finished handshakes are never what gives way.
    let (_c, mut q) = connect_host(&f);
    let evicted = f.target.stats().connections_evicted;
    idle.extend((0..IDLE).map(|_| TcpStream::connect(io_port).unwrap()));
    wait_until("the acceptor to place the second flood", || {
        f.target.stats().connections_evicted == evicted + IDLE
    });
    let data = pattern(4096, 2);
    q.write(1, Lba(64), data.clone(), 512).unwrap();
    assert_eq!(q.read(1, Lba(64), 8, 512).unwrap(), data);
    wait_until("evicted connections to close", || {
        f.target.stats().connections <= TABLE
    });
    assert_eq!(f.target.stats().connections_refused, 0);
    // The evicted connections really were closed by the target.
    assert!(closed_by_target(&mut idle[0]));
}

fn a_connection_that_never_finishes_its_handshake_is_closed(kind: ReactorKind) {
    let f = Fixture::configured(kind, |c| {
        c.handshake_timeout = Duration::from_millis(300);
    });
    let mut silent = TcpStream::connect(f.addr()).unwrap();
    let mut icreq_only = TcpStream::connect(f.addr()).unwrap();
    icreq_only.write_all(&icreq_bytes()).unwrap();
    // A host that finished its handshake keeps its connection past the
    // timeout.
    let (_c, mut q) = connect_host(&f);
    assert!(
        closed_by_target(&mut silent),
        "the silent connection is closed"
    );
    // The ICResp first, then the close.
    let mut icresp = [0u8; 128];
    icreq_only.read_exact(&mut icresp).unwrap();
    assert!(
        closed_by_target(&mut icreq_only),
        "ICReq alone is not enough"
    );
    wait_until("both timeouts to be counted", || {
        f.target.stats().handshake_timeouts == 2
    });
    let data = pattern(4096, 3);
    q.write(1, Lba(0), data.clone(), 512).unwrap();
    assert_eq!(q.read(1, Lba(0), 8, 512).unwrap(), data);
    assert_eq!(f.target.stats().handshake_timeouts, 2);
}

fn a_peer_over_its_cap_is_refused_while_another_address_gets_in(kind: ReactorKind) {
    const CAP: usize = 4;
    let f = Fixture::configured(kind, |c| {
        c.connections_per_peer_max = CAP;
    });
    let mut held: Vec<TcpStream> = (0..CAP)
        .map(|_| connect_from(OTHER_PEER, f.addr()))
        .collect();
    wait_until("the peer's connections to be placed", || {
        f.target.stats().connections == CAP
    });
    let mut over = connect_from(OTHER_PEER, f.addr());
    wait_until("the connection over the cap to be refused", || {
        f.target.stats().connections_refused == 1
    });
    // The refused connection gets no ICResp, only a close.
    let _ = over.write_all(&icreq_bytes());
    assert!(closed_by_target(&mut over));
    // Another address is not affected.
    host_does_io(&f, 4);
    // And the capped peer's own connections still work.
    held[0].write_all(&icreq_bytes()).unwrap();
    let mut icresp = [0u8; 128];
    held[0].read_exact(&mut icresp).unwrap();
    assert_eq!(icresp[0], 0x01, "an ICResp");
    assert_eq!(f.target.stats().connections_refused, 1);
}

fn a_discovery_controller_without_keep_alive_is_closed_when_silent(kind: ReactorKind) {
    let f = Fixture::configured(kind, |c| {
        c.discovery_keep_alive = Duration::from_millis(300);
    });
    // A host that reads the log and leaves is served as before.
    let entries = nvmf_target::host::discover(f.addr(), HOST_A).unwrap();
    assert!(!entries.is_empty());
    // One that connects with KATO 0 and then says nothing is closed.
    let mut o = f.options(HOST_A);
    o.subsys_nqn = DISCOVERY_NQN.to_owned();
    o.kato_ms = 0;
    let silent = HostController::connect(f.addr(), o).unwrap();
    wait_until("the silent discovery controller to be closed", || {
        f.target.stats().connections == 0
    });
    drop(silent);
    // An I/O controller without keep-alive is the host's own choice: kept.
    let (_c, mut q) = connect_host(&f);
    // The fixture ticks every 50 ms on each of its reactors: 36 ticks are
    // three discovery keep-alive periods.
    let ticks = f.target.stats().ticks;
    wait_until("three discovery keep-alive periods to pass", || {
        f.target.stats().ticks >= ticks + 36
    });
    let data = pattern(4096, 9);
    q.write(1, Lba(9), data.clone(), 512).unwrap();
    assert_eq!(q.read(1, Lba(9), 8, 512).unwrap(), data);
}

include!("../src/reactors/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    idle_connections_do_not_keep_a_host_out,
    a_connection_that_never_finishes_its_handshake_is_closed,
    a_peer_over_its_cap_is_refused_while_another_address_gets_in,
    a_discovery_controller_without_keep_alive_is_closed_when_silent,
);
