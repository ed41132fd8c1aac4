//! Synchronous replication between engines over loopback TCP: every member
//! holds what was acknowledged, a member that fails leaves the in-sync set
//! before anything is acknowledged without it, comes back by copying only what
//! it missed, and terms are fenced by epoch and lease.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::io::{CrashMode, DeviceRef, SimDevice};
use engine::replication::wire::{Envelope, Frame};
use engine::replication::{
    Deposed, Extent, MemberSpec, MemberState, NodeId, PrimaryAdmission, PrimaryConfig,
    ReplicaServer, ReplicaSetAuthority, ReplicatedVolume,
};
use engine::{Engine, EngineConfig, IoError, SectorSize, VolumeId};
use parking_lot::Mutex;

const VOLUME: &str = "vol-a";
const VOLUME_BYTES: u64 = 64 << 20;
const BLOCK: usize = 4096;

fn engine() -> Arc<Engine> {
    let config = EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    };
    let sim = Arc::new(SimDevice::new(512 << 20));
    let devices: Vec<DeviceRef> = vec![sim];
    Engine::format(devices.clone(), &config).expect("format");
    let engine = Engine::open(devices, config).expect("open");
    engine
        .create_volume(VOLUME, VOLUME_BYTES, SectorSize::B4096)
        .expect("create");
    Arc::new(engine)
}

fn node(n: u8) -> NodeId {
    NodeId([n; 16])
}

/// The cluster metadata of one volume, as etcd would hold it.
struct Cluster {
    primary: Mutex<(NodeId, u64)>,
    in_sync: Mutex<BTreeSet<NodeId>>,
    lease: AtomicBool,
    deposed: AtomicBool,
    /// While set, removals from the in-sync set do not finish (etcd is slow).
    hold_removals: AtomicBool,
    /// Snapshot copies recorded for members, in order.
    holders: Mutex<Vec<(NodeId, String)>>,
}

impl Cluster {
    fn new(primary: NodeId, epoch: u64, in_sync: &[NodeId]) -> Arc<Cluster> {
        Arc::new(Cluster {
            primary: Mutex::new((primary, epoch)),
            in_sync: Mutex::new(in_sync.iter().copied().collect()),
            lease: AtomicBool::new(true),
            deposed: AtomicBool::new(false),
            hold_removals: AtomicBool::new(false),
            holders: Mutex::new(Vec::new()),
        })
    }

    fn in_sync(&self) -> BTreeSet<NodeId> {
        self.in_sync.lock().clone()
    }
}

