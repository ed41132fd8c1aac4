//! The primary side: a volume whose every change is applied locally and on
//! every member of its in-sync set before it is acknowledged.
//!
//! Each change gets the next seq of the volume's write order under one lock,
//! is sent to every attached member in that order and submitted to the local
//! engine. It is acknowledged when the local engine and every in-sync member
//! acknowledged it and this node's cluster lease is still certainly valid.
//!
//! **Invariant:** a change is never acknowledged without an in-sync member
//! until the cluster metadata no longer lists that member in-sync
//! ([`ReplicaSetAuthority::remove_in_sync`] returned): a member whose link
//! fails is *dropping*, and every change waits on it until the removal is
//! durable. If the removal fails the primary is deposed and fails everything.
//!
//! **Invariant:** a member outside the in-sync set has a [`BlockSet`] of the
//! blocks it may lack (`missed`): every change it was not sent or did not
//! acknowledge. Resync copies exactly those blocks, reading the primary's
//! current data; a block written after the member was attached again is
//! skipped (the live write carries it), so a copy never overwrites newer data
//! on the member. The member rejoins the set (`add_in_sync`) only once
//! `missed` is empty and every copy is acknowledged.
//!
//! **Invariant:** a member that left the set as this term began (the dead
//! primary of the previous term) starts with `missed` holding only what the
//! in-sync members report uncertain; its own report, made when it is first
//! attached, is added before any copy, and a member that cannot report
//! (lost track) lacks the whole volume. Every change this node may have
//! applied and not every member has is reported to the engine
//! ([`UnsettledSource`]) while pending and handed to it
//! ([`Engine::carry_unsettled`]) when the term ends with changes pending, so
//! this node can report them after a crash or a deposition.

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

use super::dirty::BlockSet;
use super::stream::{write_frame, FrameReader};
use super::wire::{AckStatus, Envelope, Extent, Frame, HelloStatus, NodeId};
use crate::{Engine, IoError, UnsettledSource, VolumeId, WriteDone};

/// What a primary asks of the cluster's metadata.
pub trait ReplicaSetAuthority: Send + Sync {
    /// Removes `member` from `volume`'s in-sync set, conditional on this node
    /// still being primary at `epoch`; returns once the change is durable.
    fn remove_in_sync(&self, volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed>;
    /// Adds `member` back to the in-sync set, on the same condition.
    fn add_in_sync(&self, volume: &str, epoch: u64, member: NodeId) -> Result<(), Deposed>;
    /// Records that `member` holds its own copy of `volume`'s snapshot
    /// `snapshot` (this term built it there), on the same condition; returns
    /// once the change is durable. A snapshot being deleted is left alone.
    fn add_snapshot_holder(
        &self,
        volume: &str,
        epoch: u64,
        member: NodeId,
        snapshot: &str,
    ) -> Result<(), Deposed>;
    /// True while this node's cluster lease is certainly valid: no other
    /// node can have been made primary of anything this node serves.
    fn lease_valid(&self) -> bool;
}

/// The cluster no longer names this node primary at the volume's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node is no longer the volume's primary")]
pub struct Deposed;

/// A member of a replicated volume other than the primary.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// The member's node.
    pub node: NodeId,
    /// Its replication endpoint.
    pub addr: SocketAddr,
    /// Whether cluster metadata lists it in-sync at this epoch.
    pub in_sync: bool,
    /// Out of the in-sync set, but only since this term began (it was in
    /// sync when the previous term ended: a dead primary's successor's term).
    /// It then lacks only what older terms left uncertain, what it reports
    /// itself and what this term writes, not the whole volume.
    pub left_at_this_term: bool,
}

/// How a primary runs one replicated volume.
#[derive(Debug, Clone)]
pub struct PrimaryConfig {
    /// The volume's engine name, the same on every member.
    pub volume_name: String,
    /// This primary term's epoch.
    pub epoch: u64,
    /// This node.
    pub node: NodeId,
    /// Pace of resync copies.
    pub resync_bytes_per_s: u64,
    /// Pause between attempts to reach a member that is away.
    pub reconnect_interval: Duration,
    /// Extents this node applied as a replica that may differ between members
    /// (from [`super::ReplicaServer::take_uncertain`]); every member is made
    /// to agree with this node on them.
    pub uncertain: Vec<Extent>,
}

/// What a member is doing, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// In the in-sync set: every change waits for it.
    InSync,
    /// Its link failed; it is being taken out of the in-sync set.
    Dropping,
    /// Away; changes it misses are recorded.
    Detached,
    /// Attached and receiving the volume's snapshots, oldest first, before
    /// it takes live changes (a replica rebuilt on a new node).
    Seeding,
    /// Attached and receiving the blocks it missed.
    Resyncing,
    /// Caught up; being added back to the in-sync set.
    Joining,
}

/// One member's replication status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member's node.
    pub node: NodeId,
    /// Its state.
    pub state: MemberState,
    /// Blocks it still lacks.
    pub missed_blocks: u64,
    /// Blocks it lacked when its current resync began.
    pub resync_total_blocks: u64,
    /// Data bytes copied to it by resyncs since this primary term began.
    pub resync_bytes: u64,
    /// Snapshots this term built on it (it holds its own copy of each).
    pub seeded_snapshots: Vec<String>,
}

/// A replicated volume's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The primary term.
    pub epoch: u64,
    /// True after the cluster deposed this primary; it serves nothing.
    pub deposed: bool,
    /// True until every member agrees on what older terms left uncertain.
    pub reconciling: bool,
    /// The members other than this node.
    pub members: Vec<MemberStatus>,
}

/// Most members besides the primary (replica count 3).
pub const MEMBERS_MAX: usize = 6;
/// Longest run one resync copy carries.
const COPY_BYTES_MAX: u64 = 256 * 1024;
/// Resync copies in flight per member while no host I/O waits.
const COPIES_IN_FLIGHT_MAX: usize = 8;
/// Host changes in flight above which resync keeps one copy in flight.
const FOREGROUND_BUSY: usize = 4;
/// Time a member has to answer `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

const LOCAL: u16 = 1;

fn member_bit(index: usize) -> u16 {
    2 << index
}

/// The primary of one replicated volume.
pub struct ReplicatedVolume {
    inner: Arc<Inner>,
    supervisor: Option<JoinHandle<()>>,
}

struct Inner {
    engine: Arc<Engine>,
    volume: VolumeId,
    sector_bytes: u32,
    config: PrimaryConfig,
    authority: Arc<dyn ReplicaSetAuthority>,
    state: Mutex<State>,
    /// Held shared by every change from taking its seq to its local submit,
    /// and exclusively by snapshots and resizes, which must see every earlier
    /// change applied locally and no later one.
    gate: RwLock<()>,
    changed: Condvar,
    stop: AtomicBool,
    link_generation: AtomicU64,
}

