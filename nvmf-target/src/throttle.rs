//! Per-namespace I/O rate limits: token buckets a reactor consults before it
//! starts a command, holding the command back (never failing it) until the
//! buckets allow it.
//!
//! A namespace's [`Throttle`] has one bucket per limit that is set: read,
//! write and total operations per second, and read, write and total bytes per
//! second. Each bucket fills at its rate up to [`BURST_WINDOW`] worth of
//! tokens, so a volume that was quiet may run that much ahead of its rate. A
//! command is admitted when no bucket it draws on is in debt, and then takes
//! its whole cost at once, which may put a bucket into debt: a command larger
//! than a bucket's burst still runs, and the commands after it wait until the
//! debt is paid back. Over any long interval a namespace therefore moves at
//! most `rate × interval + burst` of each quantity.
//!
//! Flush is never throttled: it moves no data, and holding it back would only
//! delay the durability of writes that were already admitted.
//!
//! The throttle is shared by every connection that sees the namespace (it
//! lives in the subsystem's namespace slot), so the limits hold for the volume
//! as a whole, whichever hosts and queues the commands come from. Changing the
//! limits ([`crate::Subsystem::set_namespace_rate_limits`]) takes effect for
//! the next command admitted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How far ahead of its rate a quiet namespace may run: every bucket holds at
/// most this long's worth of tokens.
pub const BURST_WINDOW: Duration = Duration::from_millis(100);

/// A namespace's rate limits; `None` leaves that quantity unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Read commands per second.
    pub read_iops: Option<u64>,
    /// Write commands (Write, Write Zeroes, Dataset Management) per second.
    pub write_iops: Option<u64>,
    /// Read and write commands together per second.
    pub total_iops: Option<u64>,
    /// Bytes read per second.
    pub read_bytes_per_second: Option<u64>,
    /// Bytes written per second (Write Zeroes and deallocation move none).
    pub write_bytes_per_second: Option<u64>,
    /// Bytes read and written together per second.
    pub total_bytes_per_second: Option<u64>,
}

impl RateLimits {
    /// No limit at all.
    pub const UNLIMITED: RateLimits = RateLimits {
        read_iops: None,
        write_iops: None,
        total_iops: None,
        read_bytes_per_second: None,
        write_bytes_per_second: None,
        total_bytes_per_second: None,
    };

    /// True if no quantity is limited.
    pub fn is_unlimited(&self) -> bool {
        self.buckets().iter().all(|(rate, _)| rate.is_none())
    }

    /// Each limit with the bucket it fills, in [`Bucket`] index order.
    fn buckets(&self) -> [(Option<u64>, Draw); BUCKETS] {
        [
            (self.read_iops, Draw::ReadOps),
            (self.write_iops, Draw::WriteOps),
            (self.total_iops, Draw::AllOps),
            (self.read_bytes_per_second, Draw::ReadBytes),
            (self.write_bytes_per_second, Draw::WriteBytes),
            (self.total_bytes_per_second, Draw::AllBytes),
        ]
    }
}

/// What a command is, for the buckets it draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// A read of this many bytes.
    Read(u64),
    /// A write of this many bytes (0 for Write Zeroes and deallocation).
    Write(u64),
    /// Not rate limited (Flush).
    Free,
}

/// Which commands a bucket counts and in what unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draw {
    ReadOps,
    WriteOps,
    AllOps,
    ReadBytes,
    WriteBytes,
    AllBytes,
}

impl Draw {
    /// The tokens a command of `class` takes from this bucket.
    fn cost(self, class: IoClass) -> f64 {
        match (self, class) {
            (Draw::ReadOps | Draw::AllOps, IoClass::Read(_))
            | (Draw::WriteOps | Draw::AllOps, IoClass::Write(_)) => 1.0,
            (Draw::ReadBytes | Draw::AllBytes, IoClass::Read(bytes))
            | (Draw::WriteBytes | Draw::AllBytes, IoClass::Write(bytes)) => bytes as f64,
            _ => 0.0,
        }
    }
}

const BUCKETS: usize = 6;

/// One limit's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens per second; 0 means this quantity is unlimited.
    rate: f64,
    /// Tokens available now; negative while a large command's debt is paid back.
    tokens: f64,
    /// Most tokens the bucket holds (its burst).
    capacity: f64,
}

impl Bucket {
    fn new(rate: Option<u64>) -> Bucket {
        let rate = rate.unwrap_or(0) as f64;
        let capacity = rate * BURST_WINDOW.as_secs_f64();
        Bucket {
            rate,
            tokens: capacity,
            capacity,
        }
    }

    fn limited(&self) -> bool {
        self.rate > 0.0
    }

    fn refill(&mut self, elapsed: Duration) {
        if self.limited() {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
        }
    }

    /// How long until the bucket is out of debt (zero if it is not in debt).
    fn wait(&self) -> Duration {
        if !self.limited() || self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
}

/// The answer to [`Throttle::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start the command now; its cost is taken.
    Now,
    /// Hold the command and ask again at this time; nothing was taken.
    At(Instant),
}

