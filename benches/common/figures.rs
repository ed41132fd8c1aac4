//! What a run is summarised into: per-operation latencies and their mean, p99
//! and maximum, IOPS and MiB/s, and the process's CPU time.

use std::path::Path;
use std::time::Duration;

/// How latencies are reduced to microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Each latency truncated to whole microseconds first (the engine benches'
    /// historical figures).
    WholeMicros,
    /// Each latency kept to the nanosecond.
    Nanos,
}

/// Per-operation latencies of a run, in nanoseconds.
#[derive(Default)]
pub struct Latencies {
    ns: Vec<u64>,
}

/// Mean, percentiles and largest latency, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latencies {
    /// Room for `samples` latencies before the vector grows.
    pub fn with_capacity(samples: usize) -> Latencies {
        Latencies {
            ns: Vec::with_capacity(samples),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.ns
            .push(latency.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Moves all of `other`'s latencies into this one.
    pub fn append(&mut self, other: &mut Latencies) {
        self.ns.append(&mut other.ns);
    }

    /// How many are recorded.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// Whether none is recorded.
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// Mean, p50, p99 and p99.9 (the sample at index `len * p` in sorted
    /// order) and maximum; zeroes when nothing was recorded.
    pub fn summary(mut self, precision: Precision) -> LatencySummary {
        self.ns.sort_unstable();
        let us = |ns: u64| match precision {
            Precision::WholeMicros => (ns / 1000) as f64,
            Precision::Nanos => ns as f64 / 1000.0,
        };
        let count = self.ns.len();
        let mean_us = match precision {
            Precision::WholeMicros => {
                self.ns.iter().map(|&ns| us(ns)).sum::<f64>() / count.max(1) as f64
            }
            Precision::Nanos => {
                self.ns.iter().map(|&ns| ns as f64).sum::<f64>() / count.max(1) as f64 / 1000.0
            }
        };
        LatencySummary {
            count,
            mean_us,
            p50_us: self.ns.get(count / 2).map_or(0.0, |&ns| us(ns)),
            p99_us: self.ns.get(count * 99 / 100).map_or(0.0, |&ns| us(ns)),
            p999_us: self.ns.get(count * 999 / 1000).map_or(0.0, |&ns| us(ns)),
            max_us: self.ns.last().map_or(0.0, |&ns| us(ns)),
        }
    }
}

/// Throughput and latency of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub iops: f64,
    pub mib_s: f64,
    pub mean_us: f64,
    pub p99_us: f64,
}

impl Figures {
    /// The figures of a run that completed `latencies.len()` operations of
    /// `io_bytes` each in `elapsed`.
    pub fn of(
        latencies: Latencies,
        precision: Precision,
        io_bytes: u64,
        elapsed: Duration,
    ) -> Figures {
        let summary = latencies.summary(precision);
        let ios = summary.count as f64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Figures {
            iops: ios / secs,
            mib_s: ios * io_bytes as f64 / secs / f64::from(1 << 20),
            mean_us: summary.mean_us,
            p99_us: summary.p99_us,
        }
    }
}

/// CPU time (user + system) this process has used, from `/proc/self/stat` (no
/// unsafe needed); zero where it cannot be read.
pub fn cpu_time() -> Duration {
    stat_cpu_time(Path::new("/proc/self/stat"))
}

/// User plus system time in a `/proc/.../stat` file (fields 14 and 15, in
/// ticks of 10 ms); zero where it cannot be read.
fn stat_cpu_time(path: &Path) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU time and context switches (voluntary and not) of some of this
/// process's threads, from `/proc/self/task/*/`: what a phase cost the threads
/// that serve it, per operation once divided by its count.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadUsage {
    pub cpu: Duration,
    pub switches: u64,
}

impl ThreadUsage {
    /// Summed over this process's threads whose name starts with `prefix`.
    pub fn of_threads(prefix: &str) -> ThreadUsage {
        let mut total = ThreadUsage::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return total;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.starts_with(prefix) {
                let usage = task_usage(&dir);
                total.cpu += usage.cpu;
                total.switches += usage.switches;
            }
        }
        total
    }

    /// The calling thread's.
    pub fn of_this_thread() -> ThreadUsage {
        task_usage(Path::new("/proc/thread-self"))
    }

    /// What was used since `before`.
    pub fn since(self, before: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            cpu: self.cpu.saturating_sub(before.cpu),
            switches: self.switches.saturating_sub(before.switches),
        }
    }

    /// What was used since `before`, per operation of `ops`: (CPU µs,
    /// context switches).
    pub fn per_op_since(self, before: ThreadUsage, ops: f64) -> (f64, f64) {
        let ops = ops.max(1.0);
        let cpu = self.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6;
        let switches = self.switches.saturating_sub(before.switches) as f64;
        (cpu / ops, switches / ops)
    }
}

fn task_usage(dir: &Path) -> ThreadUsage {
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let switches = status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    ThreadUsage {
        cpu: stat_cpu_time(&dir.join("stat")),
        switches,
    }
}