struct State {
    next_seq: u64,
    members: Vec<Member>,
    pending: BTreeMap<u64, Pending>,
    deposed: bool,
    reconciling: bool,
}

struct Member {
    node: NodeId,
    addr: SocketAddr,
    state: MemberState,
    link: Option<Link>,
    /// Blocks the member may lack.
    missed: BlockSet,
    /// Blocks written (and sent to it) since it was attached; copies skip them.
    written_since_attach: BlockSet,
    /// Its own report of what it may hold differently is still to be added
    /// to `missed` (it left the set as this term began).
    report_pending: bool,
    /// Building the volume's snapshots on a member that holds none.
    seeding: Seeding,
    copies: HashMap<u64, Extent>,
    resync_total_blocks: u64,
    resync_bytes: u64,
    last_attempt: Option<Instant>,
}

/// Snapshots being built on a member that holds none (see
/// [`ReplicatedVolume::replace_member`]).
#[derive(Default)]
struct Seeding {
    /// Snapshot names still to build, oldest first.
    queue: std::collections::VecDeque<String>,
    /// The local id of the one being copied (the queue's front), once what
    /// the member lacks of it is loaded into `missed`.
    building: Option<VolumeId>,
    /// The seq of its `Snapshot` frame, sent and not yet answered.
    frame: Option<u64>,
    /// The last snapshot built: the member's volume holds its content.
    base: Option<VolumeId>,
    /// Snapshots built on the member.
    taken: Vec<String>,
}

struct Link {
    generation: u64,
    frames: Sender<Bytes>,
    socket: TcpStream,
}

struct Pending {
    /// Parts that must finish before the host is answered.
    blocking: u16,
    /// Members that were sent the change and have not answered.
    sent: u16,
    /// Members that applied the change.
    acked: u16,
    extent: Option<Extent>,
    /// The change rewrites every block (a rollback): a member that does not
    /// apply it lacks the whole volume.
    whole_volume: bool,
    error: Option<IoError>,
    done: Option<WriteDone>,
    /// Told `acked` when the change is answered (control changes).
    acked_to: Option<Sender<u16>>,
}

/// One change to a replicated volume.
enum Change {
    Write { lba: u64, data: Bytes },
    WriteZeroes(Extent),
    Deallocate(Extent),
    Flush,
}

type Finished = Vec<(WriteDone, Result<(), IoError>)>;

fn run_finished(finished: Finished) {
    for (done, result) in finished {
        done(result);
    }
}

