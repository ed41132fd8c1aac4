//! A small async wrapper over the etcd v3 API: the only module that sees
//! protobuf types. Keys are strings, values bytes, and revisions [`Revision`].
//!
//! Every request is bounded by [`REQUEST_TIMEOUT`], so a node cut off from etcd
//! gets an error instead of hanging a control-plane task.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdv3client::pb;
use etcdv3client::EtcdClient;
use tokio::sync::{mpsc, watch};

/// How long one unary etcd request may take before it fails with
/// [`EtcdError::Timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Events a [`watch_prefix`](Etcd::watch_prefix) receiver buffers before the
/// forwarding task waits for the consumer.
pub const WATCH_EVENTS_MAX: usize = 256;

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No endpoint could be reached (or an endpoint is not a URL).
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The cause.
        #[source]
        source: etcdv3client::Error,
    },
    /// etcd answered the request with an error, or the connection broke.
    #[error("etcd {op} failed: {source}")]
    Request {
        /// The operation (`range`, `put`, `txn`, ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: etcdv3client::Error,
    },
    /// etcd did not answer within [`REQUEST_TIMEOUT`].
    #[error("etcd {op} timed out")]
    Timeout {
        /// The operation.
        op: &'static str,
    },
    /// A key etcd returned is not UTF-8 (Keel writes only UTF-8 keys).
    #[error("etcd returned a key that is not UTF-8")]
    KeyNotUtf8,
}

/// An etcd modification revision. [`Revision::ABSENT`] (0) stands for "the
/// key does not exist" in [`Etcd::compare_and_swap`], as etcd itself reports a
/// missing key's `mod_revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision of a key that does not exist.
    pub const ABSENT: Revision = Revision(0);
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the key's last modification.
    pub mod_revision: Revision,
}

/// A change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(Entry),
    /// The key was deleted, or its lease expired or was revoked.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        mod_revision: Revision,
    },
}

/// An etcd lease's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A lease granted by [`Etcd::grant_lease`].
#[derive(Debug, Clone)]
pub struct Lease {
    /// The lease's id, for [`Etcd::put_with_lease`] and [`Etcd::revoke_lease`].
    pub id: LeaseId,
    /// The TTL etcd granted.
    pub ttl: Duration,
    /// Valid from the grant until `sent + ttl`, where `sent` is when the grant
    /// request left; [`Etcd::keep_alive`] moves it on.
    pub clock: LeaseClock,
}

/// The fencing deadline of one lease: the instant after which this node must
/// not act on anything the lease stands for.
///
/// `valid_until()` is the instant at which the keep-alive (or grant) **request**
/// that last succeeded was *sent*, plus the TTL etcd returned for it. etcd
/// restarts a lease's countdown when it *receives* the request, which is after
/// the send, so etcd cannot expire the lease — and so cannot let another node
/// take over what it guards — before `valid_until()`. Measuring from the time
/// the reply arrived instead would add the request's whole round trip to the
/// deadline, and with it a window in which a partitioned primary still
/// acknowledges writes while etcd has already expired its lease and elected
/// another. (This assumes the two machines' clocks run at the same rate over
/// one TTL; drift of parts per million over seconds is far below the
/// keep-alive interval's slack.)
///
/// **Invariant:** a node never relies on its lease past `valid_until()`; the
/// deadline only moves forward, and once lost (etcd answered TTL 0, or the
/// deadline passed without a renewal) the clock stays invalid — a new lease
/// gets a new clock.
///
/// Cheap to clone and to read from any thread: one atomic load.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    /// Instants are stored as nanoseconds after this one.
    origin: Instant,
    /// [`NEVER_VALID`], [`LOST`], or the deadline in nanoseconds after `origin`.
    valid_until_ns: AtomicU64,
}

const NEVER_VALID: u64 = 0;
const LOST: u64 = u64::MAX;

impl LeaseClock {
    /// A clock that is not valid until [`renewed`](LeaseClock::renewed).
    /// `origin` must not be later than any instant later passed in.
    pub fn new(origin: Instant) -> LeaseClock {
        LeaseClock {
            inner: Arc::new(ClockInner {
                origin,
                valid_until_ns: AtomicU64::new(NEVER_VALID),
            }),
        }
    }

