//! The closed loop the benches measure with: one thread keeps up to `depth`
//! operations in flight, and after each completion the bench decides whether
//! to submit another. [`EngineLoad`] submits engine reads and writes through
//! the completion API; a bench with another kind of queue (the NVMe/TCP host
//! side) implements [`InFlight`] itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use engine::{Engine, IoError, VolumeId};

use super::figures::Latencies;
use super::Xorshift;

/// The engine's block size, the unit of the addresses the benches pass.
pub const BLOCK_BYTES: u64 = 4096;

/// Something a bench keeps operations in flight on.
pub trait InFlight {
    /// What one completion hands back.
    type Completion;

    /// Submits one more operation; false when the source has none left.
    fn submit(&mut self) -> bool;

    /// Waits for the next completion; `None` when waiting gives up (a stall, a
    /// closed channel), which ends the loop with operations still in flight.
    fn wait(&mut self) -> Option<Self::Completion>;
}

/// Submits until `depth` are in flight (or the source runs dry), then after
/// each completion submits one more if `completed` returns true, until nothing
/// is in flight. Returns false if [`InFlight::wait`] gave up first.
pub fn keep_in_flight<Q: InFlight>(
    queue: &mut Q,
    depth: usize,
    mut completed: impl FnMut(&mut Q, Q::Completion) -> bool,
) -> bool {
    let mut inflight = 0usize;
    while inflight < depth && queue.submit() {
        inflight += 1;
    }
    while inflight > 0 {
        let Some(completion) = queue.wait() else {
            return false;
        };
        inflight -= 1;
        if completed(queue, completion) && queue.submit() {
            inflight += 1;
        }
    }
    true
}

/// One engine operation, at `lba` in 4 KiB blocks.
pub enum Op {
    /// Writes `data` (a whole number of blocks).
    Write { lba: u64, data: Bytes },
    /// Reads `blocks` blocks.
    Read { lba: u64, blocks: u32 },
}

/// An engine operation's outcome and when it was submitted.
pub struct Completion {
    pub submitted_at: Instant,
    pub result: Result<(), IoError>,
}

impl Completion {
    /// Time from submission to now (call it as the completion is received).
    pub fn latency(&self) -> Duration {
        self.submitted_at.elapsed()
    }
}

/// How a run's operations ended, for a bench that counts failed operations
/// instead of stopping at the first.
#[derive(Default)]
pub struct Tally {
    /// Operations that succeeded.
    pub ios: u64,
    /// Operations that failed.
    pub errors: u64,
    pub first_error: Option<IoError>,
    /// Latencies of the operations that succeeded.
    pub latencies: Latencies,
}

impl Tally {
    /// An empty tally with room for `samples` latencies.
    pub fn with_capacity(samples: usize) -> Tally {
        Tally {
            latencies: Latencies::with_capacity(samples),
            ..Tally::default()
        }
    }

    /// Counts one completion (call it as the completion is received).
    pub fn record(&mut self, done: Completion) {
        match done.result {
            Ok(()) => {
                self.ios += 1;
                self.latencies.record(done.latency());
            }
            Err(err) => {
                self.errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }
}

/// How [`EngineLoad`] waits for a completion.
#[derive(Clone, Copy)]
pub enum Receive {
    /// `engine::io::recv_driving_local`: polls the thread's `LocalRing` while
    /// waiting if one is attached, else a plain blocking receive.
    DrivingLocal,
    /// `engine::io::recv_polling_local`: as `DrivingLocal`, polling for up to
    /// this long before sleeping.
    PollingLocal(Duration),
    /// A receive that gives up (a stall) after this long without a completion.
    StallAfter(Duration),
}

/// Engine operations from `next` on one volume, completed through a channel.
pub struct EngineLoad<'a, N> {
    engine: &'a Engine,
    volume: VolumeId,
    next: N,
    receive: Receive,
    max_ops: u64,
    submitted: u64,
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
}

impl<'a, N: FnMut() -> Option<Op>> EngineLoad<'a, N> {
    /// Submits what `next` yields until it yields `None`.
    pub fn new(engine: &'a Engine, volume: VolumeId, receive: Receive, next: N) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        EngineLoad {
            engine,
            volume,
            next,
            receive,
            max_ops: u64::MAX,
            submitted: 0,
            tx,
            rx,
        }
    }

    /// Submits no more than `max_ops` operations in all.
    pub fn max_ops(mut self, max_ops: u64) -> Self {
        self.max_ops = max_ops;
        self
    }

    /// Operations submitted so far.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }
}

impl<N: FnMut() -> Option<Op>> InFlight for EngineLoad<'_, N> {
    type Completion = Completion;

    fn submit(&mut self) -> bool {
        if self.submitted >= self.max_ops {
            return false;
        }
        let Some(op) = (self.next)() else {
            return false;
        };
        let tx = self.tx.clone();
        let submitted_at = Instant::now();
        let complete = move |result: Result<(), IoError>| {
            let _ = tx.send(Completion {
                submitted_at,
                result,
            });
        };
        match op {
            Op::Write { lba, data } => {
                self.engine
                    .write(self.volume, lba, data, Box::new(complete))
            }
            Op::Read { lba, blocks } => self.engine.read(
                self.volume,
                lba,
                blocks,
                Box::new(move |result| complete(result.map(|_| ()))),
            ),
        }
        self.submitted += 1;
        true
    }

    fn wait(&mut self) -> Option<Completion> {
        match self.receive {
            Receive::DrivingLocal => engine::io::recv_driving_local(&self.rx).ok(),
            Receive::PollingLocal(window) => engine::io::recv_polling_local(&self.rx, window).ok(),
            Receive::StallAfter(limit) => self.rx.recv_timeout(limit).ok(),
        }
    }
}