impl ReplicatedVolume {
    /// Starts serving `volume` (a local engine volume) as primary of its
    /// members. Members not in sync are reached and resynced in the
    /// background; in-sync members that cannot be reached are dropped.
    pub fn start(
        engine: Arc<Engine>,
        volume: VolumeId,
        config: PrimaryConfig,
        members: Vec<MemberSpec>,
        authority: Arc<dyn ReplicaSetAuthority>,
    ) -> Result<ReplicatedVolume, IoError> {
        if members.len() > MEMBERS_MAX {
            return Err(IoError::Invalid("too many replicas"));
        }
        let info = engine.volume(volume).ok_or(IoError::NoSuchVolume(volume))?;
        let volume_blocks = info.size_bytes / u64::from(info.sector_size.bytes());
        let members = members
            .into_iter()
            .map(|spec| Member {
                node: spec.node,
                addr: spec.addr,
                // A member cannot be trusted in sync until it answered this
                // term's Hello; until then it counts as in sync (changes wait
                // for it) and its uncertain extents are unknown.
                state: if spec.in_sync {
                    MemberState::InSync
                } else {
                    MemberState::Detached
                },
                link: None,
                missed: if spec.in_sync || spec.left_at_this_term {
                    BlockSet::new()
                } else {
                    BlockSet::full(volume_blocks)
                },
                report_pending: !spec.in_sync && spec.left_at_this_term,
                seeding: Seeding::default(),
                written_since_attach: BlockSet::new(),
                copies: HashMap::new(),
                resync_total_blocks: 0,
                resync_bytes: 0,
                last_attempt: None,
            })
            .collect();
        let inner = Arc::new(Inner {
            engine,
            volume,
            sector_bytes: info.sector_size.bytes(),
            config,
            authority,
            gate: RwLock::new(()),
            state: Mutex::new(State {
                next_seq: 1,
                members,
                pending: BTreeMap::new(),
                deposed: false,
                reconciling: true,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            link_generation: AtomicU64::new(1),
        });
        let source: Weak<dyn UnsettledSource> = Arc::downgrade(&inner) as Weak<dyn UnsettledSource>;
        inner.engine.register_unsettled_source(source);
        inner.open_term()?;
        let supervisor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("keel-primary".into())
                .spawn(move || inner.supervise())
                .map_err(|_| IoError::Invalid("cannot start the replication supervisor"))?
        };
        Ok(ReplicatedVolume {
            inner,
            supervisor: Some(supervisor),
        })
    }

    /// The local engine volume.
    pub fn volume(&self) -> VolumeId {
        self.inner.volume
    }

    /// Writes `data` at `lba` on every in-sync member.
    pub fn write(&self, lba: u64, data: Bytes, done: WriteDone) {
        self.inner.submit(Change::Write { lba, data }, done);
    }

    /// Zeroes blocks on every in-sync member.
    pub fn write_zeroes(&self, lba: u64, blocks: u32, done: WriteDone) {
        self.inner
            .submit(Change::WriteZeroes(Extent { lba, blocks }), done);
    }

    /// Deallocates blocks on every in-sync member.
    pub fn deallocate(&self, lba: u64, blocks: u32, done: WriteDone) {
        self.inner
            .submit(Change::Deallocate(Extent { lba, blocks }), done);
    }

    /// Makes every acknowledged change durable across power loss on every in-sync member.
    pub fn flush(&self, done: WriteDone) {
        self.inner.submit(Change::Flush, done);
    }

    /// Takes snapshot `name` of the volume on this node and on every member
    /// that holds every block, at one point of the write order: it holds
    /// every change submitted before this call and none submitted after.
    /// Returns the members that took it; a member still catching up does
    /// not (its copy would miss blocks), nor one that failed to.
    pub fn snapshot(&self, name: &str) -> Result<Vec<NodeId>, IoError> {
        self.inner.ordered_control(Frame::Snapshot {
            committed: 0,
            name: name.to_owned(),
        })
    }

    /// Makes the volume's content that of its snapshot `name` on this node
    /// and every member, at one point of the write order. A member that
    /// holds every block rolls back its own copy of the snapshot; any other
    /// (or one that fails to) leaves the in-sync set before this returns and
    /// is rebuilt from a full copy.
    pub fn rollback(&self, name: &str) -> Result<(), IoError> {
        self.inner
            .ordered_control(Frame::Rollback {
                committed: 0,
                name: name.to_owned(),
            })
            .map(|_| ())
    }

    /// Grows the volume to `size_bytes` on this node and every in-sync member.
    pub fn resize(&self, size_bytes: u64) -> Result<(), IoError> {
        self.inner
            .ordered_control(Frame::Resize {
                committed: 0,
                size_bytes,
            })
            .map(|_| ())
    }

    /// True while this term holds: not deposed, and the lease it started
    /// under is valid.
    pub fn holds_term(&self) -> bool {
        !self.inner.state.lock().deposed && self.inner.authority.lease_valid()
    }

    /// True while this node may serve reads of the volume: its term holds,
    /// and every in-sync member agrees on what older terms left uncertain
    /// (before that, a block read here might exist on no other member, and
    /// vanish if this node died before copying it).
    pub fn may_serve(&self) -> bool {
        let state = self.inner.state.lock();
        !state.deposed && !state.reconciling && self.inner.authority.lease_valid()
    }

    /// The replication status.
    pub fn status(&self) -> ReplicationStatus {
        let state = self.inner.state.lock();
        ReplicationStatus {
            epoch: self.inner.config.epoch,
            deposed: state.deposed,
            reconciling: state.reconciling,
            members: state
                .members
                .iter()
                .map(|m| MemberStatus {
                    node: m.node,
                    state: m.state,
                    missed_blocks: m.missed.len(),
                    resync_total_blocks: m.resync_total_blocks,
                    resync_bytes: m.resync_bytes,
                    seeded_snapshots: m.seeding.taken.clone(),
                })
                .collect(),
        }
    }

    /// Replaces member `old`, which must be out of the in-sync set (away), by
    /// `new`: a node that holds nothing yet. It is given `snapshots` (this
    /// node's snapshots of the volume, by name, oldest first), each taken on
    /// it once its volume holds that snapshot's content, then the volume's
    /// current content; [`MemberStatus::seeded_snapshots`] names those it
    /// took. Returns false (and changes nothing) if `old` is not such a member.
    pub fn replace_member(&self, old: NodeId, new: MemberSpec, snapshots: Vec<String>) -> bool {
        let blocks = self.inner.volume_blocks();
        let mut state = self.inner.state.lock();
        let Some(member) = state.members.iter_mut().find(|m| m.node == old) else {
            return false;
        };
        if member.state != MemberState::Detached || member.link.is_some() {
            return false;
        }
        member.node = new.node;
        member.addr = new.addr;
        member.seeding = Seeding {
            queue: snapshots.into(),
            ..Seeding::default()
        };
        member.missed = if member.seeding.queue.is_empty() {
            BlockSet::full(blocks)
        } else {
            BlockSet::new()
        };
        member.written_since_attach.clear();
        member.copies.clear();
        member.resync_total_blocks = 0;
        member.resync_bytes = 0;
        member.last_attempt = None;
        tracing::info!(volume = %self.inner.config.volume_name, %old, new = %new.node, snapshots = member.seeding.queue.len(), "member replaced; it is rebuilt from its snapshots and a copy");
        true
    }

    /// Points member `node` at `addr`, where it now listens for replication
    /// (a node restarted on another address). An open link is left alone: it
    /// fails once the old listener is gone, and the next attempt goes to
    /// `addr`. Returns whether the address changed.
    pub fn set_member_addr(&self, node: NodeId, addr: SocketAddr) -> bool {
        let mut state = self.inner.state.lock();
        let Some(member) = state.members.iter_mut().find(|m| m.node == node) else {
            return false;
        };
        if member.addr == addr {
            return false;
        }
        tracing::info!(volume = %self.inner.config.volume_name, member = %node, old = %member.addr, new = %addr, "member moved to a new replication address");
        member.addr = addr;
        member.last_attempt = None;
        true
    }

    /// Stops replicating: closes every link and fails changes still waiting.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.changed.notify_all();
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        let finished = {
            let mut state = self.inner.state.lock();
            for member in &mut state.members {
                if let Some(link) = member.link.take() {
                    let _ = link.socket.shutdown(Shutdown::Both);
                }
            }
            self.inner.hand_over_pending(&state);
            let mut finished = Vec::new();
            for pending in state.pending.values_mut() {
                if let Some(done) = pending.done.take() {
                    finished.push((done, Err(IoError::NotPrimary)));
                }
            }
            finished
        };
        run_finished(finished);
    }
}

impl Drop for ReplicatedVolume {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn submit(self: &Arc<Self>, change: Change, done: WriteDone) {
        let extent = match &change {
            Change::Write { lba, data } => Some(Extent {
                lba: *lba,
                blocks: (data.len() / self.sector_bytes as usize) as u32,
            }),
            Change::WriteZeroes(e) | Change::Deallocate(e) => Some(*e),
            Change::Flush => None,
        };
        // A control change may hold the gate while it waits for local writes
        // this thread's plug still holds back: let them go before waiting.
        crate::log::form_deferred();
        let _gate = self.gate.read();
        let mut state = self.state.lock();
        if state.deposed || !self.authority.lease_valid() {
            drop(state);
            return done(Err(IoError::NotPrimary));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let committed = state.committed();
        let frame = match &change {
            Change::Write { lba, data } => Frame::Write {
                committed,
                lba: *lba,
                data: data.clone(),
            },
            Change::WriteZeroes(extent) => Frame::WriteZeroes {
                committed,
                extent: *extent,
            },
            Change::Deallocate(extent) => Frame::Deallocate {
                committed,
                extent: *extent,
            },
            Change::Flush => Frame::Flush { committed },
        };
        let envelope = Envelope {
            seq,
            epoch: self.config.epoch,
            frame,
        };
        let (blocking, sent) = state.fan_out(&envelope, extent);
        state.pending.insert(
            seq,
            Pending {
                blocking,
                sent,
                acked: 0,
                extent,
                whole_volume: false,
                error: None,
                done: Some(done),
                acked_to: None,
            },
        );
        drop(state);
        let inner = self.clone();
        let local: WriteDone = Box::new(move |result| inner.part_done(seq, LOCAL, result.err()));
        match change {
            Change::Write { lba, data } => self.engine.write(self.volume, lba, data, local),
            Change::WriteZeroes(e) => self
                .engine
                .write_zeroes(self.volume, e.lba, e.blocks, local),
            Change::Deallocate(e) => self.engine.deallocate(self.volume, e.lba, e.blocks, local),
            Change::Flush => self.engine.flush(local),
        }
    }

