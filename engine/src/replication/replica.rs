//! The replica side: accepts primaries' streams and applies them to local volumes.
//!
//! One connection carries one volume at one epoch. A [`Frame::Hello`] is
//! admitted only if the cluster names the sender primary at that epoch
//! ([`PrimaryAdmission`]) and no newer epoch was seen for the volume; admitting
//! a stream closes any older stream of the volume first, so frames of a deposed
//! primary are never applied after its successor spoke. Frames are submitted to
//! the engine in stream order (the engine applies overlapping writes in
//! submission order) and acknowledged once the engine acknowledges them.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::stream::{write_frame, FrameReader, StreamError};
use super::wire::{AckStatus, Envelope, Extent, Frame, HelloStatus, NodeId, UNCERTAIN_EXTENTS_MAX};
use crate::{Engine, IoError, VolumeError, VolumeId};

/// What a replica asks of the cluster before it applies a primary's frames.
pub trait PrimaryAdmission: Send + Sync {
    /// True when cluster metadata names `primary` the primary of `volume` at `epoch`.
    fn admits(&self, volume: &str, primary: NodeId, epoch: u64) -> bool;
}

/// Counters of a replica server, for tests and statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Streams admitted.
    pub streams_admitted: u64,
    /// Streams refused at `Hello`.
    pub streams_refused: u64,
    /// Data bytes applied from `Write` frames.
    pub write_bytes: u64,
    /// Data bytes applied from `Copy` (resync) frames.
    pub copy_bytes: u64,
}

/// Serves replication streams for the volumes of one engine.
pub struct ReplicaServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    engine: Arc<Engine>,
    admission: Arc<dyn PrimaryAdmission>,
    streams: Mutex<HashMap<String, StreamState>>,
    next_connection: AtomicU64,
    stop: AtomicBool,
    write_bytes: AtomicU64,
    copy_bytes: AtomicU64,
    admitted: AtomicU64,
    refused: AtomicU64,
}

/// What a replica remembers of one volume's stream across connections.
struct StreamState {
    /// The local volume the stream applies to.
    volume: VolumeId,
    epoch: u64,
    connection: u64,
    socket: Option<TcpStream>,
    committed: u64,
    /// Extents of this epoch's frames above `committed`, in seq order.
    uncertain: VecDeque<(u64, Extent)>,
    /// Uncertain extents of older epochs, kept until the current primary
    /// reports them reconciled.
    inherited: Vec<Extent>,
    overflow: bool,
}

impl StreamState {
    fn record(&mut self, seq: u64, extent: Extent) {
        if self.uncertain.len() + self.inherited.len() >= UNCERTAIN_EXTENTS_MAX {
            self.overflow = true;
            return;
        }
        self.uncertain.push_back((seq, extent));
    }

    fn advance(&mut self, committed: u64) {
        self.committed = self.committed.max(committed);
        while self
            .uncertain
            .front()
            .is_some_and(|(seq, _)| *seq < self.committed)
        {
            self.uncertain.pop_front();
        }
    }

    fn reported(&self) -> Vec<Extent> {
        let mut out = self.inherited.clone();
        out.extend(self.uncertain.iter().map(|(_, e)| *e));
        out
    }
}

impl ReplicaServer {
    /// Listens on `listen` and applies admitted streams to `engine`'s volumes.
    pub fn start(
        engine: Arc<Engine>,
        listen: SocketAddr,
        admission: Arc<dyn PrimaryAdmission>,
    ) -> std::io::Result<ReplicaServer> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            engine,
            admission,
            streams: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            write_bytes: AtomicU64::new(0),
            copy_bytes: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let source: std::sync::Weak<dyn crate::UnsettledSource> =
            Arc::downgrade(&shared) as std::sync::Weak<dyn crate::UnsettledSource>;
        shared.engine.register_unsettled_source(source);
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("keel-replica-accept".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(ReplicaServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address primaries connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters since start.
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            streams_admitted: self.shared.admitted.load(Ordering::Relaxed),
            streams_refused: self.shared.refused.load(Ordering::Relaxed),
            write_bytes: self.shared.write_bytes.load(Ordering::Relaxed),
            copy_bytes: self.shared.copy_bytes.load(Ordering::Relaxed),
        }
    }

