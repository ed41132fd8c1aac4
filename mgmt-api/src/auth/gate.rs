//! Bounds on password checking. One argon2 hash costs 19 MiB and tens of
//! milliseconds and anyone who can reach `/login` can ask for one, so:
//!
//! - hashes run on `password_hashes_max` threads of their own ([`HashPool`]),
//!   so at most that many run at once and only those threads ever hold hash
//!   memory; further logins wait in a queue of at most `login_queue_max`, and
//!   beyond that are refused at once (503) without costing anything;
//! - a client (source address) that failed [`FAILURES_FREE`] logins in a row is
//!   refused (429) without a hash until a lockout ends, which doubles with each
//!   further failure up to [`LOCKOUT_MAX`] ([`FailureTable`]). A client's state is
//!   one fixed-size record in a table of at most [`CLIENTS_TRACKED_MAX`], so no
//!   attempt costs memory.
//!
//! Lockout is per source address and not per user name, so nobody can lock the
//! admin out from elsewhere by failing logins under the admin's name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failed logins in a row a client may make before it is locked out.
pub const FAILURES_FREE: u32 = 5;
/// The first lockout; each further failure doubles it.
pub const LOCKOUT_FIRST: Duration = Duration::from_secs(1);
/// The longest lockout.
pub const LOCKOUT_MAX: Duration = Duration::from_secs(60);
/// How long a client's failures are remembered after its last one.
pub const FAILURES_REMEMBERED: Duration = Duration::from_secs(15 * 60);
/// Most clients whose failures are tracked at once.
pub const CLIENTS_TRACKED_MAX: usize = 4096;

/// Password hashes running now, the most that ever ran at once, and how many
/// ran in all: what an operator (or a test) reads to see the bound hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashStats {
    /// Hashes running now.
    pub running: usize,
    /// The most that ran at once since start.
    pub peak: usize,
    /// Hashes run since start.
    pub total: u64,
}

/// Counts password hashes as they run (see [`HashStats`]).
#[derive(Debug, Default)]
pub struct HashMeter {
    running: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicU64,
}

impl HashMeter {
    /// Counts one hash until the returned guard drops.
    pub fn enter(&self) -> HashRunning<'_> {
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::AcqRel);
        HashRunning { meter: self }
    }

    /// The counts now.
    pub fn stats(&self) -> HashStats {
        HashStats {
            running: self.running.load(Ordering::Acquire),
            peak: self.peak.load(Ordering::Acquire),
            total: self.total.load(Ordering::Acquire),
        }
    }
}

/// One running hash; dropping it ends the count.
#[derive(Debug)]
pub struct HashRunning<'a> {
    meter: &'a HashMeter,
}

impl Drop for HashRunning<'_> {
    fn drop(&mut self) {
        self.meter.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a login was refused before its password was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client failed too often; it may try again after this long.
    LockedOut {
        /// Time until the lockout ends.
        retry_after: Duration,
    },
    /// The queue of logins waiting for a hash slot is full.
    Overloaded,
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads that hash passwords, and their bounded queue. Hashes run on
/// these threads only, never on the runtime's blocking pool: the allocator
/// keeps a freed 19 MiB hash block in the arena of the thread that freed it,
/// so hashes spread over a pool of dozens of threads kept hundreds of MiB
/// resident even when only two ran at once.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").finish_non_exhaustive()
    }
}

impl HashPool {
    /// Starts `hashes_max` threads (at least one) behind a queue of `queue_max`
    /// jobs. The threads end once the pool is dropped and the queue is drained.
    pub fn new(hashes_max: usize, queue_max: usize) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(queue_max);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..hashes_max.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("keel-password-{i}"))
                .spawn(move || loop {
                    // The lock is released before the job runs.
                    let job = queue.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `work` for a hash thread; refuses at once if the queue is full.
    /// Queued work runs even if the caller goes away, so the threads, not the
    /// callers, bound how many hashes run.
    pub fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, Refusal> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Refusal::Overloaded),
        }
    }

    /// Runs `work` on a hash thread (see [`HashPool::submit`]) and waits for it.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        // A job that panicked dropped its sender: that reads as an overload.
        self.submit(work)?.await.map_err(|_| Refusal::Overloaded)
    }
}