    /// Runs a snapshot, rollback or resize at one point of the write order:
    /// no change is submitted meanwhile, every earlier one is applied locally
    /// first, and the frame goes to the members in order. Returns the
    /// members that applied it.
    fn ordered_control(self: &Arc<Self>, frame: Frame) -> Result<Vec<NodeId>, IoError> {
        let blocks = self.volume_blocks();
        let _gate = self.gate.write();
        let mut state = self.state.lock();
        if state.deposed || !self.authority.lease_valid() {
            return Err(IoError::NotPrimary);
        }
        while state.pending.values().any(|p| p.sent & LOCAL != 0) {
            self.changed.wait_for(&mut state, Duration::from_millis(10));
        }
        self.apply_control_locally(&frame)?;
        let seq = state.next_seq;
        state.next_seq += 1;
        let committed = state.committed();
        let frame = frame.with_committed(committed);
        let whole_volume = matches!(frame, Frame::Rollback { .. });
        let envelope = Envelope {
            seq,
            epoch: self.config.epoch,
            frame,
        };
        let (blocking, sent) = match &envelope.frame {
            Frame::Snapshot { .. } => {
                let sent = state.fan_out_to_whole(&envelope);
                (sent, sent)
            }
            Frame::Rollback { .. } => {
                let sent = state.fan_out_to_whole(&envelope);
                let dropping = state.lose_the_rest(sent, blocks, &self.config.volume_name);
                (sent | dropping, sent)
            }
            _ => {
                let (blocking, sent) = state.fan_out(&envelope, None);
                // Nothing local is pending: the local part ran above.
                (blocking & !LOCAL, sent & !LOCAL)
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (acked_tx, acked_rx) = crossbeam_channel::bounded(1);
        state.pending.insert(
            seq,
            Pending {
                blocking,
                sent,
                acked: 0,
                extent: None,
                whole_volume,
                error: None,
                done: Some(Box::new(move |result| {
                    let _ = tx.send(result);
                })),
                acked_to: Some(acked_tx),
            },
        );
        let mut finished = Vec::new();
        self.settle(&mut state, seq, &mut finished);
        drop(state);
        self.changed.notify_all();
        run_finished(finished);
        rx.recv().unwrap_or(Err(IoError::NotPrimary))?;
        let acked = acked_rx.try_recv().unwrap_or(0);
        let state = self.state.lock();
        Ok(state
            .members
            .iter()
            .enumerate()
            .filter(|(index, _)| acked & member_bit(*index) != 0)
            .map(|(_, m)| m.node)
            .collect())
    }

    /// The local part of a control change.
    fn apply_control_locally(&self, frame: &Frame) -> Result<(), IoError> {
        let refused = |err: crate::VolumeError, what: &'static str| match err {
            crate::VolumeError::Io(err) => err,
            _ => IoError::Invalid(what),
        };
        match frame {
            Frame::Snapshot { name, .. } => self
                .engine
                .create_snapshot(self.volume, name)
                .map(|_| ())
                .map_err(|e| refused(e, "snapshot refused")),
            Frame::Rollback { name, .. } => {
                let snapshot = self
                    .engine
                    .volume_by_name(name)
                    .ok_or(IoError::Invalid("no such snapshot"))?;
                self.engine
                    .revert_volume(self.volume, snapshot.id)
                    .map(|_| ())
                    .map_err(|e| refused(e, "rollback refused"))
            }
            Frame::Resize { size_bytes, .. } => self
                .engine
                .resize_volume(self.volume, *size_bytes)
                .map(|_| ())
                .map_err(|e| refused(e, "resize refused")),
            _ => Err(IoError::Invalid("not a control frame")),
        }
    }

    /// One part of change `seq` finished.
    fn part_done(&self, seq: u64, bits: u16, error: Option<IoError>) {
        let finished = {
            let mut state = self.state.lock();
            let mut finished = Vec::new();
            if let Some(pending) = state.pending.get_mut(&seq) {
                pending.blocking &= !bits;
                pending.sent &= !bits;
                if let Some(error) = error {
                    pending.error.get_or_insert(error);
                }
            }
            self.settle(&mut state, seq, &mut finished);
            finished
        };
        self.changed.notify_all();
        run_finished(finished);
    }

    /// Answers the host for `seq` once nothing blocks it, and forgets it once
    /// no member owes an answer either.
    fn settle(&self, state: &mut State, seq: u64, finished: &mut Finished) {
        let Some(pending) = state.pending.get_mut(&seq) else {
            return;
        };
        if pending.blocking == 0 {
            if let Some(done) = pending.done.take() {
                let result = match pending.error.clone() {
                    Some(error) => Err(error),
                    None if state.deposed || !self.authority.lease_valid() => {
                        Err(IoError::NotPrimary)
                    }
                    None => Ok(()),
                };
                if let Some(acked_to) = pending.acked_to.take() {
                    let _ = acked_to.send(pending.acked);
                }
                finished.push((done, result));
            }
            if pending.sent == 0 {
                state.pending.remove(&seq);
            }
        }
    }

    /// A member answered frame `seq` on link `generation`.
    fn member_answered(&self, index: usize, generation: u64, seq: u64, status: AckStatus) {
        if status == AckStatus::Failed {
            self.link_failed(index, generation);
            return;
        }
        let finished = {
            let mut state = self.state.lock();
            let mut finished = Vec::new();
            let member = &mut state.members[index];
            if member.link.as_ref().map(|l| l.generation) != Some(generation) {
                return;
            }
            if let Some(extent) = member.copies.remove(&seq) {
                member.missed.remove(extent);
                member.resync_bytes += u64::from(extent.blocks) * u64::from(self.sector_bytes);
            } else if let Some(pending) = state.pending.get_mut(&seq) {
                let bit = member_bit(index);
                pending.sent &= !bit;
                pending.blocking &= !bit;
                pending.acked |= bit;
                self.settle(&mut state, seq, &mut finished);
            }
            finished
        };
        self.changed.notify_all();
        run_finished(finished);
    }

    /// The link to member `index` failed: every change it did not answer is
    /// recorded as missed; an in-sync member starts dropping out of the set.
    fn link_failed(&self, index: usize, generation: u64) {
        let blocks = self.volume_blocks();
        {
            let mut state = self.state.lock();
            let member = &state.members[index];
            if member.link.as_ref().map(|l| l.generation) != Some(generation) {
                return;
            }
            state.lose_link(index, blocks, &self.config.volume_name);
        }
        self.changed.notify_all();
    }

    /// The first thing a term does: reach the in-sync members, learn what older
    /// terms left uncertain, and make every member agree with this node on it.
    fn open_term(self: &Arc<Self>) -> Result<(), IoError> {
        let mut uncertain = BlockSet::new();
        for extent in &self.config.uncertain {
            uncertain.insert(*extent);
        }
        let count = self.state.lock().members.len();
        for index in 0..count {
            let in_sync = self.state.lock().members[index].state == MemberState::InSync;
            if !in_sync {
                continue;
            }
            match self.attach(index) {
                Ok(reported) => {
                    if let Some(reported) = reported {
                        for extent in reported {
                            uncertain.insert(extent);
                        }
                    } else {
                        let mut state = self.state.lock();
                        let blocks = self.volume_blocks();
                        state.members[index].missed = BlockSet::full(blocks);
                    }
                }
                Err(()) => {
                    // Unreachable now: its uncertain extents are unknown, so
                    // only a full copy can make it agree.
                    let mut state = self.state.lock();
                    let blocks = self.volume_blocks();
                    let member = &mut state.members[index];
                    member.state = MemberState::Dropping;
                    member.missed = BlockSet::full(blocks);
                }
            }
        }
        let mut state = self.state.lock();
        for member in &mut state.members {
            member.missed.union_with(&uncertain);
            if member.state == MemberState::InSync && !member.missed.is_empty() {
                member.resync_total_blocks = member.missed.len();
            }
        }
        Ok(())
    }

    fn volume_blocks(&self) -> u64 {
        self.engine.volume_size(self.volume).unwrap_or(0) / u64::from(self.sector_bytes)
    }

    /// Connects to member `index` and opens this term's stream. `Ok(None)`
    /// when the member lost track of its uncertain extents.
    fn attach(self: &Arc<Self>, index: usize) -> Result<Option<Vec<Extent>>, ()> {
        let (node, addr) = {
            let mut state = self.state.lock();
            let member = &mut state.members[index];
            member.last_attempt = Some(Instant::now());
            (member.node, member.addr)
        };
        let socket = TcpStream::connect_timeout(&addr, HELLO_TIMEOUT).map_err(|err| {
            tracing::debug!(volume = %self.config.volume_name, member = %node, error = %err, "member unreachable");
        })?;
        let _ = socket.set_nodelay(true);
        let _ = socket.set_read_timeout(Some(HELLO_TIMEOUT));
        let size_bytes = self.engine.volume_size(self.volume).unwrap_or(0);
        let hello = Envelope {
            seq: 0,
            epoch: self.config.epoch,
            frame: Frame::Hello {
                volume: self.config.volume_name.clone(),
                primary: self.config.node,
                sector_bytes: self.sector_bytes,
                size_bytes,
            },
        };
        write_frame(&socket, &hello).map_err(|_| ())?;
        let mut reader = FrameReader::new(socket.try_clone().map_err(|_| ())?);
        let answer = reader.next().map_err(|_| ())?.ok_or(())?;
        let Frame::HelloAck {
            status,
            known_epoch,
            uncertain,
            uncertain_overflow,
        } = answer.frame
        else {
            return Err(());
        };
        if status != HelloStatus::Admitted {
            tracing::warn!(volume = %self.config.volume_name, member = %node, ?status, known_epoch, "member refused this term's stream");
            if status == HelloStatus::StaleEpoch {
                self.depose();
            }
            return Err(());
        }
        let _ = socket.set_read_timeout(None);
        let generation = self.link_generation.fetch_add(1, Ordering::Relaxed);
        let (frames, queue) = crossbeam_channel::unbounded::<Bytes>();
        {
            let writer_socket = socket.try_clone().map_err(|_| ())?;
            let inner = self.clone();
            std::thread::Builder::new()
                .name("keel-repl-send".into())
                .spawn(move || send_frames(writer_socket, queue, &inner, index, generation))
                .map_err(|_| ())?;
        }
        {
            let inner = self.clone();
            std::thread::Builder::new()
                .name("keel-repl-recv".into())
                .spawn(move || receive_acks(reader, &inner, index, generation))
                .map_err(|_| ())?;
        }
        let mut state = self.state.lock();
        let member = &mut state.members[index];
        member.link = Some(Link {
            generation,
            frames,
            socket,
        });
        member.written_since_attach.clear();
        tracing::info!(volume = %self.config.volume_name, member = %node, epoch = self.config.epoch, "replication link up");
        Ok(if uncertain_overflow {
            None
        } else {
            Some(uncertain)
        })
    }

    /// The term ends with `state.pending` changes not on every member: the
    /// engine carries their extents, so this node reports them later.
    fn hand_over_pending(&self, state: &State) {
        let extents = state.pending_extents(self.volume_blocks());
        if !extents.is_empty() {
            self.engine.carry_unsettled(self.volume, &extents);
        }
    }

    fn depose(&self) {
        let finished = {
            let mut state = self.state.lock();
            state.deposed = true;
            self.hand_over_pending(&state);
            let mut finished = Vec::new();
            for pending in state.pending.values_mut() {
                if let Some(done) = pending.done.take() {
                    finished.push((done, Err(IoError::NotPrimary)));
                }
            }
            finished
        };
        tracing::warn!(volume = %self.config.volume_name, epoch = self.config.epoch, "deposed: this node no longer serves the volume");
        self.changed.notify_all();
        run_finished(finished);
    }

    /// The supervisor: drops failed members from the in-sync set, reaches
    /// members that are away, resyncs them and adds them back.
    fn supervise(self: &Arc<Self>) {
        while !self.stop.load(Ordering::Acquire) {
            if self.state.lock().deposed {
                return;
            }
            let mut busy = false;
            let count = self.state.lock().members.len();
            for index in 0..count {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                busy |= self.tend(index);
            }
            self.finish_reconciling();
            if !busy {
                let mut state = self.state.lock();
                self.changed
                    .wait_for(&mut state, Duration::from_millis(100));
            }
        }
    }

    /// One step of work for member `index`; true when more is ready at once.
    fn tend(self: &Arc<Self>, index: usize) -> bool {
        let (state_now, node, last_attempt, has_link) = {
            let state = self.state.lock();
            let m = &state.members[index];
            (m.state, m.node, m.last_attempt, m.link.is_some())
        };
        match state_now {
            MemberState::Dropping => {
                match self.authority.remove_in_sync(
                    &self.config.volume_name,
                    self.config.epoch,
                    node,
                ) {
                    Ok(()) => self.dropped(index),
                    Err(Deposed) => self.depose(),
                }
                true
            }
            MemberState::Detached => {
                if last_attempt.is_some_and(|t| t.elapsed() < self.config.reconnect_interval) {
                    return false;
                }
                match self.attach(index) {
                    Ok(reported) => {
                        if !self.resume_seeding(index) {
                            self.begin_resync(index, reported);
                        }
                        true
                    }
                    Err(()) => false,
                }
            }
            MemberState::Seeding => self.seed_step(index),
            MemberState::InSync if has_link => self.copy_step(index),
            MemberState::Resyncing => {
                let caught_up = {
                    let state = self.state.lock();
                    let m = &state.members[index];
                    m.missed.is_empty() && m.copies.is_empty()
                };
                if caught_up {
                    self.join(index);
                    true
                } else {
                    self.copy_step(index)
                }
            }
            MemberState::InSync | MemberState::Joining => false,
        }
    }

    /// A dropping member is out of the in-sync set: changes stop waiting for it.
    fn dropped(&self, index: usize) {
        let finished = {
            let mut state = self.state.lock();
            let bit = member_bit(index);
            let member = &mut state.members[index];
            member.state = MemberState::Detached;
            tracing::warn!(volume = %self.config.volume_name, member = %member.node, "member left the in-sync set");
            let seqs: Vec<u64> = state.pending.keys().copied().collect();
            let mut finished = Vec::new();
            for seq in seqs {
                if let Some(pending) = state.pending.get_mut(&seq) {
                    pending.blocking &= !bit;
                }
                self.settle(&mut state, seq, &mut finished);
            }
            finished
        };
        self.changed.notify_all();
        run_finished(finished);
    }

    /// Member `index` is attached again: wait until every change made before
    /// it was attached is applied locally (so copies read it), then copy.
    fn begin_resync(&self, index: usize, reported: Option<Vec<Extent>>) {
        let blocks = self.volume_blocks();
        let mut state = self.state.lock();
        let barrier = state.next_seq;
        let member = &mut state.members[index];
        // Members that left during this term (or long before it, with
        // `missed` the whole volume) lack only what `missed` says.
        if std::mem::take(&mut member.report_pending) {
            match reported {
                Some(extents) => {
                    for extent in extents {
                        member.missed.insert(extent);
                    }
                }
                None => member.missed = BlockSet::full(blocks),
            }
        }
        member.state = MemberState::Resyncing;
        member.resync_total_blocks = member.missed.len();
        tracing::info!(volume = %self.config.volume_name, member = %member.node, blocks = member.missed.len(), "resync started");
        while state
            .pending
            .range(..barrier)
            .any(|(_, p)| p.sent & LOCAL != 0)
        {
            self.changed.wait_for(&mut state, Duration::from_millis(10));
        }
    }

    /// Member `index` is attached again while it has snapshots to be built:
    /// seeding goes on where it stopped (copies and snapshot frames are
    /// idempotent). False when it has none.
    fn resume_seeding(&self, index: usize) -> bool {
        let mut state = self.state.lock();
        let member = &mut state.members[index];
        if member.seeding.queue.is_empty() {
            return false;
        }
        // An unanswered snapshot frame is sent again (the replica takes an
        // existing name as done).
        member.seeding.frame = None;
        member.state = MemberState::Seeding;
        tracing::info!(volume = %self.config.volume_name, member = %member.node, snapshots = member.seeding.queue.len(), "seeding snapshots");
        true
    }

    /// One step of building the next snapshot on a seeding member: load what
    /// it lacks of it, copy that, take the snapshot there, and once every
    /// snapshot is built, resync the volume's content. True when it did work.
    fn seed_step(&self, index: usize) -> bool {
        let (next, building, frame, copying) = {
            let state = self.state.lock();
            let seeding = &state.members[index].seeding;
            let member = &state.members[index];
            (
                seeding.queue.front().cloned(),
                seeding.building,
                seeding.frame,
                !member.missed.is_empty()
                    || member.copies.keys().any(|s| Some(*s) != seeding.frame),
            )
        };
        let Some(next) = next else {
            self.end_seeding(index, false);
            return true;
        };
        match (building, frame) {
            (None, _) => {
                // Load what the member's volume (the last snapshot built, or
                // nothing) lacks of `next`.
                let base = self.state.lock().members[index].seeding.base;
                let snapshot = self
                    .engine
                    .volume_by_name(&next)
                    .filter(|v| v.parent == Some(self.volume));
                let extents = snapshot
                    .as_ref()
                    .map(|s| self.engine.differing_extents(base, s.id));
                match (snapshot, extents) {
                    (Some(snapshot), Some(Ok(extents))) => {
                        let mut state = self.state.lock();
                        let member = &mut state.members[index];
                        member.missed.clear();
                        for extent in extents {
                            member.missed.insert(extent);
                        }
                        member.resync_total_blocks = member.missed.len();
                        member.seeding.building = Some(snapshot.id);
                    }
                    _ => {
                        tracing::warn!(volume = %self.config.volume_name, snapshot = %next, "a snapshot to seed is gone; the member gets the volume whole");
                        self.end_seeding(index, true);
                    }
                }
                true
            }
            (Some(_), _) if copying => self.copy_step(index),
            (Some(_), None) => {
                let name = next;
                let mut state = self.state.lock();
                let (seq, bytes) = state.next_envelope(self.config.epoch, |committed| {
                    Frame::Snapshot { committed, name }
                });
                let member = &mut state.members[index];
                let Some(link) = &member.link else {
                    return false;
                };
                let _ = link.frames.send(bytes);
                // Tracked as a copy of nothing: its answer clears it.
                member.copies.insert(seq, Extent { lba: 0, blocks: 0 });
                member.seeding.frame = Some(seq);
                true
            }
            (Some(id), Some(seq)) => {
                let name = next;
                let node = {
                    let state = self.state.lock();
                    let member = &state.members[index];
                    if member.copies.contains_key(&seq) {
                        return false;
                    }
                    member.node
                };
                // The member holds the snapshot: say so before anything
                // counts on it.
                if self
                    .authority
                    .add_snapshot_holder(&self.config.volume_name, self.config.epoch, node, &name)
                    .is_err()
                {
                    self.depose();
                    return false;
                }
                let mut state = self.state.lock();
                let member = &mut state.members[index];
                if member.seeding.frame != Some(seq) {
                    // The link failed meanwhile: the snapshot is sent again.
                    return true;
                }
                member.seeding.queue.pop_front();
                member.seeding.frame = None;
                member.seeding.building = None;
                member.seeding.base = Some(id);
                tracing::info!(volume = %self.config.volume_name, member = %member.node, snapshot = %name, "seeded a snapshot");
                member.seeding.taken.push(name);
                true
            }
        }
    }

    /// Seeding of member `index` is over: it resyncs what its volume (the
    /// last snapshot built) lacks of the volume now, and every change not
    /// yet applied here; with `abandon`, or if nothing was built, the whole
    /// volume.
    fn end_seeding(&self, index: usize, abandon: bool) {
        let blocks = self.volume_blocks();
        let base = {
            let mut state = self.state.lock();
            let member = &mut state.members[index];
            let base = member.seeding.base.filter(|_| !abandon);
            member.seeding.queue.clear();
            member.seeding.building = None;
            member.seeding.frame = None;
            // Copies of a snapshot still in flight must not count as copies
            // of the volume: their answers are ignored from here (the
            // member applies them before anything sent later).
            member.copies.clear();
            base
        };
        // The volume as applied here now: changes applied later are either
        // pending (added below) or sent to the member live.
        let missed = match base.map(|b| self.engine.differing_extents(Some(b), self.volume)) {
            Some(Ok(extents)) => {
                let mut set = BlockSet::new();
                for extent in extents {
                    set.insert(extent);
                }
                set
            }
            _ => BlockSet::full(blocks),
        };
        {
            let mut state = self.state.lock();
            let pending = state.pending_extents(blocks);
            let member = &mut state.members[index];
            member.missed = missed;
            for extent in pending {
                member.missed.insert(extent);
            }
            member.state = MemberState::Detached;
        }
        // Attached still: resync starts at once (as after an attach).
        let attached = self.state.lock().members[index].link.is_some();
        if attached {
            self.begin_resync(index, None);
        }
    }

    /// Sends the next copies to member `index`; true when it sent some.
    fn copy_step(&self, index: usize) -> bool {
        let sector = u64::from(self.sector_bytes);
        let max_blocks = (COPY_BYTES_MAX / sector) as u32;
        let run = {
            let mut state = self.state.lock();
            let limit = if state.pending.len() > FOREGROUND_BUSY {
                1
            } else {
                COPIES_IN_FLIGHT_MAX
            };
            let member = &mut state.members[index];
            if member.link.is_none() || member.copies.len() >= limit {
                return false;
            }
            // Blocks written since attach reach the member by the live stream.
            let written = std::mem::take(&mut member.written_since_attach);
            for extent in written.extents(u32::MAX) {
                member.missed.remove(extent);
            }
            member.written_since_attach = written;
            // A seeding member gets the snapshot being built, not the volume.
            let source = match (member.state, &member.seeding.building) {
                (MemberState::Seeding, Some(snapshot)) => *snapshot,
                _ => self.volume,
            };
            let in_flight: Vec<Extent> = member.copies.values().copied().collect();
            let mut from = 0;
            loop {
                let Some(run) = member.missed.next_run(from, max_blocks) else {
                    return false;
                };
                let overlaps = in_flight.iter().find(|e| {
                    run.lba < e.lba + u64::from(e.blocks) && e.lba < run.lba + u64::from(run.blocks)
                });
                match overlaps {
                    Some(e) => from = e.lba + u64::from(e.blocks),
                    None => break (run, source),
                }
            }
        };
        let (run, source) = run;
        let data = match self.engine.read_wait(source, run.lba, run.blocks) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(volume = %self.config.volume_name, lba = run.lba, error = %err, "resync cannot read the primary's copy");
                if source != self.volume {
                    // The snapshot went away (deleted) or is smaller than
                    // what a rollback left to copy: the member gets the
                    // volume whole instead.
                    self.end_seeding(index, true);
                }
                return false;
            }
        };
        let paced = Duration::from_secs_f64(
            data.len() as f64 / self.config.resync_bytes_per_s.max(1) as f64,
        );
        {
            let mut state = self.state.lock();
            let committed = state.committed();
            let epoch = self.config.epoch;
            let mut seqs = Vec::new();
            let member_ref = &state.members[index];
            if member_ref.link.is_none() {
                return false;
            }
            // Split the run where blocks were written meanwhile.
            let mut pieces = Vec::new();
            let mut start = None;
            for b in 0..u64::from(run.blocks) {
                let lba = run.lba + b;
                let fresh = !member_ref.written_since_attach.contains(lba);
                match (fresh, start) {
                    (true, None) => start = Some(b),
                    (false, Some(s)) => {
                        pieces.push((s, b));
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                pieces.push((s, u64::from(run.blocks)));
            }
            for (first, end) in pieces {
                let seq = state.next_seq;
                state.next_seq += 1;
                let bytes_from = (first * sector) as usize;
                let bytes_to = (end * sector) as usize;
                let slice = data.slice(bytes_from..bytes_to);
                let extent = Extent {
                    lba: run.lba + first,
                    blocks: (end - first) as u32,
                };
                let frame = if slice.iter().all(|b| *b == 0) {
                    Frame::Deallocate { committed, extent }
                } else {
                    Frame::Copy {
                        committed,
                        lba: extent.lba,
                        data: slice,
                    }
                };
                seqs.push((seq, extent, Envelope { seq, epoch, frame }.to_bytes()));
            }
            let member = &mut state.members[index];
            member.missed.remove(run);
            for (seq, extent, bytes) in seqs {
                member.missed.insert(extent);
                member.copies.insert(seq, extent);
                if let Some(link) = &member.link {
                    let _ = link.frames.send(bytes);
                }
            }
        }
        std::thread::sleep(paced);
        true
    }

    /// Member `index` has every block: changes wait for it again, then it is
    /// added to the in-sync set.
    fn join(&self, index: usize) {
        let node = {
            let mut state = self.state.lock();
            let member = &mut state.members[index];
            member.state = MemberState::Joining;
            member.written_since_attach.clear();
            member.node
        };
        match self
            .authority
            .add_in_sync(&self.config.volume_name, self.config.epoch, node)
        {
            Ok(()) => {
                let mut state = self.state.lock();
                let member = &mut state.members[index];
                if member.state == MemberState::Joining {
                    member.state = MemberState::InSync;
                    tracing::info!(volume = %self.config.volume_name, member = %node, bytes = member.resync_bytes, "member rejoined the in-sync set");
                }
            }
            Err(Deposed) => self.depose(),
        }
    }

    /// Once every in-sync member agrees on the extents older terms left
    /// uncertain, tells them so (they forget those extents).
    fn finish_reconciling(&self) {
        let mut state = self.state.lock();
        if !state.reconciling {
            return;
        }
        let agreed = state.members.iter().all(|m| {
            m.state != MemberState::InSync || (m.missed.is_empty() && m.copies.is_empty())
        });
        if !agreed {
            return;
        }
        state.reconciling = false;
        // The term began from this node's carried set (in `config.uncertain`);
        // every in-sync member agrees on it now, and members out of the set
        // hold it in `missed`.
        self.engine.forget_unsettled(self.volume);
        let (_, bytes) = state.next_envelope(self.config.epoch, |committed| Frame::Reconciled {
            committed,
        });
        for member in &state.members {
            if let Some(link) = &member.link {
                let _ = link.frames.send(bytes.clone());
            }
        }
    }
}

impl UnsettledSource for Inner {
    fn report_unsettled(&self, report: &mut dyn FnMut(VolumeId, Extent)) {
        let blocks = self.volume_blocks();
        for extent in self.state.lock().pending_extents(blocks) {
            report(self.volume, extent);
        }
    }
}

impl State {
    /// The extents of changes not yet answered: `blocks` is the volume's
    /// size in sectors, for a rollback.
    fn pending_extents(&self, blocks: u64) -> Vec<Extent> {
        let mut extents = Vec::new();
        for pending in self.pending.values() {
            if pending.whole_volume {
                return BlockSet::full(blocks).extents(u32::MAX);
            }
            extents.extend(pending.extent);
        }
        extents
    }