    /// The instant up to which the lease is known to be held; `None` if it
    /// never was or is lost.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.inner.valid_until_ns.load(Ordering::Acquire) {
            NEVER_VALID | LOST => None,
            ns => Some(self.inner.origin + Duration::from_nanos(ns)),
        }
    }

    /// Whether the lease is held at `now`: strictly before [`valid_until`](LeaseClock::valid_until).
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_until().is_some_and(|until| now < until)
    }

    /// Whether the lease is known lost (as opposed to merely not yet renewed).
    pub fn is_lost(&self) -> bool {
        self.inner.valid_until_ns.load(Ordering::Acquire) == LOST
    }

    /// Records a successful grant or keep-alive: the request was sent at
    /// `sent_at` and etcd answered with `ttl`. The deadline never moves back,
    /// and a lost clock stays lost.
    pub fn renewed(&self, sent_at: Instant, ttl: Duration) {
        let since_origin = sent_at.saturating_duration_since(self.inner.origin) + ttl;
        // Saturate below the sentinels: a deadline centuries away is still a deadline.
        let ns = u64::try_from(since_origin.as_nanos())
            .unwrap_or(LOST - 1)
            .clamp(1, LOST - 1);
        let _ = self.inner.valid_until_ns.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |current| (current != LOST && ns > current).then_some(ns),
        );
    }

    /// Marks the lease lost for good.
    pub fn lose(&self) {
        self.inner.valid_until_ns.store(LOST, Ordering::Release);
    }
}

/// The keep-alive task of one lease (see [`Etcd::keep_alive`]). Dropping it
/// stops the task; the lease then expires after its TTL unless revoked.
#[derive(Debug)]
pub struct KeepAlive {
    clock: LeaseClock,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// The lease's fencing clock.
    pub fn clock(&self) -> &LeaseClock {
        &self.clock
    }

    /// Resolves once the lease is lost: etcd answered TTL 0 (it expired or was
    /// revoked) or `valid_until` passed without a successful renewal. The
    /// clock is invalid by then; the owner should register again with a new
    /// lease. The future owns what it needs, so it outlives a lock guarding
    /// the `KeepAlive`.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // An error means the task ended, which it does only after losing the lease.
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// Stops renewing (before revoking the lease): the clock turns invalid at
    /// once, since nothing will renew it.
    pub fn stop(&self) {
        self.task.abort();
        self.clock.lose();
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection to an etcd cluster. Cheap to clone; clones share the channel.
#[derive(Clone)]
pub struct Etcd {
    client: EtcdClient,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").finish_non_exhaustive()
    }
}

async fn bounded<T>(
    op: &'static str,
    request: impl std::future::Future<Output = Result<T, etcdv3client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(source)) => Err(EtcdError::Request { op, source }),
        Err(_) => Err(EtcdError::Timeout { op }),
    }
}

fn entry(kv: pb::KeyValue) -> Result<Entry, EtcdError> {
    Ok(Entry {
        key: String::from_utf8(kv.key).map_err(|_| EtcdError::KeyNotUtf8)?,
        value: kv.value,
        mod_revision: Revision(kv.mod_revision),
    })
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: "\0" means "to the end of the key space" to etcd.
    vec![0]
}

fn put_op(key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease: lease.map_or(0, |l| l.0),
            ..Default::default()
        })),
    }
}