#[derive(Debug, Clone, Copy)]
struct ClientRecord {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// Consecutive login failures per client, and their lockouts.
#[derive(Debug, Default)]
pub struct FailureTable {
    clients: Mutex<HashMap<IpAddr, ClientRecord>>,
}

impl FailureTable {
    /// Refuses `client` while it is locked out at `now`.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Refusal> {
        match self
            .clients
            .lock()
            .get(&client)
            .and_then(|r| r.locked_until)
        {
            Some(until) if until > now => Err(Refusal::LockedOut {
                retry_after: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Records a failed login of `client` at `now`; locks it out from the
    /// `FAILURES_FREE`th failure in a row on.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut clients = self.clients.lock();
        if !clients.contains_key(&client) && clients.len() >= CLIENTS_TRACKED_MAX {
            // Make room by forgetting clients that are not locked out now. If all
            // are, this one goes untracked: the hash gate still bounds its cost.
            clients.retain(|_, r| r.locked_until.is_some_and(|until| until > now));
            if clients.len() >= CLIENTS_TRACKED_MAX {
                return;
            }
        }
        let record = clients.entry(client).or_insert(ClientRecord {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.saturating_duration_since(record.last_failure) > FAILURES_REMEMBERED {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures >= FAILURES_FREE {
            record.locked_until = Some(now + lockout(record.failures));
        }
    }

    /// Forgets `client`'s failures after it logged in.
    pub fn succeeded(&self, client: IpAddr) {
        self.clients.lock().remove(&client);
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.clients.lock().len()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lockout after the `failures`th failure in a row (`failures >= FAILURES_FREE`).
fn lockout(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(FAILURES_FREE).min(16);
    (LOCKOUT_FIRST * 2u32.pow(doublings)).min(LOCKOUT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn locked_for(table: &FailureTable, client: IpAddr, now: Instant) -> Option<Duration> {
        match table.check(client, now) {
            Err(Refusal::LockedOut { retry_after }) => Some(retry_after),
            _ => None,
        }
    }

    #[test]
    fn a_client_is_locked_out_after_repeated_failures_for_ever_longer_and_others_are_not() {
        let table = FailureTable::default();
        let t0 = Instant::now();
        for _ in 1..FAILURES_FREE {
            table.failed(A, t0);
            assert_eq!(locked_for(&table, A, t0), None);
        }
        table.failed(A, t0);
        assert_eq!(locked_for(&table, A, t0), Some(LOCKOUT_FIRST));
        assert_eq!(locked_for(&table, B, t0), None, "another client is free");
        let t1 = t0 + LOCKOUT_FIRST;
        assert_eq!(locked_for(&table, A, t1), None, "the lockout ends");
        table.failed(A, t1);
        assert_eq!(locked_for(&table, A, t1), Some(2 * LOCKOUT_FIRST));
        for _ in 0..40 {
            table.failed(A, t1);
        }
        assert_eq!(locked_for(&table, A, t1), Some(LOCKOUT_MAX));
        table.succeeded(A);
        assert_eq!(locked_for(&table, A, t1), None);
        assert!(table.is_empty());
    }

    #[test]
    fn failures_long_ago_are_forgotten() {
        let table = FailureTable::default();
        let t0 = Instant::now();
        for _ in 1..FAILURES_FREE {
            table.failed(A, t0);
        }
        let later = t0 + FAILURES_REMEMBERED + Duration::from_secs(1);
        table.failed(A, later);
        assert_eq!(locked_for(&table, A, later), None);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_locked_clients() {
        let table = FailureTable::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_FREE {
            table.failed(A, t0);
        }
        for i in 0..(2 * CLIENTS_TRACKED_MAX as u32) {
            table.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)), t0);
            assert!(table.len() <= CLIENTS_TRACKED_MAX);
        }
        assert!(
            locked_for(&table, A, t0).is_some(),
            "the locked client stays"
        );
    }

    #[tokio::test]
    async fn the_pool_runs_its_threads_worth_queues_a_bounded_few_and_refuses_the_rest() {
        let pool = HashPool::new(1, 1).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let busy = pool
            .submit(move || {
                started_tx.send(()).unwrap();
                hold.recv().unwrap();
            })
            .unwrap();
        // The one thread is busy once the first job has started.
        started.recv().unwrap();
        let queued = pool.submit(|| 7).unwrap();
        assert_eq!(pool.submit(|| 0).err(), Some(Refusal::Overloaded));
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 7);
        assert_eq!(pool.run(|| 8).await, Ok(8), "the queue has room again");
    }

    #[test]
    fn the_meter_counts_running_peak_and_total() {
        let meter = HashMeter::default();
        {
            let _a = meter.enter();
            let _b = meter.enter();
            assert_eq!(meter.stats().running, 2);
        }
        let _c = meter.enter();
        assert_eq!(
            meter.stats(),
            HashStats {
                running: 1,
                peak: 2,
                total: 3
            }
        );
    }
}