/// Writes of `io_bytes` filled with `byte`, at the blocks `next_block` yields,
/// without end.
pub fn writes(
    io_bytes: u64,
    byte: u8,
    mut next_block: impl FnMut() -> u64,
) -> impl FnMut() -> Option<Op> {
    let data = Bytes::from(vec![byte; io_bytes as usize]);
    move || {
        Some(Op::Write {
            lba: next_block(),
            data: data.clone(),
        })
    }
}

/// Writes `[0, region_bytes)` of `volume` once, in order, with `io_bytes`
/// writes of `byte`, `depth` at a time; panics if a write fails.
pub fn fill(
    engine: &Engine,
    volume: VolumeId,
    region_bytes: u64,
    io_bytes: u64,
    depth: usize,
    byte: u8,
) {
    let data = Bytes::from(vec![byte; io_bytes as usize]);
    let mut slots = Slots::new(region_bytes / io_bytes, Order::Sequential);
    let mut load = EngineLoad::new(engine, volume, Receive::DrivingLocal, || {
        slots.next_once().map(|slot| Op::Write {
            lba: slot * (io_bytes / BLOCK_BYTES),
            data: data.clone(),
        })
    });
    let finished = keep_in_flight(&mut load, depth, |_, done| {
        done.result.expect("fill write");
        true
    });
    assert!(finished, "fill: the completion channel closed");
}

/// The order a run visits its slots in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Sequential,
    /// xorshift-random from [`Xorshift::SEED`].
    Random,
}

/// Slot numbers (offsets in units of the I/O size) over `count` slots.
pub struct Slots {
    count: u64,
    order: Order,
    next: u64,
    rng: Xorshift,
}

impl Slots {
    /// A fresh sequence: the first slot of a sequential one is 0.
    pub fn new(count: u64, order: Order) -> Slots {
        Slots {
            count,
            order,
            next: 0,
            rng: Xorshift(Xorshift::SEED),
        }
    }

    /// Lane `lane` of `lanes` sequences run at once over the same slots: a
    /// sequential one starts `lane / lanes` of the way in, a random one from
    /// its own seed, so lanes do not visit the same slots in step.
    pub fn lane(mut self, lane: u64, lanes: u64) -> Slots {
        self.next = self.count * lane / lanes.max(1);
        // Lane 0 keeps the single-lane sequence; the state must not be 0.
        let seed = Xorshift::SEED ^ lane.wrapping_mul(0xD1B5_4A32_D192_ED03);
        self.rng = Xorshift(if seed == 0 { Xorshift::SEED } else { seed });
        self
    }

    /// The next slot; a sequential sequence starts again at 0 after the last.
    pub fn next_wrapping(&mut self) -> u64 {
        match self.order {
            Order::Sequential => {
                self.next += 1;
                (self.next - 1) % self.count
            }
            Order::Random => self.rng.next() % self.count,
        }
    }

    /// The next slot; a sequential sequence ends (`None`) after one pass.
    pub fn next_once(&mut self) -> Option<u64> {
        if self.order == Order::Sequential && self.next == self.count {
            return None;
        }
        Some(self.next_wrapping())
    }
}

/// A workload's I/O pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    SeqWrite,
    SeqRead,
    RandRead,
    RandWrite,
}

impl Pattern {
    /// Whether the pattern writes (else it reads).
    pub fn is_write(self) -> bool {
        matches!(self, Pattern::SeqWrite | Pattern::RandWrite)
    }

    /// The order it visits its slots in.
    pub fn order(self) -> Order {
        match self {
            Pattern::SeqWrite | Pattern::SeqRead => Order::Sequential,
            Pattern::RandRead | Pattern::RandWrite => Order::Random,
        }
    }
}

/// A named pattern at one I/O size and queue depth.
#[derive(Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub pattern: Pattern,
    pub block_bytes: u64,
    pub depth: usize,
}

impl Workload {
    /// Blocks per operation.
    pub fn blocks(self) -> u32 {
        (self.block_bytes / BLOCK_BYTES) as u32
    }

    /// The slots it visits over `[0, region_bytes)`, in its order.
    pub fn slots(self, region_bytes: u64) -> Slots {
        Slots::new(region_bytes / self.block_bytes, self.pattern.order())
    }

    /// Its engine operations over `[0, region_bytes)`, writes carrying `byte`,
    /// without end (sequential patterns wrap around).
    pub fn engine_ops(self, region_bytes: u64, byte: u8) -> impl FnMut() -> Option<Op> {
        self.engine_ops_over(self.slots(region_bytes), byte)
    }

    /// Its engine operations at `slots`, writes carrying `byte`, without end.
    pub fn engine_ops_over(self, mut slots: Slots, byte: u8) -> impl FnMut() -> Option<Op> {
        let data = Bytes::from(vec![byte; self.block_bytes as usize]);
        let blocks = self.blocks();
        move || {
            let lba = slots.next_wrapping() * u64::from(blocks);
            Some(if self.pattern.is_write() {
                Op::Write {
                    lba,
                    data: data.clone(),
                }
            } else {
                Op::Read { lba, blocks }
            })
        }
    }
}
