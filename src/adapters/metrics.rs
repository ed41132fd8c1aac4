//! Per-volume I/O metrics, measured where hosts see them (the namespace
//! port), and the Prometheus text exposition of them and of the pool.
//!
//! [`MeteredNamespace`] wraps a namespace backend and records every command
//! into the volume's [`VolumeIoMetrics`] (counts, bytes, errors, commands in
//! flight, latency histograms); [`IoMetricsRegistry`] holds them by volume.
//! Recording is a few relaxed atomic adds per command.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nvmf_target::backend::{BlockSize, Completion, Lba, LbaRange, NamespaceBackend};
use nvmf_target::ThrottleStats;
use parking_lot::Mutex;
use uuid::Uuid;

/// Upper bounds of the latency histogram buckets, in microseconds (the
/// last bucket, `+Inf`, is implied).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000,
];

/// A latency histogram with Prometheus' cumulative buckets.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    fn record(&self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// One volume's I/O as hosts issued it through this node.
#[derive(Default)]
pub struct VolumeIoMetrics {
    reads: AtomicU64,
    writes: AtomicU64,
    /// Flush, Write Zeroes and Dataset Management.
    others: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    read_latency: LatencyHistogram,
    write_latency: LatencyHistogram,
}

/// What kind of command a completion closes.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Other,
}

impl VolumeIoMetrics {
    fn start(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// Closes a command; only a successful one moved its `bytes`.
    fn finish(&self, kind: Kind, bytes: u64, ok: bool, started: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let bytes = if ok { bytes } else { 0 };
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        match kind {
            Kind::Read => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.read_latency.record(started);
            }
            Kind::Write => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.write_latency.record(started);
            }
            Kind::Other => {
                self.others.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Every volume's I/O metrics on this node, by volume UUID.
#[derive(Default)]
pub struct IoMetricsRegistry {
    volumes: Mutex<BTreeMap<Uuid, Arc<VolumeIoMetrics>>>,
}

impl IoMetricsRegistry {
    /// The metrics of `volume`, made on first use (they outlive a re-expose,
    /// so counters never run backwards while the volume exists).
    pub fn volume(&self, volume: Uuid) -> Arc<VolumeIoMetrics> {
        self.volumes.lock().entry(volume).or_default().clone()
    }

    /// Forgets a deleted volume.
    pub fn remove(&self, volume: Uuid) {
        self.volumes.lock().remove(&volume);
    }

    fn all(&self) -> Vec<(Uuid, Arc<VolumeIoMetrics>)> {
        self.volumes
            .lock()
            .iter()
            .map(|(uuid, m)| (*uuid, m.clone()))
            .collect()
    }

    /// Appends the per-volume metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let volumes = self.all();
        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&VolumeIoMetrics) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (uuid, m) in &volumes {
                    let _ = writeln!(out, "{name}{{volume=\"{uuid}\"}} {}", get(m));
                }
            };
        counter(
            out,
            "keel_volume_reads_total",
            "Read commands completed.",
            &|m| m.reads.load(Ordering::Relaxed),
        );
        counter(
            out,
            "keel_volume_writes_total",
            "Write commands completed.",
            &|m| m.writes.load(Ordering::Relaxed),
        );
        counter(
            out,
            "keel_volume_other_commands_total",
            "Flush, Write Zeroes and Dataset Management commands completed.",
            &|m| m.others.load(Ordering::Relaxed),
        );
        counter(out, "keel_volume_read_bytes_total", "Bytes read.", &|m| {
            m.read_bytes.load(Ordering::Relaxed)
        });
        counter(
            out,
            "keel_volume_written_bytes_total",
            "Bytes written.",
            &|m| m.write_bytes.load(Ordering::Relaxed),
        );
        counter(
            out,
            "keel_volume_errors_total",
            "Commands that completed with an error.",
            &|m| m.errors.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP keel_volume_queue_depth Commands in flight now.\n# TYPE keel_volume_queue_depth gauge"
        );
        for (uuid, m) in &volumes {
            let _ = writeln!(
                out,
                "keel_volume_queue_depth{{volume=\"{uuid}\"}} {}",
                m.in_flight.load(Ordering::Relaxed)
            );
        }
        for (name, pick) in [
            (
                "keel_volume_read_latency_seconds",
                (|m: &VolumeIoMetrics| &m.read_latency)
                    as fn(&VolumeIoMetrics) -> &LatencyHistogram,
            ),
            ("keel_volume_write_latency_seconds", |m| &m.write_latency),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} Command latency as hosts see it at this node.\n# TYPE {name} histogram"
            );
            for (uuid, m) in &volumes {
                let h = pick(m);
                let mut cumulative = 0;
                for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
                    cumulative += h.buckets[i].load(Ordering::Relaxed);
                    let le = *bound as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{volume=\"{uuid}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                let count = h.count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{volume=\"{uuid}\",le=\"+Inf\"}} {count}"
                );
                let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "{name}_sum{{volume=\"{uuid}\"}} {sum}");
                let _ = writeln!(out, "{name}_count{{volume=\"{uuid}\"}} {count}");
            }
        }
    }
}