    /// Member `index` is cut off: every change it did not answer is recorded
    /// as missed (a rollback: every block); an in-sync member starts
    /// dropping out of the set.
    fn lose_link(&mut self, index: usize, volume_blocks: u64, volume_name: &str) {
        let State {
            members, pending, ..
        } = self;
        let member = &mut members[index];
        if let Some(link) = member.link.take() {
            let _ = link.socket.shutdown(Shutdown::Both);
        }
        let bit = member_bit(index);
        for change in pending.values_mut() {
            if change.sent & bit != 0 {
                change.sent &= !bit;
                if change.whole_volume {
                    member.missed = BlockSet::full(volume_blocks);
                } else if let Some(extent) = change.extent {
                    member.missed.insert(extent);
                }
            }
        }
        let written = std::mem::take(&mut member.written_since_attach);
        member.missed.union_with(&written);
        member.copies.clear();
        member.state = match member.state {
            MemberState::InSync | MemberState::Joining | MemberState::Dropping => {
                MemberState::Dropping
            }
            MemberState::Seeding | MemberState::Resyncing | MemberState::Detached => {
                MemberState::Detached
            }
        };
        tracing::warn!(volume = %volume_name, member = %member.node, state = ?member.state, "replication link failed");
    }

    /// Sends `envelope` to every member that holds every block (so its own
    /// copy of a snapshot is whole); returns them.
    fn fan_out_to_whole(&mut self, envelope: &Envelope) -> u16 {
        let mut bytes = None;
        let mut sent = 0;
        for (index, member) in self.members.iter().enumerate() {
            let whole = matches!(member.state, MemberState::InSync | MemberState::Joining)
                && member.missed.is_empty()
                && member.copies.is_empty();
            if let (true, Some(link)) = (whole, &member.link) {
                let bytes = bytes.get_or_insert_with(|| envelope.to_bytes());
                if link.frames.send(bytes.clone()).is_ok() {
                    sent |= member_bit(index);
                }
            }
        }
        sent
    }