    /// The newest epoch admitted for `volume`, if any stream was.
    pub fn epoch_of(&self, volume: &str) -> Option<u64> {
        self.shared.streams.lock().get(volume).map(|s| s.epoch)
    }

    /// Closes the stream of `volume` and returns the extents this replica
    /// applied that may differ between members (all of the volume when it lost
    /// track): what this node, made primary, must make every member agree on
    /// ([`super::PrimaryConfig::uncertain`]).
    pub fn take_uncertain(&self, volume: &str) -> Vec<Extent> {
        self.close_stream(volume);
        let engine = &self.shared.engine;
        let Some(info) = engine.volume_by_name(volume) else {
            return Vec::new();
        };
        let (reported, overflow) = self
            .shared
            .streams
            .lock()
            .get(volume)
            .map_or((Vec::new(), false), |s| (s.reported(), s.overflow));
        let (extents, overflow) = with_carried(reported, overflow, engine, info.id);
        if overflow {
            let blocks = info.size_bytes / u64::from(info.sector_size.bytes());
            return super::BlockSet::full(blocks).extents(u32::MAX);
        }
        extents
    }

    /// Closes the stream of `volume`, if any (the volume is being deleted or
    /// this node became its primary).
    pub fn close_stream(&self, volume: &str) {
        if let Some(state) = self.shared.streams.lock().get_mut(volume) {
            if let Some(socket) = state.socket.take() {
                let _ = socket.shutdown(Shutdown::Both);
            }
            state.connection = 0;
        }
    }
}