struct State {
    limits: RateLimits,
    buckets: [Bucket; BUCKETS],
    /// When the buckets were last refilled.
    refilled: Instant,
}

/// The rate limiter of one namespace. See the module documentation.
pub struct Throttle {
    /// Mirrors `!state.limits.is_unlimited()`, read without the lock on every
    /// command of an unlimited namespace.
    limited: AtomicBool,
    state: Mutex<State>,
    /// Commands that had to wait for the buckets.
    delayed_commands: AtomicU64,
    /// Total time those commands waited, in nanoseconds.
    delay_ns: AtomicU64,
}

/// What a namespace's throttle has done, for volume statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleStats {
    /// The limits in force.
    pub limits: RateLimits,
    /// Commands held back by a limit since the namespace was added.
    pub delayed_commands: u64,
    /// Total time those commands were held back.
    pub delay: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(RateLimits::UNLIMITED)
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.state.lock().limits)
            .finish()
    }
}

impl Throttle {
    /// A throttle holding a namespace to `limits`, its buckets full.
    pub fn new(limits: RateLimits) -> Throttle {
        Throttle {
            limited: AtomicBool::new(!limits.is_unlimited()),
            state: Mutex::new(State {
                limits,
                buckets: limits.buckets().map(|(rate, _)| Bucket::new(rate)),
                refilled: Instant::now(),
            }),
            delayed_commands: AtomicU64::new(0),
            delay_ns: AtomicU64::new(0),
        }
    }