impl ReplicaSetAuthority for Cluster {
    fn remove_in_sync(&self, _volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed> {
        // Held at most 30 s, so a broken test fails instead of hanging.
        let held = Instant::now();
        while self.hold_removals.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.deposed.load(Ordering::SeqCst) || self.primary.lock().1 != epoch {
            return Err(Deposed);
        }
        self.in_sync.lock().remove(&member);
        Ok(())
    }

    fn add_in_sync(&self, _volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed> {
        if self.deposed.load(Ordering::SeqCst) || self.primary.lock().1 != epoch {
            return Err(Deposed);
        }
        self.in_sync.lock().insert(member);
        Ok(())
    }

    fn add_snapshot_holder(
        &self,
        _volume: &str,
        epoch: u64,
        member: NodeId,
        snapshot: &str,
    ) -> Result<(), Deposed> {
        if self.deposed.load(Ordering::SeqCst) || self.primary.lock().1 != epoch {
            return Err(Deposed);
        }
        self.holders.lock().push((member, snapshot.to_owned()));
        Ok(())
    }

    fn lease_valid(&self) -> bool {
        self.lease.load(Ordering::SeqCst)
    }
}

impl PrimaryAdmission for Cluster {
    fn admits(&self, _volume: &str, primary: NodeId, epoch: u64) -> bool {
        *self.primary.lock() == (primary, epoch)
    }
}

struct Replica {
    engine: Arc<Engine>,
    server: Option<ReplicaServer>,
    addr: SocketAddr,
}

impl Replica {
    fn start(cluster: &Arc<Cluster>) -> Replica {
        Replica::serve(engine(), cluster, "127.0.0.1:0".parse().expect("addr"))
    }

    fn serve(engine: Arc<Engine>, cluster: &Arc<Cluster>, listen: SocketAddr) -> Replica {
        let server =
            ReplicaServer::start(engine.clone(), listen, cluster.clone()).expect("replica server");
        let addr = server.local_addr();
        Replica {
            engine,
            server: Some(server),
            addr,
        }
    }

    fn stop(&mut self) {
        self.server.take();
    }

    fn restart(&mut self, cluster: &Arc<Cluster>) {
        self.server = Some(
            ReplicaServer::start(self.engine.clone(), self.addr, cluster.clone())
                .expect("replica server restarts on its address"),
        );
    }

    /// Restarts on a new port, as a node restarted with another address.
    fn restart_elsewhere(&mut self, cluster: &Arc<Cluster>) {
        let server = ReplicaServer::start(
            self.engine.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            cluster.clone(),
        )
        .expect("replica server restarts");
        self.addr = server.local_addr();
        self.server = Some(server);
    }

    fn volume(&self) -> VolumeId {
        self.engine.volume_by_name(VOLUME).expect("volume").id
    }

    fn server(&self) -> &ReplicaServer {
        self.server.as_ref().expect("running")
    }
}

fn primary(
    engine: &Arc<Engine>,
    cluster: &Arc<Cluster>,
    me: NodeId,
    epoch: u64,
    members: Vec<MemberSpec>,
    uncertain: Vec<Extent>,
) -> ReplicatedVolume {
    let volume = engine.volume_by_name(VOLUME).expect("volume").id;
    ReplicatedVolume::start(
        engine.clone(),
        volume,
        PrimaryConfig {
            volume_name: VOLUME.into(),
            epoch,
            node: me,
            resync_bytes_per_s: 1 << 30,
            reconnect_interval: Duration::from_millis(50),
            uncertain,
        },
        members,
        cluster.clone(),
    )
    .expect("primary starts")
}

/// Node 1 the primary of epoch 1 with node 2 its one in-sync member: the
/// cluster, node 2's replica, the primary's engine and its volume.
fn primary_and_replica() -> (Arc<Cluster>, Replica, Arc<Engine>, ReplicatedVolume) {
    primary_and_replica_at(1)
}

/// As [`primary_and_replica`], in `epoch`.
fn primary_and_replica_at(epoch: u64) -> (Arc<Cluster>, Replica, Arc<Engine>, ReplicatedVolume) {
    let cluster = Cluster::new(node(1), epoch, &[node(1), node(2)]);
    let b = Replica::start(&cluster);
    let a = engine();
    let volume = primary(
        &a,
        &cluster,
        node(1),
        epoch,
        vec![member(2, &b, true)],
        Vec::new(),
    );
    (cluster, b, a, volume)
}

fn member(n: u8, replica: &Replica, in_sync: bool) -> MemberSpec {
    MemberSpec {
        node: node(n),
        addr: replica.addr,
        in_sync,
        left_at_this_term: false,
    }
}

fn block(seed: u64) -> Bytes {
    let mut data = vec![0u8; BLOCK];
    for (i, chunk) in data.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ (i as u64) << 40).to_le_bytes());
    }
    Bytes::from(data)
}