impl Etcd {
    /// Connects to etcd at `endpoints` (URLs such as `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Etcd, EtcdError> {
        let connect = EtcdClient::new(endpoints.to_vec(), None);
        match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
            Ok(Ok(client)) => Ok(Etcd { client }),
            Ok(Err(source)) => Err(EtcdError::Connect {
                endpoints: endpoints.join(","),
                source,
            }),
            Err(_) => Err(EtcdError::Timeout { op: "connect" }),
        }
    }

    /// The value of `key` and its modification revision, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>, EtcdError> {
        let mut kv = self.client.kv.clone();
        let answer = bounded(
            "range",
            kv.range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        )
        .await?;
        Ok(answer
            .kvs
            .into_iter()
            .next()
            .map(|kv| (kv.value, Revision(kv.mod_revision))))
    }

    /// Every key that starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<Entry>, EtcdError> {
        let mut kv = self.client.kv.clone();
        let answer = bounded(
            "range",
            kv.range(pb::RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                ..Default::default()
            }),
        )
        .await?;
        answer.kvs.into_iter().map(entry).collect()
    }

    /// Sets `key` to `value` (detaching it from any lease).
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), EtcdError> {
        self.put_inner(key, value.into(), None).await
    }

    /// Sets `key` to `value`, attached to `lease`: etcd deletes it when the
    /// lease expires or is revoked.
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Result<(), EtcdError> {
        self.put_inner(key, value.into(), Some(lease)).await
    }

    async fn put_inner(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<(), EtcdError> {
        let mut kv = self.client.kv.clone();
        bounded(
            "put",
            kv.put(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease: lease.map_or(0, |l| l.0),
                ..Default::default()
            }),
        )
        .await
        .map(drop)
    }

    /// Creates `key` with `value` only if it does not exist (one txn comparing
    /// its create revision with 0). `true` if this call created it.
    pub async fn create(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<bool, EtcdError> {
        self.create_under(key, value.into(), None).await
    }

    /// Like [`create`](Self::create), attaching the key to `lease` (it goes
    /// when the lease ends).
    pub async fn create_with_lease(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Result<bool, EtcdError> {
        self.create_under(key, value.into(), Some(lease)).await
    }

    async fn create_under(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool, EtcdError> {
        let compare = pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        };
        self.txn(compare, put_op(key, value, lease)).await
    }

    /// Sets `key` to `value` only if its modification revision is still
    /// `expected` ([`Revision::ABSENT`]: only if it does not exist). `true` if
    /// this call wrote it.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: impl Into<Vec<u8>>,
    ) -> Result<bool, EtcdError> {
        let compare = pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(expected.0)),
            ..Default::default()
        };
        self.txn(compare, put_op(key, value.into(), None)).await
    }

    async fn txn(&self, compare: pb::Compare, then: pb::RequestOp) -> Result<bool, EtcdError> {
        let mut kv = self.client.kv.clone();
        let answer = bounded(
            "txn",
            kv.txn(pb::TxnRequest {
                compare: vec![compare],
                success: vec![then],
                failure: Vec::new(),
            }),
        )
        .await?;
        Ok(answer.succeeded)
    }

    /// Deletes `key`; `true` if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let mut kv = self.client.kv.clone();
        let answer = bounded(
            "delete",
            kv.delete_range(pb::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        )
        .await?;
        Ok(answer.deleted > 0)
    }

    /// Watches every key under `prefix` from now on. The receiver yields puts
    /// and deletes in revision order and closes when the watch breaks (etcd
    /// lost, compaction): the consumer then lists and watches again.
    ///
    /// Events after this call returns are never missed, so "watch, then list"
    /// sees every change (some twice); "list, then watch" could miss one.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
    ) -> Result<mpsc::Receiver<WatchEvent>, EtcdError> {
        let mut client = self.client.watch.clone();
        let mut watcher = bounded(
            "watch",
            client
                .do_watch(prefix.as_bytes().to_vec())
                .with_prefix()
                .into_future(),
        )
        .await?;
        let (tx, rx) = mpsc::channel(WATCH_EVENTS_MAX);
        tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    answer = watcher.message() => answer,
                    () = tx.closed() => return,
                };
                let response = match answer {
                    Ok(Some(response)) if !response.canceled => response,
                    Ok(_) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, "etcd watch broke");
                        return;
                    }
                };
                for event in response.events {
                    let Some(kv) = event.kv else { continue };
                    let is_delete =
                        event.r#type == etcdv3client::pb::event::EventType::Delete as i32;
                    let Ok(entry) = entry(kv) else { continue };
                    let event = if is_delete {
                        WatchEvent::Delete {
                            key: entry.key,
                            mod_revision: entry.mod_revision,
                        }
                    } else {
                        WatchEvent::Put(entry)
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Grants a lease of `ttl` (whole seconds, at least one).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease.clone();
        let sent_at = Instant::now();
        // The crate's `grant` helper boxes a future that is not `Send`; the raw
        // request is.
        let answer = bounded(
            "lease grant",
            lease.lease_grant(pb::LeaseGrantRequest { ttl: ttl_s, id: 0 }),
        )
        .await?;
        let granted = Duration::from_secs(u64::try_from(answer.ttl).unwrap_or(0));
        let clock = LeaseClock::new(sent_at);
        clock.renewed(sent_at, granted);
        Ok(Lease {
            id: LeaseId(answer.id),
            ttl: granted,
            clock,
        })
    }

    /// Revokes `lease`: etcd deletes every key attached to it at once.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), EtcdError> {
        let mut client = self.client.lease.clone();
        bounded(
            "lease revoke",
            client.lease_revoke(pb::LeaseRevokeRequest { id: lease.0 }),
        )
        .await
        .map(drop)
    }

    /// Starts keeping `lease` alive: a keep-alive request every third of its
    /// TTL, each moving the lease's [`LeaseClock`] to the instant it was sent
    /// plus the TTL etcd answered. A TTL-0 answer, or the clock running out
    /// while etcd does not answer, loses the lease: the clock turns invalid
    /// for good and [`KeepAlive::lost`] resolves. Must run inside a tokio
    /// runtime.
    pub fn keep_alive(&self, lease: &Lease) -> KeepAlive {
        let (lost_tx, lost) = watch::channel(false);
        let clock = lease.clock.clone();
        let task = tokio::spawn(keep_alive_loop(
            self.client.lease.clone(),
            lease.id,
            lease.ttl,
            clock.clone(),
            lost_tx,
        ));
        KeepAlive { clock, lost, task }
    }
}

