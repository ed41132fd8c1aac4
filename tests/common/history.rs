//! A history checker for block registers: each block of a volume is one
//! register, every write stores a value no other write stores, and clients
//! record when each operation was invoked, when it completed and how.
//!
//! The rule ([`History::check`]) is linearizability restricted to single
//! registers written with unique values, for which it can be checked per
//! read instead of by searching orders:
//!
//! 1. A read returns either zeros (the register's initial value) or a value
//!    some write to that register stored; anything else (torn, foreign or
//!    corrupt bytes) is a violation.
//! 2. A read may return write `w`'s value only if `w` was invoked before the
//!    read completed, `w` is not known to have failed, and `w` is not
//!    *superseded*: no acknowledged write `w2` to the register was invoked
//!    after `w` was acknowledged and acknowledged before the read was
//!    invoked. A write whose outcome is unknown (timeout, error status,
//!    broken connection) counts as never completed, so it stays possibly
//!    concurrent with every later read and never supersedes anything.
//! 3. A read may return zeros only if no write to the register was
//!    acknowledged before the read was invoked.
//! 4. Reads in real-time order do not go back: if read `r1` completed before
//!    read `r2` was invoked and they returned different values, `r2`'s value
//!    must not be zeros, nor the value of a write acknowledged before `r1`
//!    was invoked (`r1`'s write is then ordered after it, so `r2` cannot see
//!    it again).
//!
//! Rules 2 and 3 are "the last acknowledged value or a concurrent one" made
//! exact for overlapping writes; rule 4 catches a value that disappears and
//! an older one that comes back, which rules 2-3 alone allow when the newer
//! value's write is still of unknown outcome.
//!
//! Times are nanoseconds after the history's origin, from one monotonic
//! clock (every process of a test shares the machine's `CLOCK_MONOTONIC`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// How a write ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The write completed with success.
    Acked,
    /// The write certainly did not happen (it was never sent).
    Failed,
    /// It may or may not have happened, then or at any later time.
    Unknown,
}

/// What a read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// All zeros: the register's initial value.
    Initial,
    /// The value a write stored.
    Value(u64),
    /// Bytes no write stored.
    Garbage,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The register (block).
    pub register: u64,
    /// The unique value it stores.
    pub value: u64,
    /// Invocation, ns after the origin.
    pub invoked_ns: u64,
    /// Completion as the client saw it, ns after the origin.
    pub completed_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Who issued it (for reports).
    pub client: String,
}

/// One read that returned data (failed reads say nothing and are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The register (block).
    pub register: u64,
    /// What it returned.
    pub observed: Observed,
    /// Invocation, ns after the origin.
    pub invoked_ns: u64,
    /// Completion, ns after the origin.
    pub completed_ns: u64,
    /// Who issued it (for reports).
    pub client: String,
}

/// A read the rules reject, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The offending read.
    pub read: Read,
    /// Why it is not allowed.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.read;
        write!(
            f,
            "register {} read by {} [{:.3} s, {:.3} s] returned {:?}: {}",
            r.register,
            r.client,
            secs(r.invoked_ns),
            secs(r.completed_ns),
            r.observed,
            self.reason
        )
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A history being recorded by several client threads.
pub struct History {
    origin: Instant,
    ops: Mutex<Ops>,
}

#[derive(Default)]
struct Ops {
    writes: Vec<Write>,
    reads: Vec<Read>,
}

impl History {
    /// An empty history whose times count from `origin`.
    pub fn new(origin: Instant) -> History {
        History {
            origin,
            ops: Mutex::new(Ops::default()),
        }
    }

    /// The instant times count from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// `at` as ns after the origin.
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a write.
    pub fn write(&self, write: Write) {
        self.ops.lock().expect("history lock").writes.push(write);
    }

    /// Records a read that returned data.
    pub fn read(&self, read: Read) {
        self.ops.lock().expect("history lock").reads.push(read);
    }

    /// Every write recorded so far.
    pub fn writes(&self) -> Vec<Write> {
        self.ops.lock().expect("history lock").writes.clone()
    }

    /// Every read recorded so far.
    pub fn reads(&self) -> Vec<Read> {
        self.ops.lock().expect("history lock").reads.clone()
    }

    /// Checks every read against the rules in the module documentation.
    pub fn check(&self) -> Result<(), Vec<Violation>> {
        let ops = self.ops.lock().expect("history lock");
        check(&ops.writes, &ops.reads)
    }
}

/// A write's completion if it was acknowledged; unknown and failed writes
/// never complete as far as ordering goes.
fn acked_at(w: &Write) -> Option<u64> {
    (w.outcome == Outcome::Acked).then_some(w.completed_ns)
}