fn write(volume: &ReplicatedVolume, lba: u64, data: Bytes) -> Result<(), IoError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    volume.write(
        lba,
        data,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a replicated write completes")
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_same(a: &Engine, a_vol: VolumeId, b: &Engine, b_vol: VolumeId, blocks: u64) {
    for lba in (0..blocks).step_by(64) {
        let n = 64.min(blocks - lba) as u32;
        let left = a.read_wait(a_vol, lba, n).expect("read a");
        let right = b.read_wait(b_vol, lba, n).expect("read b");
        assert!(
            left == right,
            "members differ in blocks {lba}..{}",
            lba + u64::from(n)
        );
    }
}

#[test]
fn acknowledged_writes_are_on_every_member() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2), node(3)]);
    let b = Replica::start(&cluster);
    let c = Replica::start(&cluster);
    let a = engine();
    let volume = primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true), member(3, &c, true)],
        Vec::new(),
    );
    let mut expected = HashMap::new();
    for i in 0..300u64 {
        let lba = (i * 7919) % 2048;
        write(&volume, lba, block(i)).expect("replicated write");
        expected.insert(lba, block(i));
    }
    // Every member holds every acknowledged write the moment it is acknowledged.
    for replica in [&b, &c] {
        for (lba, data) in &expected {
            assert_eq!(
                &replica
                    .engine
                    .read_wait(replica.volume(), *lba, 1)
                    .expect("read"),
                data
            );
        }
    }
    assert_eq!(cluster.in_sync().len(), 3);
    let status = volume.status();
    assert!(status
        .members
        .iter()
        .all(|m| m.state == MemberState::InSync));
    assert_eq!(b.server().stats().write_bytes, 300 * BLOCK as u64);
}

#[test]
fn a_failed_member_leaves_the_set_then_resyncs_only_what_it_missed() {
    let (cluster, mut b, a, volume) = primary_and_replica();
    for i in 0..1024u64 {
        write(&volume, i, block(i)).expect("write before failure");
    }
    b.stop();
    // Writes go on; the first ones wait until the member is out of the set.
    let missed_blocks = 256u64;
    for i in 0..missed_blocks {
        write(&volume, 4096 + i, block(10_000 + i)).expect("write while the member is away");
    }
    assert!(
        !cluster.in_sync().contains(&node(2)),
        "dropped before acknowledging without it"
    );
    let copied_before = 0;
    b.restart(&cluster);
    wait_until("the member rejoins", || {
        cluster.in_sync().contains(&node(2))
    });
    let status = volume.status();
    assert_eq!(status.members[0].state, MemberState::InSync);
    let copied = b.server().stats().copy_bytes - copied_before;
    let missed_bytes = missed_blocks * BLOCK as u64;
    // About what was missed, never the volume: writes in flight when the link
    // failed may be copied again.
    assert!(
        copied >= missed_bytes && copied <= missed_bytes + 64 * BLOCK as u64,
        "copied {copied} bytes for {missed_bytes} missed"
    );
    assert_same(&a, volume.volume(), &b.engine, b.volume(), 8192);
}

#[test]
fn a_member_back_on_another_address_is_reached_there_once_named() {
    let (cluster, mut b, a, volume) = primary_and_replica();
    for i in 0..64u64 {
        write(&volume, i, block(i)).expect("write before the move");
    }
    let old_addr = b.addr;
    b.stop();
    for i in 0..64u64 {
        write(&volume, 100 + i, block(1000 + i)).expect("write while the member is away");
    }
    b.restart_elsewhere(&cluster);
    assert_ne!(b.addr, old_addr);
    assert!(
        volume.set_member_addr(node(2), b.addr),
        "the address changed"
    );
    assert!(!volume.set_member_addr(node(2), b.addr), "already there");
    assert!(!volume.set_member_addr(node(9), b.addr), "no such member");
    wait_until("the member rejoins at its new address", || {
        cluster.in_sync().contains(&node(2))
    });
    write(&volume, 200, block(2000)).expect("write after the rejoin");
    assert_same(&a, volume.volume(), &b.engine, b.volume(), 256);
}

#[test]
fn nothing_is_acknowledged_without_a_member_until_it_is_out_of_the_set() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2)]);
    let mut b = Replica::start(&cluster);
    let a = engine();
    let volume = Arc::new(primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true)],
        Vec::new(),
    ));
    write(&volume, 0, block(0)).expect("write");
    cluster.hold_removals.store(true, Ordering::SeqCst);
    b.stop();
    let (tx, rx) = crossbeam_channel::bounded(1);
    volume.write(
        1,
        block(1),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "acknowledged while the failed member was still in the in-sync set"
    );
    assert_eq!(volume.status().members[0].state, MemberState::Dropping);
    cluster.hold_removals.store(false, Ordering::SeqCst);
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
    assert!(!cluster.in_sync().contains(&node(2)));
}