/// Appends what the volumes' QoS limits are and what they held back.
fn render_qos(out: &mut String, throttles: &[(Uuid, ThrottleStats)]) {
    let _ = writeln!(
        out,
        "# HELP keel_volume_qos_delayed_commands_total Commands a QoS limit held back.\n\
         # TYPE keel_volume_qos_delayed_commands_total counter"
    );
    for (uuid, t) in throttles {
        let _ = writeln!(
            out,
            "keel_volume_qos_delayed_commands_total{{volume=\"{uuid}\"}} {}",
            t.delayed_commands
        );
    }
    let _ = writeln!(
        out,
        "# HELP keel_volume_qos_delay_seconds_total Time commands were held back by a QoS limit.\n\
         # TYPE keel_volume_qos_delay_seconds_total counter"
    );
    for (uuid, t) in throttles {
        let _ = writeln!(
            out,
            "keel_volume_qos_delay_seconds_total{{volume=\"{uuid}\"}} {}",
            t.delay.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "# HELP keel_volume_qos_limit The rate a volume's QoS policy allows (per second; absent: unlimited).\n\
         # TYPE keel_volume_qos_limit gauge"
    );
    for (uuid, t) in throttles {
        let l = &t.limits;
        for (limit, value) in [
            ("read_iops", l.read_iops),
            ("write_iops", l.write_iops),
            ("total_iops", l.total_iops),
            ("read_bytes", l.read_bytes_per_second),
            ("write_bytes", l.write_bytes_per_second),
            ("total_bytes", l.total_bytes_per_second),
        ] {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "keel_volume_qos_limit{{volume=\"{uuid}\",limit=\"{limit}\"}} {value}"
                );
            }
        }
    }
}

/// Every exposed namespace's throttle statistics, by volume UUID.
pub fn throttle_stats(subsystem: &nvmf_target::Subsystem) -> Vec<(Uuid, ThrottleStats)> {
    subsystem
        .throttle_stats()
        .into_iter()
        .map(|(_, uuid, stats)| (Uuid::from_bytes(uuid), stats))
        .collect()
}