    /// Every member not in `sent` lacks the whole volume after a rollback:
    /// it is cut off and rebuilt from a full copy. Returns the in-sync ones,
    /// which must leave the in-sync set before the rollback is answered.
    fn lose_the_rest(&mut self, sent: u16, volume_blocks: u64, volume_name: &str) -> u16 {
        let mut dropping = 0;
        for index in 0..self.members.len() {
            let bit = member_bit(index);
            if sent & bit != 0 {
                continue;
            }
            if self.members[index].link.is_some() {
                self.lose_link(index, volume_blocks, volume_name);
            }
            let member = &mut self.members[index];
            member.missed = BlockSet::full(volume_blocks);
            member.written_since_attach.clear();
            member.copies.clear();
            if matches!(member.state, MemberState::InSync | MemberState::Joining) {
                member.state = MemberState::Dropping;
            }
            if member.state == MemberState::Dropping {
                dropping |= bit;
            }
        }
        dropping
    }

    /// Sends `envelope` (a change to `extent`, if it changes blocks) to every
    /// attached member and records it as missed by the others; returns the
    /// parts that must answer before the host is (`blocking`) and those that
    /// owe an answer (`sent`), the local engine's included.
    fn fan_out(&mut self, envelope: &Envelope, extent: Option<Extent>) -> (u16, u16) {
        let mut bytes = None;
        let mut blocking = LOCAL;
        let mut sent = LOCAL;
        for (index, member) in self.members.iter_mut().enumerate() {
            let bit = member_bit(index);
            let forwarded = match (&member.link, member.state) {
                (
                    Some(link),
                    MemberState::InSync | MemberState::Joining | MemberState::Resyncing,
                ) => {
                    let bytes = bytes.get_or_insert_with(|| envelope.to_bytes());
                    link.frames.send(bytes.clone()).is_ok()
                }
                _ => false,
            };
            if forwarded {
                sent |= bit;
                if let Some(extent) = extent {
                    if !member.missed.is_empty() || !member.copies.is_empty() {
                        member.written_since_attach.insert(extent);
                    }
                }
            } else if member.state == MemberState::Seeding {
                // `missed` is the snapshot being built; what the volume
                // changes meanwhile is found when seeding ends.
            } else if let Some(extent) = extent {
                member.missed.insert(extent);
            }
            if matches!(
                member.state,
                MemberState::InSync | MemberState::Joining | MemberState::Dropping
            ) {
                // A member whose link is gone keeps the change waiting until it
                // is out of the in-sync set (the link failure marks it dropping).
                blocking |= bit;
            }
        }
        (blocking, sent)
    }