#[test]
fn resync_runs_beside_new_writes_without_losing_any() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2)]);
    let mut b = Replica::start(&cluster);
    let a = engine();
    let volume = Arc::new(primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true)],
        Vec::new(),
    ));
    b.stop();
    for i in 0..2048u64 {
        write(&volume, i, block(i)).expect("write while away");
    }
    b.restart(&cluster);
    // Overwrite blocks the resync is copying, while it copies them.
    for round in 0..4u64 {
        for i in (0..2048u64).step_by(3) {
            write(&volume, i, block(round << 32 | i)).expect("write during resync");
        }
    }
    wait_until("the member rejoins", || {
        cluster.in_sync().contains(&node(2))
    });
    assert_same(&a, volume.volume(), &b.engine, b.volume(), 2048);
}

#[test]
fn a_deposed_primary_acknowledges_nothing() {
    let (cluster, mut b, _a, volume) = primary_and_replica();
    write(&volume, 0, block(1)).expect("write");
    // The lease lapses: nothing more is acknowledged.
    cluster.lease.store(false, Ordering::SeqCst);
    assert_eq!(write(&volume, 1, block(2)), Err(IoError::NotPrimary));
    assert!(!volume.may_serve());
    cluster.lease.store(true, Ordering::SeqCst);
    // Another node took over: the member cannot be dropped, so nothing is
    // acknowledged without it.
    cluster.deposed.store(true, Ordering::SeqCst);
    b.stop();
    assert_eq!(write(&volume, 2, block(3)), Err(IoError::NotPrimary));
    assert!(volume.status().deposed);
    assert!(cluster.in_sync().contains(&node(2)));
}

#[test]
fn a_replica_refuses_an_older_epoch_and_an_unnamed_primary() {
    let (cluster, b, a, current) = primary_and_replica_at(2);
    write(&current, 0, block(1)).expect("write at epoch 2");
    assert_eq!(b.server().epoch_of(VOLUME), Some(2));
    drop(current);
    // An older term, even from the same node, is refused: its primary is deposed.
    let stale = primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true)],
        Vec::new(),
    );
    assert!(stale.status().deposed, "{:?}", stale.status());
    assert_eq!(write(&stale, 0, block(2)), Err(IoError::NotPrimary));
    drop(stale);
    // A node the cluster does not name primary is never admitted.
    let other = engine();
    let impostor = primary(
        &other,
        &cluster,
        node(9),
        2,
        vec![member(2, &b, true)],
        Vec::new(),
    );
    wait_until("the impostor drops its member", || {
        impostor.status().members[0].state != MemberState::InSync
    });
    assert_eq!(
        b.engine.read_wait(b.volume(), 0, 1).expect("read"),
        block(1)
    );
}

/// An old primary's write reached one member and not the others before it
/// died: the new primary makes every member agree with itself.
#[test]
fn a_new_term_reconciles_what_the_old_one_left_uncertain() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2), node(3)]);
    let b = Replica::start(&cluster);
    let c = Replica::start(&cluster);
    let old = engine();
    let old_primary = primary(
        &old,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true), member(3, &c, true)],
        Vec::new(),
    );
    write(&old_primary, 5, block(5)).expect("acknowledged everywhere");
    drop(old_primary);
    // The old primary's last writes: block 6 reached only B, block 7 only C.
    raw_write(b.addr, node(1), 1, 6, block(66));
    raw_write(c.addr, node(1), 1, 7, block(77));
    // B becomes primary at epoch 2 with C as its member.
    *cluster.primary.lock() = (node(2), 2);
    let uncertain = b.server().take_uncertain(VOLUME);
    assert!(
        uncertain.contains(&Extent { lba: 6, blocks: 1 }),
        "{uncertain:?}"
    );
    let new_primary = primary(
        &b.engine,
        &cluster,
        node(2),
        2,
        vec![member(3, &c, true)],
        uncertain,
    );
    wait_until("reconciliation", || !new_primary.status().reconciling);
    assert_same(&b.engine, b.volume(), &c.engine, c.volume(), 64);
    assert_eq!(
        c.engine.read_wait(c.volume(), 6, 1).expect("read"),
        block(66)
    );
    assert_eq!(
        c.engine.read_wait(c.volume(), 7, 1).expect("read"),
        Bytes::from(vec![0u8; BLOCK])
    );
    assert_eq!(
        c.engine.read_wait(c.volume(), 5, 1).expect("read"),
        block(5)
    );
}