/// Checks `reads` against `writes` (see the module documentation).
pub fn check(writes: &[Write], reads: &[Read]) -> Result<(), Vec<Violation>> {
    let mut by_value: HashMap<u64, &Write> = HashMap::new();
    let mut by_register: BTreeMap<u64, Vec<&Write>> = BTreeMap::new();
    for w in writes {
        let earlier = by_value.insert(w.value, w);
        assert!(earlier.is_none(), "value {} written twice", w.value);
        by_register.entry(w.register).or_default().push(w);
    }
    let none = Vec::new();
    let mut violations = Vec::new();
    let mut reject = |read: &Read, reason: String| {
        violations.push(Violation {
            read: read.clone(),
            reason,
        })
    };
    for r in reads {
        let register = by_register.get(&r.register).unwrap_or(&none);
        // Rule 3 (zeros) and the supersession half of rule 2 share this: the
        // acknowledged writes that ended before the read began.
        let acked_before = || {
            register
                .iter()
                .filter(move |w| acked_at(w).is_some_and(|at| at < r.invoked_ns))
        };
        match r.observed {
            Observed::Garbage => reject(r, "bytes no write stored".into()),
            Observed::Initial => {
                if let Some(w) = acked_before().next() {
                    reject(
                        r,
                        format!(
                            "zeros, but value {} was acknowledged at {:.3} s",
                            w.value,
                            secs(w.completed_ns)
                        ),
                    );
                }
            }
            Observed::Value(v) => {
                let Some(w) = by_value.get(&v).filter(|w| w.register == r.register) else {
                    reject(r, "no write to this register stored that value".into());
                    continue;
                };
                if w.outcome == Outcome::Failed {
                    reject(r, format!("value {v}'s write is known to have failed"));
                } else if w.invoked_ns > r.completed_ns {
                    reject(r, format!("value {v} was written only after the read"));
                } else if let Some(w_acked) = acked_at(w) {
                    let newer = acked_before().find(|w2| w2.invoked_ns > w_acked);
                    if let Some(w2) = newer {
                        reject(
                            r,
                            format!(
                                "stale: value {v} (acknowledged at {:.3} s) was overwritten by value {} \
                                 (invoked at {:.3} s, acknowledged at {:.3} s by {}) before the read",
                                secs(w_acked),
                                w2.value,
                                secs(w2.invoked_ns),
                                secs(w2.completed_ns),
                                w2.client
                            ),
                        );
                    }
                }
            }
        }
    }
    // Rule 4: reads in real-time order do not go back.
    let mut reads_by_register: BTreeMap<u64, Vec<&Read>> = BTreeMap::new();
    for r in reads {
        reads_by_register.entry(r.register).or_default().push(r);
    }
    for register_reads in reads_by_register.values() {
        for r2 in register_reads {
            // One earlier read that r2 goes back from is reason enough.
            let went_back = register_reads.iter().find_map(|r1| {
                let Observed::Value(v1) = r1.observed else {
                    return None;
                };
                if r1.completed_ns >= r2.invoked_ns || r2.observed == r1.observed {
                    return None;
                }
                let older = match r2.observed {
                    Observed::Initial => true,
                    Observed::Value(v2) => by_value
                        .get(&v2)
                        .and_then(|w2| acked_at(w2))
                        .is_some_and(|at| at < r1.invoked_ns),
                    Observed::Garbage => false,
                };
                older.then_some((r1, v1))
            });
            if let Some((r1, v1)) = went_back {
                reject(
                    r2,
                    format!(
                        "went back: an earlier read by {} [{:.3} s, {:.3} s] returned value {v1}, \
                         which is ordered after this one",
                        r1.client,
                        secs(r1.invoked_ns),
                        secs(r1.completed_ns)
                    ),
                );
            }
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Bytes at the start of a register block before the value's pattern.
const HEADER_BYTES: usize = 24;
/// Marks a block written by [`encode`].
const MAGIC: u64 = 0x4b45_454c_5245_4731; // "KEELREG1"

/// The block that stores `value` in `register`: a header naming both, then
/// a pattern derived from the value, so torn or misplaced data reads as
/// [`Observed::Garbage`].
pub fn encode(register: u64, value: u64, block_bytes: usize) -> bytes::Bytes {
    assert!(block_bytes > HEADER_BYTES);
    let mut out = Vec::with_capacity(block_bytes);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&register.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&super::pattern(block_bytes - HEADER_BYTES, value));
    bytes::Bytes::from(out)
}

/// What a block read from `register` holds.
pub fn decode(register: u64, block: &[u8]) -> Observed {
    if block.iter().all(|b| *b == 0) {
        return Observed::Initial;
    }
    let field = |i: usize| {
        block
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    match (field(0), field(1), field(2)) {
        (Some(MAGIC), Some(r), Some(value))
            if r == register && block == &encode(register, value, block.len())[..] =>
        {
            Observed::Value(value)
        }
        _ => Observed::Garbage,
    }
}