type LeaseClient = etcdv3client::LeaseClient<
    etcdv3client::grpc::CredentialInterceptor<etcdv3client::grpc::TonicClient>,
>;

/// The interval between keep-alive requests for a lease of `ttl`: a third, so
/// two requests in a row may fail before the lease is in danger.
pub fn keep_alive_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

async fn keep_alive_loop(
    mut client: LeaseClient,
    id: LeaseId,
    ttl: Duration,
    clock: LeaseClock,
    lost: watch::Sender<bool>,
) {
    let interval = keep_alive_interval(ttl);
    // One long-lived stream; reopened after an error. One request in flight at
    // a time, so each answer belongs to the request just sent.
    let mut stream: Option<(mpsc::Sender<pb::LeaseKeepAliveRequest>, _)> = None;
    loop {
        let sent_at = Instant::now();
        let outcome = tokio::time::timeout(interval, async {
            let request = pb::LeaseKeepAliveRequest { id: id.0 };
            let inbound = match stream.as_mut() {
                Some((tx, inbound)) => {
                    tx.send(request).await.map_err(|err| {
                        etcdv3client::Error::new(
                            etcdv3client::ErrKind::LeaseRequestFailed,
                            err.to_string(),
                        )
                    })?;
                    inbound
                }
                None => {
                    // The request goes into the stream before it opens: etcd
                    // sends the response headers the call waits for only with
                    // its first answer.
                    let (tx, rx) = mpsc::channel(1);
                    tx.try_send(request)
                        .expect("a new channel of one has room for one request");
                    let inbound = client
                        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await?;
                    &mut stream.insert((tx, inbound)).1
                }
            };
            match inbound.message().await {
                Ok(Some(answer)) => Ok::<i64, etcdv3client::Error>(answer.ttl),
                Ok(None) => Err(etcdv3client::Error::new(
                    etcdv3client::ErrKind::LeaseRequestFailed,
                    "keep-alive stream closed",
                )),
                Err(status) => Err(etcdv3client::Error::from(status)),
            }
        })
        .await;
        match outcome {
            Ok(Ok(ttl_s)) if ttl_s > 0 => {
                clock.renewed(
                    sent_at,
                    Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0)),
                );
            }
            Ok(Ok(_)) => {
                tracing::warn!(lease = id.0, "etcd says the lease expired");
                break;
            }
            Ok(Err(err)) => {
                tracing::warn!(lease = id.0, error = %err, "lease keep-alive failed");
                stream = None;
            }
            Err(_) => {
                tracing::warn!(lease = id.0, "lease keep-alive timed out");
                stream = None;
            }
        }
        if !clock.is_valid(Instant::now()) {
            tracing::warn!(lease = id.0, "lease ran out without a renewal");
            break;
        }
        tokio::time::sleep_until((sent_at + interval).into()).await;
    }
    clock.lose();
    let _ = lost.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_send_instant_plus_the_ttl() {
        let origin = Instant::now();
        let clock = LeaseClock::new(origin);
        assert_eq!(clock.valid_until(), None);
        assert!(!clock.is_valid(origin));

        let sent = origin + Duration::from_millis(1_500);
        clock.renewed(sent, Duration::from_secs(5));
        let until = sent + Duration::from_secs(5);
        assert_eq!(clock.valid_until(), Some(until));
        assert!(clock.is_valid(sent));
        assert!(clock.is_valid(until - Duration::from_nanos(1)));
        assert!(!clock.is_valid(until));
        assert!(!clock.is_valid(until + Duration::from_secs(1)));
    }

    #[test]
    fn a_late_answer_to_an_older_request_never_moves_the_deadline_back() {
        let origin = Instant::now();
        let clock = LeaseClock::new(origin);
        clock.renewed(origin + Duration::from_secs(3), Duration::from_secs(5));
        clock.renewed(origin + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(clock.valid_until(), Some(origin + Duration::from_secs(8)));
    }

    #[test]
    fn a_lost_lease_stays_lost() {
        let origin = Instant::now();
        let clock = LeaseClock::new(origin);
        clock.renewed(origin, Duration::from_secs(5));
        let reader = clock.clone();
        clock.lose();
        assert!(reader.is_lost());
        assert_eq!(reader.valid_until(), None);
        assert!(!reader.is_valid(origin));
        clock.renewed(origin + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(reader.valid_until(), None);
    }

    #[test]
    fn keep_alives_go_out_three_times_per_ttl() {
        assert_eq!(
            keep_alive_interval(Duration::from_secs(6)),
            Duration::from_secs(2)
        );
        assert_eq!(
            keep_alive_interval(Duration::from_millis(30)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_prefix_range_ends_past_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/keel/"), b"/keel0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