#[test]
fn snapshots_are_taken_at_one_point_of_the_write_order() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2)]);
    let b = Replica::start(&cluster);
    let a = engine();
    let volume = Arc::new(primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true)],
        Vec::new(),
    ));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let volume = volume.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            for i in 0..400u64 {
                write(&volume, i % 97, block(i)).expect("write");
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Mid-stream: some writes are in, most are still to come.
    wait_until("the writer is under way", || {
        written.load(Ordering::SeqCst) >= 20
    });
    volume.snapshot("snap-1").expect("snapshot");
    writer.join().expect("writer");
    let on_a = a
        .volume_by_name("snap-1")
        .expect("snapshot on the primary")
        .id;
    let on_b = b
        .engine
        .volume_by_name("snap-1")
        .expect("snapshot on the member")
        .id;
    assert_same(&a, on_a, &b.engine, on_b, 128);
    assert_same(&a, volume.volume(), &b.engine, b.volume(), 128);
}

#[test]
fn a_snapshot_is_taken_only_by_members_that_hold_every_block() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2), node(3)]);
    let b = Replica::start(&cluster);
    let mut c = Replica::start(&cluster);
    let a = engine();
    let volume = primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true), member(3, &c, true)],
        Vec::new(),
    );
    for i in 0..64u64 {
        write(&volume, i, block(i)).expect("write");
    }
    c.stop();
    write(&volume, 64, block(64)).expect("write while a member is away");
    wait_until("the away member leaves the set", || {
        !cluster.in_sync().contains(&node(3))
    });
    let holders = volume.snapshot("snap-1").expect("snapshot");
    assert_eq!(holders, vec![node(2)]);
    assert!(c.engine.volume_by_name("snap-1").is_none());
    let on_a = a.volume_by_name("snap-1").expect("on the primary").id;
    let on_b = b.engine.volume_by_name("snap-1").expect("on b").id;
    assert_same(&a, on_a, &b.engine, on_b, 128);
}

#[test]
fn a_rollback_reaches_every_member_and_one_that_was_away_is_rebuilt_whole() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2), node(3)]);
    let b = Replica::start(&cluster);
    let mut c = Replica::start(&cluster);
    let a = engine();
    let volume = primary(
        &a,
        &cluster,
        node(1),
        1,
        vec![member(2, &b, true), member(3, &c, true)],
        Vec::new(),
    );
    for i in 0..256u64 {
        write(&volume, i, block(i)).expect("write before the snapshot");
    }
    let holders = volume.snapshot("snap-1").expect("snapshot");
    assert_eq!(holders.len(), 2);
    for i in 0..128u64 {
        write(&volume, i * 2, block(1_000 + i)).expect("write after the snapshot");
    }
    c.stop();
    for i in 0..64u64 {
        write(&volume, 1 + i * 2, block(2_000 + i)).expect("write while a member is away");
    }
    wait_until("the away member leaves the set", || {
        !cluster.in_sync().contains(&node(3))
    });
    volume.rollback("snap-1").expect("rollback");
    for i in 0..256u64 {
        assert_eq!(
            a.read_wait(volume.volume(), i, 1).expect("read"),
            block(i),
            "the primary reads block {i} as the snapshot held it"
        );
    }
    assert_same(&a, volume.volume(), &b.engine, b.volume(), 1024);
    // The away member holds writes the rollback undid that it never missed;
    // only a full copy makes it agree.
    c.restart(&cluster);
    wait_until("the away member rejoins", || {
        cluster.in_sync().contains(&node(3))
    });
    assert_same(&a, volume.volume(), &c.engine, c.volume(), 1024);
}