/// The node's storage metrics in the Prometheus text format: the pool's
/// space and write amplification, garbage collection, live controllers and
/// every volume's I/O.
pub fn render_node(
    pool: &engine::PoolStats,
    controllers: usize,
    volumes: &IoMetricsRegistry,
    throttles: &[(Uuid, ThrottleStats)],
) -> String {
    let mut out = String::new();
    render_qos(&mut out, throttles);
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "keel_pool_capacity_bytes",
        "Bytes of all segments.",
        pool.capacity_bytes as f64,
    );
    gauge(
        "keel_pool_free_bytes",
        "Bytes of segments holding nothing.",
        pool.free_bytes as f64,
    );
    gauge(
        "keel_pool_used_bytes",
        "Bytes of distinct live data.",
        pool.used_bytes as f64,
    );
    gauge(
        "keel_pool_provisioned_bytes",
        "Sum of the volumes' provisioned sizes.",
        pool.provisioned_bytes as f64,
    );
    gauge(
        "keel_pool_logical_bytes",
        "Bytes the volumes and snapshots map.",
        pool.logical_bytes as f64,
    );
    gauge(
        "keel_pool_volumes",
        "Volumes, clones included.",
        pool.volume_count as f64,
    );
    gauge(
        "keel_pool_snapshots",
        "Snapshots.",
        pool.snapshot_count as f64,
    );
    gauge(
        "keel_pool_write_amplification",
        "Bytes written to the devices (headers, data, copies, checkpoints) per byte hosts wrote, since the pool opened.",
        pool.write_amplification(),
    );
    gauge(
        "keel_nvme_controllers",
        "Live NVMe controllers (admin and discovery).",
        controllers as f64,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "keel_pool_host_written_bytes_total",
        "Bytes hosts wrote since the pool opened.",
        pool.host_written_bytes,
    );
    counter(
        "keel_pool_device_written_bytes_total",
        "Bytes written to the devices since the pool opened: batch headers, data, the collector's copies and checkpoints.",
        pool.device_written_bytes,
    );
    counter(
        "keel_pool_writes_refused_no_space_total",
        "Writes refused for want of space since the pool opened.",
        pool.writes_refused_no_space,
    );
    counter(
        "keel_gc_relocated_bytes_total",
        "Bytes garbage collection rewrote since the pool opened.",
        pool.gc_relocated_bytes,
    );
    counter(
        "keel_gc_cleaned_segments_total",
        "Segments garbage collection cleaned since the pool opened.",
        pool.gc_cleaned_segments,
    );
    counter(
        "keel_gc_read_bytes_total",
        "Bytes garbage collection read from its victims since the pool opened (headers and live blocks where their batches' places are known).",
        pool.gc_read_bytes,
    );
    counter(
        "keel_gc_map_walks_total",
        "Collector rounds that walked every map because their victims' batch headers did not account for every live block.",
        pool.gc_map_walks,
    );
    counter(
        "keel_space_waits_for_collector_total",
        "Times host writes started waiting for garbage collection to free a segment.",
        pool.waits_for_collector,
    );
    counter(
        "keel_space_waits_for_checkpoint_total",
        "Times host writes started waiting for a checkpoint to free dead segments.",
        pool.waits_for_checkpoint,
    );
    volumes.render(&mut out);
    out
}

/// A namespace backend whose every command is recorded in `metrics`.
pub struct MeteredNamespace {
    inner: Arc<dyn NamespaceBackend>,
    metrics: Arc<VolumeIoMetrics>,
}

impl MeteredNamespace {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(
        inner: Arc<dyn NamespaceBackend>,
        metrics: Arc<VolumeIoMetrics>,
    ) -> MeteredNamespace {
        MeteredNamespace { inner, metrics }
    }

    fn recorded<T: Send + 'static>(
        &self,
        kind: Kind,
        bytes: u64,
        done: Completion<T>,
    ) -> Completion<T> {
        let metrics = self.metrics.clone();
        let started = metrics.start();
        Box::new(move |result| {
            metrics.finish(kind, bytes, result.is_ok(), started);
            done(result)
        })
    }
}

impl NamespaceBackend for MeteredNamespace {
    fn block_size(&self) -> BlockSize {
        self.inner.block_size()
    }