    /// Replaces the limits. Buckets whose rate is unchanged keep their
    /// tokens (so re-applying the same limits does not hand out a new burst);
    /// the others start full at their new rate.
    pub fn set_limits(&self, limits: RateLimits) {
        let mut state = self.state.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.refilled);
        state.refilled = now;
        let old = state.limits.buckets();
        for (i, (rate, _)) in limits.buckets().into_iter().enumerate() {
            if old[i].0 == rate {
                state.buckets[i].refill(elapsed);
            } else {
                state.buckets[i] = Bucket::new(rate);
            }
        }
        state.limits = limits;
        self.limited
            .store(!limits.is_unlimited(), Ordering::Release);
    }

    /// The limits in force.
    pub fn limits(&self) -> RateLimits {
        self.state.lock().limits
    }

    /// True if some quantity is limited (read without a lock).
    pub fn is_limited(&self) -> bool {
        self.limited.load(Ordering::Acquire)
    }

    /// Admits a command of `class` at `now` if no bucket it draws on is in
    /// debt, taking its cost; otherwise says when to ask again.
    pub fn admit(&self, class: IoClass, now: Instant) -> Admit {
        if class == IoClass::Free || !self.is_limited() {
            return Admit::Now;
        }
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.refilled);
        if !elapsed.is_zero() {
            state.refilled = now;
            for bucket in &mut state.buckets {
                bucket.refill(elapsed);
            }
        }
        let draws = state.limits.buckets().map(|(_, draw)| draw);
        let wait = state
            .buckets
            .iter()
            .zip(draws)
            .filter(|(_, draw)| draw.cost(class) > 0.0)
            .map(|(bucket, _)| bucket.wait())
            .max()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            return Admit::At(now + wait);
        }
        for (bucket, draw) in state.buckets.iter_mut().zip(draws) {
            if bucket.limited() {
                bucket.tokens -= draw.cost(class);
            }
        }
        Admit::Now
    }

    /// Whether commands of classes `a` and `b` draw on a common limited
    /// bucket: only then does one held command make the other wait its turn
    /// (a read never waits behind writes held by a write limit, and nothing
    /// waits behind or for a Flush).
    pub fn competes(&self, a: IoClass, b: IoClass) -> bool {
        let state = self.state.lock();
        state
            .limits
            .buckets()
            .iter()
            .any(|(rate, draw)| rate.is_some() && draw.cost(a) > 0.0 && draw.cost(b) > 0.0)
    }

    /// Records that a command waited `waited` before it was admitted.
    pub fn record_delay(&self, waited: Duration) {
        self.delayed_commands.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.delay_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The limits and what they held back so far.
    pub fn stats(&self) -> ThrottleStats {
        ThrottleStats {
            limits: self.limits(),
            delayed_commands: self.delayed_commands.load(Ordering::Relaxed),
            delay: Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits commands of `class` as fast as the throttle allows for
    /// `span` of simulated time; returns how many were admitted.
    fn admitted_within(throttle: &Throttle, class: IoClass, start: Instant, span: Duration) -> u64 {
        let mut now = start;
        let mut admitted = 0;
        while now < start + span {
            match throttle.admit(class, now) {
                Admit::Now => admitted += 1,
                Admit::At(at) => {
                    assert!(at > now, "a held command must be retried later");
                    now = at;
                }
            }
        }
        admitted
    }

    #[test]
    fn unlimited_throttle_admits_everything() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..100_000 {
            assert_eq!(t.admit(IoClass::Read(1 << 20), now), Admit::Now);
        }
        assert!(!t.is_limited());
    }

    #[test]
    fn iops_limit_holds_over_time_within_one_burst() {
        let t = Throttle::new(RateLimits {
            write_iops: Some(1000),
            ..RateLimits::UNLIMITED
        });
        let start = Instant::now();
        let n = admitted_within(&t, IoClass::Write(4096), start, Duration::from_secs(10));
        // 10 s at 1000/s plus the initial burst of 100.
        assert!((10_000..=10_102).contains(&n), "admitted {n}");
    }

    #[test]
    fn reads_do_not_draw_on_write_limits() {
        let t = Throttle::new(RateLimits {
            write_iops: Some(10),
            write_bytes_per_second: Some(4096),
            ..RateLimits::UNLIMITED
        });
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(t.admit(IoClass::Read(1 << 20), now), Admit::Now);
        }
        assert_eq!(t.admit(IoClass::Free, now), Admit::Now);
    }

    #[test]
    fn total_limit_counts_reads_and_writes_together() {
        let t = Throttle::new(RateLimits {
            total_iops: Some(100),
            ..RateLimits::UNLIMITED
        });
        let start = Instant::now();
        let reads = admitted_within(&t, IoClass::Read(512), start, Duration::from_secs(1));
        let writes = admitted_within(
            &t,
            IoClass::Write(512),
            start + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(reads + writes <= 100 + 10 + 100 + 2, "{reads} + {writes}");
        assert!(writes >= 99, "writes got the second second: {writes}");
    }

    #[test]
    fn a_command_larger_than_the_burst_runs_and_its_debt_delays_the_next() {
        let t = Throttle::new(RateLimits {
            read_bytes_per_second: Some(1 << 20),
            ..RateLimits::UNLIMITED
        });
        let now = Instant::now();
        // The burst is 100 ms = ~104 KiB; a 1 MiB read is still admitted.
        assert_eq!(t.admit(IoClass::Read(1 << 20), now), Admit::Now);
        let Admit::At(at) = t.admit(IoClass::Read(4096), now) else {
            panic!("the debt must hold the next read back");
        };
        let wait = at - now;
        // Debt of 1 MiB minus the burst, paid back at 1 MiB/s: about 0.9 s.
        assert!(
            wait > Duration::from_millis(850) && wait < Duration::from_millis(950),
            "{wait:?}"
        );
        assert_eq!(t.admit(IoClass::Read(4096), at), Admit::Now);
    }

    #[test]
    fn bandwidth_limit_holds_over_time() {
        let t = Throttle::new(RateLimits {
            write_bytes_per_second: Some(10 << 20),
            ..RateLimits::UNLIMITED
        });
        let start = Instant::now();
        let n = admitted_within(&t, IoClass::Write(128 << 10), start, Duration::from_secs(5));
        let bytes = n * (128 << 10);
        // 5 s at 10 MiB/s plus a burst of 1 MiB plus one command of debt.
        assert!(
            (50 << 20..=(51 << 20) + (128 << 10)).contains(&bytes),
            "{bytes}"
        );
    }

    #[test]
    fn only_classes_sharing_a_limited_bucket_compete() {
        let t = Throttle::new(RateLimits {
            write_iops: Some(10),
            ..RateLimits::UNLIMITED
        });
        assert!(t.competes(IoClass::Write(4096), IoClass::Write(0)));
        assert!(!t.competes(IoClass::Write(4096), IoClass::Read(4096)));
        assert!(!t.competes(IoClass::Write(4096), IoClass::Free));
        t.set_limits(RateLimits {
            total_bytes_per_second: Some(1 << 20),
            ..RateLimits::UNLIMITED
        });
        assert!(t.competes(IoClass::Write(4096), IoClass::Read(4096)));
        assert!(
            !t.competes(IoClass::Write(0), IoClass::Read(4096)),
            "a zero-byte write draws on no byte bucket"
        );
    }

    #[test]
    fn new_limits_apply_to_the_next_command() {
        let t = Throttle::new(RateLimits {
            read_iops: Some(1),
            ..RateLimits::UNLIMITED
        });
        let now = Instant::now();
        // The burst of a 1/s bucket is 0.1 tokens, so one read goes and the next waits.
        assert_eq!(t.admit(IoClass::Read(512), now), Admit::Now);
        assert!(matches!(t.admit(IoClass::Read(512), now), Admit::At(_)));
        t.set_limits(RateLimits::UNLIMITED);
        assert_eq!(t.admit(IoClass::Read(512), now), Admit::Now);
        assert!(!t.is_limited());
    }

    #[test]
    fn reapplying_the_same_limits_hands_out_no_new_burst() {
        let limits = RateLimits {
            read_iops: Some(10),
            ..RateLimits::UNLIMITED
        };
        let t = Throttle::new(limits);
        let now = Instant::now();
        while t.admit(IoClass::Read(512), now) == Admit::Now {}
        t.set_limits(limits);
        assert!(matches!(
            t.admit(IoClass::Read(512), Instant::now()),
            Admit::At(_)
        ));
    }
}