/// Sends one write of an old term straight to a replica, as a primary that
/// dies right after would.
fn raw_write(addr: SocketAddr, primary: NodeId, epoch: u64, lba: u64, data: Bytes) {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    let hello = Envelope {
        seq: 0,
        epoch,
        frame: Frame::Hello {
            volume: VOLUME.into(),
            primary,
            sector_bytes: BLOCK as u32,
            size_bytes: VOLUME_BYTES,
        },
    };
    socket.write_all(&hello.to_bytes()).expect("hello");
    let write = Envelope {
        seq: 1_000,
        epoch,
        frame: Frame::Write {
            committed: 999,
            lba,
            data,
        },
    };
    socket.write_all(&write.to_bytes()).expect("write");
    // Wait for the HelloAck and the write's Ack.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while Instant::now() < deadline {
        if let Ok(n) = socket.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let bytes = Bytes::from(got.clone());
        if let Ok(Some((_, used))) = Envelope::decode(&bytes) {
            if let Ok(Some((ack, _))) = Envelope::decode(&bytes.slice(used..)) {
                assert!(matches!(ack.frame, Frame::Ack { .. }));
                return;
            }
        }
    }
    panic!("the replica did not acknowledge the raw write");
}

#[test]
fn a_member_lost_for_good_is_replaced_and_rebuilt_in_full() {
    let (cluster, mut b, a, volume) = primary_and_replica();
    for i in 0..512u64 {
        write(&volume, i, block(i)).expect("write");
    }
    b.stop();
    write(&volume, 600, block(600)).expect("write after the member is lost");
    wait_until("the lost member is detached", || {
        volume.status().members[0].state == MemberState::Detached
    });
    let c = Replica::start(&cluster);
    assert!(
        !volume.replace_member(node(3), member(3, &c, false), Vec::new()),
        "not a member"
    );
    assert!(volume.replace_member(node(2), member(3, &c, false), Vec::new()));
    wait_until("the new member joins", || {
        cluster.in_sync().contains(&node(3))
    });
    assert_eq!(volume.status().members[0].node, node(3));
    assert_same(&a, volume.volume(), &c.engine, c.volume(), 1024);
}

#[test]
fn a_replaced_member_gets_every_snapshot_then_the_volume() {
    let (cluster, mut b, a, volume) = primary_and_replica();
    for i in 0..64u64 {
        write(&volume, i, block(i)).expect("write");
    }
    volume.snapshot("s1").expect("snapshot s1");
    for i in 32..96u64 {
        write(&volume, i, block(1000 + i)).expect("write");
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    volume.deallocate(
        0,
        8,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(Duration::from_secs(20))
        .expect("answered")
        .expect("deallocate");
    volume.snapshot("s2").expect("snapshot s2");
    for i in 200..210u64 {
        write(&volume, i, block(2000 + i)).expect("write");
    }
    b.stop();
    write(&volume, 600, block(600)).expect("write after the member is lost");
    wait_until("the lost member is detached", || {
        volume.status().members[0].state == MemberState::Detached
    });

    let c = Replica::start(&cluster);
    assert!(volume.replace_member(
        node(2),
        member(3, &c, false),
        vec!["s1".into(), "s2".into()]
    ));
    // Writes go on while the snapshots are built; they reach the new member
    // after the last one, never inside one.
    for i in 0..16u64 {
        write(&volume, i, block(3000 + i)).expect("write while seeding");
    }
    wait_until("the new member joins", || {
        cluster.in_sync().contains(&node(3))
    });
    let status = volume.status();
    assert_eq!(status.members[0].seeded_snapshots, vec!["s1", "s2"]);
    assert_eq!(
        *cluster.holders.lock(),
        vec![(node(3), "s1".to_owned()), (node(3), "s2".to_owned())],
        "each copy is recorded as it is made"
    );
    for name in ["s1", "s2"] {
        let ours = a.volume_by_name(name).expect("the primary's snapshot").id;
        let theirs = c.engine.volume_by_name(name).expect("the member's copy");
        assert_eq!(theirs.kind, engine::VolumeKind::Snapshot);
        assert_eq!(theirs.parent, Some(c.volume()));
        assert_same(&a, ours, &c.engine, theirs.id, 1024);
    }
    assert_same(&a, volume.volume(), &c.engine, c.volume(), 1024);
    // The snapshots' blocks and what changed after each, not the volume.
    let copied_blocks = status.members[0].resync_bytes / BLOCK as u64;
    assert!(
        copied_blocks < 1024,
        "copied {copied_blocks} blocks to rebuild 160 written ones"
    );
}

/// A replica that admits a stream, reports `uncertain`, then answers nothing;
/// the flag it returns second goes up once a frame after the Hello arrived.
type Silent = (
    SocketAddr,
    std::thread::JoinHandle<()>,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
);

fn silent_replica(uncertain: Vec<Extent>) -> Silent {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let framed = Arc::new(AtomicBool::new(false));
    let seen = framed.clone();
    let thread = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf);
        let ack = Envelope {
            seq: 0,
            epoch: 2,
            frame: Frame::HelloAck {
                status: engine::replication::wire::HelloStatus::Admitted,
                known_epoch: 2,
                uncertain,
                uncertain_overflow: false,
            },
        };
        socket.write_all(&ack.to_bytes()).expect("hello ack");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let mut got = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(n) = socket.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if matches!(Envelope::decode(&Bytes::from(got.clone())), Ok(Some(_))) {
                seen.store(true, Ordering::SeqCst);
            }
        }
    });
    (addr, thread, done, framed)
}