    fn capacity_blocks(&self) -> u64 {
        self.inner.capacity_blocks()
    }

    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid()
    }

    fn volatile_write_cache(&self) -> bool {
        self.inner.volatile_write_cache()
    }

    fn deallocated_reads_zeroes(&self) -> bool {
        self.inner.deallocated_reads_zeroes()
    }

    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        let bytes = u64::from(blocks) * u64::from(self.block_size().bytes());
        let done = self.recorded(Kind::Read, bytes, done);
        self.inner.read(lba, blocks, done);
    }

    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        let done = self.recorded(Kind::Write, data.len() as u64, done);
        self.inner.write(lba, data, done);
    }

    fn flush(&self, done: Completion<()>) {
        let done = self.recorded(Kind::Other, 0, done);
        self.inner.flush(done);
    }

    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>) {
        let done = self.recorded(Kind::Other, 0, done);
        self.inner.write_zeroes(lba, blocks, done);
    }

    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>) {
        let done = self.recorded(Kind::Other, 0, done);
        self.inner.deallocate(ranges, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvmf_target::MemoryNamespace;

    fn wait<T: Send + 'static>(submit: impl FnOnce(Completion<T>)) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        submit(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        match rx.recv().expect("a completion") {
            Ok(value) => value,
            Err(err) => panic!("{err:?}"),
        }
    }

    #[test]
    fn qos_limits_and_held_commands_are_rendered_per_volume() {
        let uuid = Uuid::from_u128(9);
        let stats = ThrottleStats {
            limits: nvmf_target::RateLimits {
                write_iops: Some(400),
                read_bytes_per_second: Some(20_000_000),
                ..nvmf_target::RateLimits::UNLIMITED
            },
            delayed_commands: 12,
            delay: std::time::Duration::from_millis(1500),
        };
        let mut out = String::new();
        render_qos(&mut out, &[(uuid, stats)]);
        let v = format!("volume=\"{uuid}\"");
        for line in [
            format!("keel_volume_qos_delayed_commands_total{{{v}}} 12"),
            format!("keel_volume_qos_delay_seconds_total{{{v}}} 1.5"),
            format!("keel_volume_qos_limit{{{v},limit=\"write_iops\"}} 400"),
            format!("keel_volume_qos_limit{{{v},limit=\"read_bytes\"}} 20000000"),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(
            !out.contains("limit=\"read_iops\""),
            "an unlimited quantity has no limit line"
        );
    }

    #[test]
    fn commands_are_counted_timed_and_rendered() {
        let registry = IoMetricsRegistry::default();
        let uuid = Uuid::from_u128(7);
        let ns = MeteredNamespace::new(
            MemoryNamespace::new(BlockSize::B512, 64, [1; 16]),
            registry.volume(uuid),
        );
        wait(|d| ns.write(Lba(0), Bytes::from(vec![1u8; 1024]), d));
        wait(|d| ns.read(Lba(0), 2, d));
        wait(|d| ns.read(Lba(2), 1, d));
        wait(|d| ns.flush(d));
        let (tx, rx) = std::sync::mpsc::channel();
        ns.read(
            Lba(1_000),
            1,
            Box::new(move |r| {
                let _ = tx.send(r.is_err());
            }),
        );
        assert!(rx.recv().expect("a completion"), "out of range fails");
        let mut text = String::new();
        registry.render(&mut text);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{volume=\"{uuid}\"")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .rsplit(' ')
                .next()
                .expect("a value")
                .to_owned()
        };
        assert_eq!(line("keel_volume_reads_total"), "3");
        assert_eq!(line("keel_volume_writes_total"), "1");
        assert_eq!(line("keel_volume_other_commands_total"), "1");
        assert_eq!(line("keel_volume_read_bytes_total"), "1536");
        assert_eq!(line("keel_volume_written_bytes_total"), "1024");
        assert_eq!(line("keel_volume_errors_total"), "1");
        assert_eq!(line("keel_volume_queue_depth"), "0");
        assert_eq!(line("keel_volume_read_latency_seconds_count"), "3");
        assert!(text.contains(&format!(
            "keel_volume_write_latency_seconds_bucket{{volume=\"{uuid}\",le=\"+Inf\"}} 1"
        )));
        registry.remove(uuid);
        let mut after = String::new();
        registry.render(&mut after);
        assert!(!after.contains(&uuid.to_string()));
    }
}