impl Drop for ReplicaServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for state in self.shared.streams.lock().values_mut() {
            if let Some(socket) = state.socket.take() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((socket, peer)) => {
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("keel-replica".into())
                    .spawn(move || {
                        if let Err(err) = serve(socket, &shared) {
                            tracing::info!(%peer, error = %err, "replication stream closed");
                        }
                    });
                if let Err(err) = spawned {
                    tracing::warn!(error = %err, "cannot start a replication stream thread");
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => {
                tracing::warn!(error = %err, "replication accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("superseded by a newer stream")]
    Superseded,
}

/// Frames submitted to the engine and not yet completed, so a snapshot or a
/// resize waits for every write before it in the stream.
#[derive(Default)]
struct InFlight {
    count: Mutex<u64>,
    idle: Condvar,
}

impl InFlight {
    fn begin(&self) {
        *self.count.lock() += 1;
    }
    fn end(&self) {
        let mut count = self.count.lock();
        *count -= 1;
        if *count == 0 {
            self.idle.notify_all();
        }
    }
    fn wait_idle(&self) {
        let mut count = self.count.lock();
        while *count > 0 {
            self.idle.wait(&mut count);
        }
    }
}

fn serve(socket: TcpStream, shared: &Arc<Shared>) -> Result<(), StreamEnd> {
    socket.set_nodelay(true)?;
    let mut reader = FrameReader::new(socket.try_clone()?);
    let Some(hello) = reader.next()? else {
        return Ok(());
    };
    let (volume_name, volume, epoch, connection) = match admit(&socket, shared, hello)? {
        Some(admitted) => admitted,
        None => return Ok(()),
    };
    let (acks, ack_queue) = crossbeam_channel::unbounded::<Envelope>();
    let writer = {
        let socket = socket.try_clone()?;
        std::thread::Builder::new()
            .name("keel-replica-ack".into())
            .spawn(move || write_acks(socket, ack_queue))?
    };
    let in_flight = Arc::new(InFlight::default());
    let result = apply_frames(
        &mut reader,
        shared,
        &volume_name,
        volume,
        epoch,
        connection,
        &acks,
        &in_flight,
    );
    in_flight.wait_idle();
    drop(acks);
    let _ = writer.join();
    let _ = socket.shutdown(Shutdown::Both);
    let mut streams = shared.streams.lock();
    if let Some(state) = streams.get_mut(&volume_name) {
        if state.connection == connection {
            state.socket = None;
            state.connection = 0;
        }
    }
    result
}

type Admitted = (String, VolumeId, u64, u64);

fn admit(
    socket: &TcpStream,
    shared: &Arc<Shared>,
    hello: Envelope,
) -> Result<Option<Admitted>, StreamEnd> {
    let Frame::Hello {
        volume: name,
        primary,
        sector_bytes,
        size_bytes,
    } = hello.frame
    else {
        return Err(StreamEnd::Protocol("the first frame is not Hello"));
    };
    let epoch = hello.epoch;
    let mut streams = shared.streams.lock();
    let known_epoch = streams.get(&name).map_or(0, |s| s.epoch);
    let (status, volume) = if epoch < known_epoch {
        (HelloStatus::StaleEpoch, None)
    } else if !shared.admission.admits(&name, primary, epoch) {
        (HelloStatus::NotPrimary, None)
    } else {
        match shared.engine.volume_by_name(&name) {
            // A thick clone still filling the volume would overwrite what
            // the stream applies.
            None => (HelloStatus::NoSuchVolume, None),
            Some(info) if !info.complete => (HelloStatus::NoSuchVolume, None),
            Some(info)
                if info.sector_size.bytes() != sector_bytes
                    || info.kind != crate::VolumeKind::Volume =>
            {
                (HelloStatus::ShapeMismatch, None)
            }
            Some(info) if info.size_bytes > size_bytes => (HelloStatus::ShapeMismatch, None),
            Some(info) => {
                if info.size_bytes < size_bytes {
                    match shared.engine.resize_volume(info.id, size_bytes) {
                        Ok(_) => (HelloStatus::Admitted, Some(info.id)),
                        Err(err) => {
                            tracing::warn!(volume = %name, error = %err, "cannot grow replica to the primary's size");
                            (HelloStatus::ShapeMismatch, None)
                        }
                    }
                } else {
                    (HelloStatus::Admitted, Some(info.id))
                }
            }
        }
    };
    let Some(volume) = volume else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        drop(streams);
        tracing::info!(volume = %name, %primary, epoch, ?status, "replication stream refused");
        write_frame(
            socket,
            &Envelope {
                seq: 0,
                epoch: known_epoch,
                frame: Frame::HelloAck {
                    status,
                    known_epoch,
                    uncertain: Vec::new(),
                    uncertain_overflow: false,
                },
            },
        )?;
        return Ok(None);
    };
    let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let state = streams.entry(name.clone()).or_insert_with(|| StreamState {
        volume,
        epoch,
        connection: 0,
        socket: None,
        committed: 0,
        uncertain: VecDeque::new(),
        inherited: Vec::new(),
        overflow: false,
    });
    if let Some(old) = state.socket.take() {
        // The older stream's frames stop here: its reader checks `connection`
        // before it submits anything.
        let _ = old.shutdown(Shutdown::Both);
    }
    if epoch > state.epoch {
        let older: Vec<Extent> = state.uncertain.drain(..).map(|(_, e)| e).collect();
        state.inherited.extend(older);
        state.committed = 0;
    }
    state.volume = volume;
    state.epoch = epoch;
    state.connection = connection;
    state.socket = Some(socket.try_clone()?);
    let (uncertain, uncertain_overflow) =
        with_carried(state.reported(), state.overflow, &shared.engine, volume);
    let ack = Frame::HelloAck {
        status: HelloStatus::Admitted,
        known_epoch: epoch,
        uncertain,
        uncertain_overflow,
    };
    drop(streams);
    shared.admitted.fetch_add(1, Ordering::Relaxed);
    tracing::info!(volume = %name, %primary, epoch, "replication stream admitted");
    write_frame(
        socket,
        &Envelope {
            seq: 0,
            epoch,
            frame: ack,
        },
    )?;
    Ok(Some((name, volume, epoch, connection)))
}

fn write_acks(mut socket: TcpStream, queue: Receiver<Envelope>) {
    let mut out = BytesMut::new();
    while let Ok(first) = queue.recv() {
        first.encode(&mut out);
        while let Ok(more) = queue.try_recv() {
            more.encode(&mut out);
        }
        if socket.write_all(&out).is_err() {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        out.clear();
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_frames(
    reader: &mut FrameReader,
    shared: &Arc<Shared>,
    name: &str,
    volume: VolumeId,
    epoch: u64,
    connection: u64,
    acks: &Sender<Envelope>,
    in_flight: &Arc<InFlight>,
) -> Result<(), StreamEnd> {
    while let Some(envelope) = reader.next()? {
        if envelope.epoch != epoch {
            return Err(StreamEnd::Protocol("a frame of another epoch"));
        }
        let seq = envelope.seq;
        {
            let mut streams = shared.streams.lock();
            let Some(state) = streams.get_mut(name) else {
                return Err(StreamEnd::Superseded);
            };
            if state.connection != connection {
                return Err(StreamEnd::Superseded);
            }
            if let Some(committed) = envelope.frame.committed() {
                state.advance(committed);
            }
            for extent in frame_extents(&envelope.frame, shared, volume) {
                state.record(seq, extent);
            }
            if matches!(envelope.frame, Frame::Reconciled { .. }) {
                state.inherited.clear();
                state.overflow = false;
                // What this node carried was reported at `Hello` and every
                // in-sync member agrees on it now.
                shared.engine.forget_unsettled(volume);
            }
        }
        let ack = ack_sender(acks.clone(), seq, epoch, in_flight.clone());
        in_flight.begin();
        let engine = &shared.engine;
        match envelope.frame {
            Frame::Write { lba, data, .. } => {
                shared
                    .write_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                engine.write(volume, lba, data, ack);
            }
            Frame::Copy { lba, data, .. } => {
                shared
                    .copy_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                engine.write(volume, lba, data, ack);
            }
            Frame::WriteZeroes { extent, .. } => {
                engine.write_zeroes(volume, extent.lba, extent.blocks, ack)
            }
            Frame::Deallocate { extent, .. } => {
                engine.deallocate(volume, extent.lba, extent.blocks, ack)
            }
            Frame::Flush { .. } => engine.flush(ack),
            Frame::Snapshot { name: snapshot, .. } => {
                // Exactly the frames before this one are in the snapshot.
                in_flight.end();
                in_flight.wait_idle();
                in_flight.begin();
                let result = match engine.create_snapshot(volume, &snapshot) {
                    Ok(_) | Err(VolumeError::NameTaken(_)) => Ok(()),
                    Err(err) => {
                        tracing::warn!(volume = %name, snapshot = %snapshot, error = %err, "replica snapshot failed");
                        Err(IoError::Invalid("snapshot failed"))
                    }
                };
                ack(result);
            }
            Frame::Rollback { name: snapshot, .. } => {
                // Exactly the frames before this one are rolled back.
                in_flight.end();
                in_flight.wait_idle();
                in_flight.begin();
                let result = match engine.volume_by_name(&snapshot) {
                    Some(source) => engine.revert_volume(volume, source.id).map(|_| ()),
                    None => Err(VolumeError::NotFound(snapshot.clone())),
                };
                if let Err(err) = &result {
                    tracing::warn!(volume = %name, snapshot = %snapshot, error = %err, "replica rollback failed");
                }
                ack(result.map_err(|_| IoError::Invalid("rollback failed")));
            }
            Frame::Resize { size_bytes, .. } => {
                in_flight.end();
                in_flight.wait_idle();
                in_flight.begin();
                let grown = engine.volume_size(volume).unwrap_or(0) >= size_bytes
                    || engine.resize_volume(volume, size_bytes).is_ok();
                ack(if grown {
                    Ok(())
                } else {
                    Err(IoError::Invalid("resize failed"))
                });
            }
            Frame::Reconciled { .. } => ack(Ok(())),
            Frame::Hello { .. } | Frame::HelloAck { .. } | Frame::Ack { .. } => {
                in_flight.end();
                return Err(StreamEnd::Protocol("an unexpected frame kind"));
            }
        }
    }
    Ok(())
}

/// A stream's uncertain extents with what the engine carries for `volume`
/// (what this node wrote before a crash or as a deposed primary); overflows
/// past what a `HelloAck` can list.
fn with_carried(
    mut extents: Vec<Extent>,
    overflow: bool,
    engine: &Engine,
    volume: VolumeId,
) -> (Vec<Extent>, bool) {
    extents.extend(engine.carried_unsettled(volume));
    let overflow = overflow || extents.len() > UNCERTAIN_EXTENTS_MAX;
    if overflow {
        extents.clear();
    }
    (extents, overflow)
}

impl crate::UnsettledSource for Shared {
    fn report_unsettled(&self, report: &mut dyn FnMut(VolumeId, Extent)) {
        let streams: Vec<(VolumeId, Vec<Extent>, bool)> = self
            .streams
            .lock()
            .values()
            .map(|s| (s.volume, s.reported(), s.overflow))
            .collect();
        for (volume, extents, overflow) in streams {
            if overflow {
                let blocks = self
                    .engine
                    .volume(volume)
                    .map_or(0, |v| v.size_bytes / u64::from(v.sector_size.bytes()));
                for extent in super::BlockSet::full(blocks).extents(u32::MAX) {
                    report(volume, extent);
                }
            } else {
                for extent in extents {
                    report(volume, extent);
                }
            }
        }
    }
}

/// The extents a frame changes, in sectors: a rollback changes them all.
fn frame_extents(frame: &Frame, shared: &Shared, volume: VolumeId) -> Vec<Extent> {
    if let Frame::Rollback { .. } = frame {
        let blocks = shared
            .engine
            .volume(volume)
            .map_or(0, |v| v.size_bytes / u64::from(v.sector_size.bytes()));
        return super::BlockSet::full(blocks).extents(u32::MAX);
    }
    frame_extent(frame, shared, volume).into_iter().collect()
}

/// The extent a frame changes, in sectors, if it changes blocks.
fn frame_extent(frame: &Frame, shared: &Shared, volume: VolumeId) -> Option<Extent> {
    match frame {
        Frame::Write { lba, data, .. } | Frame::Copy { lba, data, .. } => {
            let sector = shared
                .engine
                .volume(volume)
                .map_or(512, |v| v.sector_size.bytes() as usize);
            Some(Extent {
                lba: *lba,
                blocks: (data.len() / sector) as u32,
            })
        }
        Frame::WriteZeroes { extent, .. } | Frame::Deallocate { extent, .. } => Some(*extent),
        _ => None,
    }
}

fn ack_sender(
    acks: Sender<Envelope>,
    seq: u64,
    epoch: u64,
    in_flight: Arc<InFlight>,
) -> Box<dyn FnOnce(Result<(), IoError>) + Send> {
    Box::new(move |result| {
        let status = match result {
            Ok(()) => AckStatus::Applied,
            Err(err) => {
                tracing::warn!(seq, error = %err, "replica could not apply a frame");
                AckStatus::Failed
            }
        };
        let _ = acks.send(Envelope {
            seq,
            epoch,
            frame: Frame::Ack { status },
        });
        in_flight.end();
    })
}