#[test]
fn a_new_term_serves_nothing_until_its_members_agree() {
    let cluster = Cluster::new(node(2), 2, &[node(2), node(3)]);
    let (addr, silent, close, copy_sent) = silent_replica(vec![Extent { lba: 6, blocks: 1 }]);
    let b = engine();
    let volume = primary(
        &b,
        &cluster,
        node(2),
        2,
        vec![MemberSpec {
            left_at_this_term: false,
            node: node(3),
            addr,
            in_sync: true,
        }],
        Vec::new(),
    );
    // The copy of block 6 is on its way and unanswered.
    wait_until("the copy of block 6 is sent", || {
        copy_sent.load(Ordering::SeqCst)
    });
    assert!(volume.status().reconciling);
    assert!(
        !volume.may_serve(),
        "served before the member agreed on block 6"
    );
    // The member goes away: it leaves the in-sync set, and the term serves.
    close.store(true, Ordering::SeqCst);
    silent.join().expect("silent replica");
    wait_until("the term serves", || volume.may_serve());
    assert!(!cluster.in_sync().contains(&node(3)));
}

/// A node whose pool can be crashed (every Arc to its engine dropped, the
/// device crashed keeping what it completed) and reopened.
struct CrashableNode {
    sim: Arc<SimDevice>,
    replica: Replica,
}

impl CrashableNode {
    fn config() -> EngineConfig {
        EngineConfig {
            blocks_per_segment: 512,
            ..EngineConfig::default()
        }
    }

    fn start(cluster: &Arc<Cluster>) -> CrashableNode {
        let sim = Arc::new(SimDevice::new(512 << 20));
        let devices: Vec<DeviceRef> = vec![sim.clone()];
        Engine::format(devices.clone(), &Self::config()).expect("format");
        let engine = Engine::open(devices, Self::config()).expect("open");
        engine
            .create_volume(VOLUME, VOLUME_BYTES, SectorSize::B4096)
            .expect("create");
        CrashableNode {
            sim,
            replica: Replica::serve(
                Arc::new(engine),
                cluster,
                "127.0.0.1:0".parse().expect("addr"),
            ),
        }
    }