    /// Takes the next seq for `frame` (made with the committed watermark)
    /// and encodes it: a frame outside `pending` (a seeding snapshot, the
    /// end of reconciling).
    fn next_envelope(&mut self, epoch: u64, frame: impl FnOnce(u64) -> Frame) -> (u64, Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = frame(self.committed());
        (seq, Envelope { seq, epoch, frame }.to_bytes())
    }

    /// Every change below this seq is answered by everyone it was sent to.
    fn committed(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }
}

fn send_frames(
    socket: TcpStream,
    queue: Receiver<Bytes>,
    inner: &Inner,
    index: usize,
    generation: u64,
) {
    use std::io::Write;
    let mut socket = socket;
    let mut out = BytesMut::new();
    while let Ok(first) = queue.recv() {
        out.extend_from_slice(&first);
        while out.len() < 1 << 20 {
            match queue.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if socket.write_all(&out).is_err() {
            inner.link_failed(index, generation);
            return;
        }
        out.clear();
    }
}

fn receive_acks(mut reader: FrameReader, inner: &Inner, index: usize, generation: u64) {
    loop {
        match reader.next() {
            Ok(Some(Envelope {
                seq,
                epoch,
                frame: Frame::Ack { status },
            })) if epoch == inner.config.epoch => {
                inner.member_answered(index, generation, seq, status);
            }
            Ok(other) => {
                if other.is_some() {
                    tracing::warn!(volume = %inner.config.volume_name, "member sent an unexpected frame");
                }
                inner.link_failed(index, generation);
                return;
            }
            Err(err) => {
                tracing::debug!(volume = %inner.config.volume_name, error = %err, "replication link read failed");
                inner.link_failed(index, generation);
                return;
            }
        }
    }
}