    /// kill -9: the engine goes without a final checkpoint.
    fn crash_and_restart(self, cluster: &Arc<Cluster>) -> CrashableNode {
        let CrashableNode { sim, replica } = self;
        let addr = replica.addr;
        let Replica { engine, server, .. } = replica;
        drop(server);
        assert_eq!(
            Arc::strong_count(&engine),
            1,
            "nothing else holds the engine"
        );
        drop(engine);
        sim.crash(CrashMode::KeepAll);
        let engine = Engine::open(vec![sim.clone() as DeviceRef], Self::config()).expect("reopen");
        CrashableNode {
            sim,
            replica: Replica::serve(Arc::new(engine), cluster, addr),
        }
    }
}

#[test]
fn a_dead_primary_that_comes_back_gets_only_what_changed_and_what_it_alone_wrote() {
    let cluster = Cluster::new(node(1), 1, &[node(1), node(2)]);
    let a = CrashableNode::start(&cluster);
    let b = Replica::start(&cluster);
    let a_engine = a.replica.engine.clone();
    let volume_blocks = VOLUME_BYTES / BLOCK as u64;
    {
        // A is primary; B (in sync) has every acknowledged write.
        let old_primary = primary(
            &a_engine,
            &cluster,
            node(1),
            1,
            vec![member(2, &b, true)],
            Vec::new(),
        );
        for i in 0..512u64 {
            write(&old_primary, i, block(i)).expect("acknowledged on both");
        }
        a_engine.checkpoint().expect("checkpoint");
        for i in 0..64u64 {
            write(&old_primary, 1000 + i, block(1000 + i)).expect("acknowledged on both");
        }
        drop(old_primary);
    }
    // A's last write reached only its own pool: applied locally, never sent.
    let volume_a = a.replica.volume();
    a_engine
        .write_wait(volume_a, 3000, block(3000))
        .expect("a local write the others never saw");
    drop(a_engine);
    let a = a.crash_and_restart(&cluster);
    let carried = a.replica.engine.carried_unsettled(a.replica.volume());
    assert!(
        carried.contains(&Extent {
            lba: 3000,
            blocks: 1
        }),
        "the tail A alone wrote is carried: {carried:?}"
    );

    // B takes over at epoch 2; A left the set as that term began.
    *cluster.primary.lock() = (node(2), 2);
    cluster.in_sync.lock().remove(&node(1));
    let uncertain = b.server().take_uncertain(VOLUME);
    let new_primary = primary(
        &b.engine,
        &cluster,
        node(2),
        2,
        vec![MemberSpec {
            left_at_this_term: true,
            ..member(1, &a.replica, false)
        }],
        uncertain,
    );
    let written_away = 256u64;
    for i in 0..written_away {
        write(&new_primary, 2000 + i, block(2000 + i)).expect("written while A catches up");
    }
    wait_until("A rejoins", || cluster.in_sync().contains(&node(1)));
    let copied = new_primary.status().members[0].resync_bytes;
    let copied_blocks = copied / BLOCK as u64;
    // What B wrote while A was away, A's own tail since its checkpoint (64
    // blocks and the one write) and nothing like the volume.
    assert!(
        copied_blocks >= 1 && copied_blocks <= written_away + 64 + 1,
        "copied {copied_blocks} blocks of a {volume_blocks}-block volume"
    );
    assert_eq!(
        a.replica
            .engine
            .read_wait(a.replica.volume(), 3000, 1)
            .expect("read"),
        Bytes::from(vec![0u8; BLOCK]),
        "A's lone write is undone"
    );
    assert_same(
        &b.engine,
        b.volume(),
        &a.replica.engine,
        a.replica.volume(),
        volume_blocks,
    );
}

#[test]
fn a_member_that_left_in_an_older_term_is_copied_whole() {
    let cluster = Cluster::new(node(2), 2, &[node(2)]);
    let a = Replica::start(&cluster);
    let b = Replica::start(&cluster);
    let new_primary = primary(
        &b.engine,
        &cluster,
        node(2),
        2,
        vec![member(1, &a, false)],
        Vec::new(),
    );
    write(&new_primary, 7, block(7)).expect("write");
    wait_until("A rejoins", || cluster.in_sync().contains(&node(1)));
    assert_eq!(
        new_primary.status().members[0].resync_bytes,
        VOLUME_BYTES,
        "what A missed in older terms is unknown"
    );
}
