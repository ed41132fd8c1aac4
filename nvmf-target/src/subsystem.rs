//! The NVM subsystem: namespaces with per-host ACLs, and the live controllers.
//!
//! One [`Subsystem`] is shared by every reactor and by the control plane. All
//! methods are thread-safe. Changes to namespaces or ACLs recompute each live
//! controller's namespace view and raise namespace-attribute-changed events on
//! the controllers whose visible set changed.
//!
//! A namespace's access list has two halves: host NQNs ([`HostAcl`]) and host
//! addresses ([`AddressAcl`], judged by the source address of the connection
//! that made the controller). A host sees a namespace only when both admit it.
//!
//! Discovery rule: the discovery log shows this node's subsystem to a host only
//! when the subsystem ACL admits the host **and** at least one namespace's ACL
//! admits it. A subsystem without namespaces is therefore listed to nobody, and a
//! host NQN that no volume's ACL allows sees zero records. Connect stays governed
//! by the subsystem ACL alone, so a connected host whose namespace ACL is granted
//! later sees the namespace arrive through a namespace-attribute event. Every
//! namespace or ACL change bumps the discovery generation counter (GENCTR); a
//! discovery-log-change event goes only to the live discovery controllers whose
//! host gained or lost the record.
//!
//! A cluster node also lists the portals of the other nodes serving the same
//! subsystem ([`Subsystem::set_peer_portals`]), so a host that discovers
//! through any node connects to all of them; the peers' records follow the
//! same visibility rule as this node's own, and a change of the peer list
//! notifies every discovery controller whose host sees the records.
//!
//! Asymmetric Namespace Access: every namespace is its own ANA group, with
//! ANAGRPID equal to its NSID. In a Keel cluster each volume has its own
//! primary node, so two volumes change state independently; one group per
//! namespace lets a node report exactly that, where a shared group would
//! move every member volume at once. A namespace's state is kept even with
//! ANA reporting off, and I/O on a namespace in a non-accessible state is
//! refused with a path related status before it reaches the backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::address_acl::AddressAcl;
use crate::backend::NamespaceBackend;
use crate::controller::{Controller, HostIdentity, NamespaceView, VisibleNamespace};
use crate::nvme::identify::ControllerType;
use crate::nvme::log_page::AnaState;
use crate::throttle::{RateLimits, Throttle, ThrottleStats};

/// Which hosts (by NQN) may use something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAcl {
    /// Every host.
    AnyHost,
    /// Only the listed host NQNs.
    Hosts(BTreeSet<String>),
}

impl HostAcl {
    /// An ACL of the given host NQNs.
    pub fn hosts<I: IntoIterator<Item = S>, S: Into<String>>(hosts: I) -> HostAcl {
        HostAcl::Hosts(hosts.into_iter().map(Into::into).collect())
    }

    /// Whether `host_nqn` is allowed.
    pub fn allows(&self, host_nqn: &str) -> bool {
        match self {
            HostAcl::AnyHost => true,
            HostAcl::Hosts(set) => set.contains(host_nqn),
        }
    }
}

/// Identity of the subsystem, fixed for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsystemConfig {
    /// The subsystem NQN (stable across restarts; reported as SUBNQN).
    pub nqn: String,
    /// Serial number reported by every controller (20 ASCII characters at most).
    pub serial: String,
    /// Model number (40 ASCII characters at most).
    pub model: String,
    /// Firmware revision (8 ASCII characters at most).
    pub firmware: String,
    /// The controller ids this node hands out. Every node serving the same
    /// subsystem NQN needs a range of its own: a host that reaches one
    /// subsystem through several nodes refuses a second controller with an
    /// id it already knows (Linux: "Duplicate cntlid").
    pub cntlid_range: CntlidRange,
    /// Report Asymmetric Namespace Access: CMIC bit 3, the ANA fields of
    /// Identify, ANA change notices and log page 0Ch. Off by default, for a
    /// single node; a cluster node turns it on so the Linux host's native
    /// multipath follows each namespace's optimized path.
    pub ana_reporting: bool,
    /// ANA transition time (ANATT), in seconds: how long a namespace may
    /// stay in [`AnaState::Change`]. Linux resets the controller after
    /// twice this without leaving the change state.
    pub ana_transition_time_s: u8,
}

impl SubsystemConfig {
    /// A configuration with Keel's model name and this crate's version.
    pub fn new(nqn: impl Into<String>, serial: impl Into<String>) -> SubsystemConfig {
        SubsystemConfig {
            nqn: nqn.into(),
            serial: serial.into(),
            model: "Keel".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            cntlid_range: CntlidRange::ALL,
            ana_reporting: false,
            ana_transition_time_s: ANA_TRANSITION_TIME_DEFAULT_S,
        }
    }
}

/// Default ANATT: the value Linux's own target reports.
pub const ANA_TRANSITION_TIME_DEFAULT_S: u8 = 10;

/// How a namespace is added: who may see it and its initial ANA state.
/// A [`HostAcl`] converts into options with [`AnaState::Optimized`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Which hosts (by NQN) see the namespace.
    pub acl: HostAcl,
    /// Which host addresses see the namespace.
    pub addresses: AddressAcl,
    /// The ANA state of the namespace's group on this node.
    pub ana_state: AnaState,
    /// The rates the namespace's I/O is held to.
    pub rate_limits: RateLimits,
}

impl NamespaceOptions {
    /// Options with `acl`, any address and the optimized state.
    pub fn new(acl: HostAcl) -> NamespaceOptions {
        NamespaceOptions {
            acl,
            addresses: AddressAcl::AnyAddress,
            ana_state: AnaState::Optimized,
            rate_limits: RateLimits::UNLIMITED,
        }
    }

    /// The same options holding the namespace's I/O to `rate_limits` from
    /// its first command.
    pub fn with_rate_limits(self, rate_limits: RateLimits) -> NamespaceOptions {
        NamespaceOptions {
            rate_limits,
            ..self
        }
    }

    /// The same options admitting only host addresses `addresses` allows.
    pub fn with_addresses(self, addresses: AddressAcl) -> NamespaceOptions {
        NamespaceOptions { addresses, ..self }
    }

    /// The same options with ANA state `state`.
    pub fn with_ana_state(self, state: AnaState) -> NamespaceOptions {
        NamespaceOptions {
            ana_state: state,
            ..self
        }
    }
}

impl From<HostAcl> for NamespaceOptions {
    fn from(acl: HostAcl) -> NamespaceOptions {
        NamespaceOptions::new(acl)
    }
}

/// An inclusive range of controller ids (CNTLID), within `1..=0xFFEF`:
/// 0 is never a dynamic controller's id and 0xFFF0 and up are reserved
/// (NVMe Base 2.0, section 5.17.2.1, CNTLID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CntlidRange {
    first: u16,
    last: u16,
}

impl CntlidRange {
    /// Every id a controller may have: `1..=0xFFEF`.
    pub const ALL: CntlidRange = CntlidRange {
        first: 1,
        last: CNTLID_MAX,
    };

    /// The ids `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<CntlidRange, CntlidRangeError> {
        if first == 0 || last > CNTLID_MAX || first > last {
            return Err(CntlidRangeError { first, last });
        }
        Ok(CntlidRange { first, last })
    }

    /// The lowest id of the range.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The highest id of the range.
    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ids the range holds.
    pub fn len(self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// Always false: a range holds at least one id.
    pub fn is_empty(self) -> bool {
        false
    }

    fn contains(self, cntlid: u16) -> bool {
        (self.first..=self.last).contains(&cntlid)
    }

    /// The id after `cntlid`, wrapping from the last to the first.
    fn after(self, cntlid: u16) -> u16 {
        if cntlid >= self.last {
            self.first
        } else {
            cntlid + 1
        }
    }
}

/// A controller id range that is empty or leaves `1..=0xFFEF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("controller id range {first}..={last} is not a non-empty part of 1..=65519")]
pub struct CntlidRangeError {
    /// The first id asked for.
    pub first: u16,
    /// The last id asked for.
    pub last: u16,
}

/// Highest NSID this subsystem accepts (reported as NN).
pub const NSID_MAX: u32 = 1024;
/// Largest controller id handed out (0xFFF0 and up are reserved).
const CNTLID_MAX: u16 = 0xFFEF;

/// Why a namespace change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceChangeError {
    /// NSID 0 or above [`NSID_MAX`].
    #[error("namespace id {0} is outside 1..={NSID_MAX}")]
    InvalidNsid(u32),
    /// A namespace with this NSID already exists.
    #[error("namespace {0} already exists")]
    Exists(u32),
    /// No namespace has this NSID.
    #[error("namespace {0} does not exist")]
    NotFound(u32),
}

/// Why a controller could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControllerCreateError {
    #[error("no controller id left")]
    NoControllerId,
}

struct NamespaceSlot {
    backend: Arc<dyn NamespaceBackend>,
    acl: HostAcl,
    addresses: AddressAcl,
    ana_state: AnaState,
    /// `Registry::ana_change_count` when `ana_state` was last set.
    ana_change_count: u64,
    /// Its rate limiter, shared with every controller's view of it.
    throttle: Arc<Throttle>,
}

impl NamespaceSlot {
    /// Whether the host `host_nqn` at `host_addr` sees the namespace.
    fn admits(&self, host_nqn: &str, host_addr: IpAddr) -> bool {
        self.acl.allows(host_nqn) && self.addresses.allows(host_addr)
    }
}

struct Registry {
    namespaces: BTreeMap<u32, NamespaceSlot>,
    controllers: BTreeMap<u16, Arc<Controller>>,
    next_cntlid: u16,
    host_acl: HostAcl,
    /// ANA log page change count: bumped by every change of a namespace's
    /// ANA state and by every namespace added or removed (the groups listed
    /// change then).
    ana_change_count: u64,
    /// Portals of the other nodes serving this subsystem.
    peer_portals: Arc<Vec<SocketAddr>>,
}

/// What the discovery log shows one host, read under one lock.
pub(crate) struct DiscoveryView {
    /// The discovery generation counter (GENCTR).
    pub generation: u64,
    /// Whether the host sees the subsystem's records at all.
    pub visible: bool,
    /// Portals of the other nodes, listed after this node's own.
    pub peer_portals: Arc<Vec<SocketAddr>>,
}

/// I/O counters reported in the SMART log.
#[derive(Default)]
pub(crate) struct IoCounters {
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

/// The NVM subsystem registry. Create with [`Subsystem::new`] and share as `Arc`.
pub struct Subsystem {
    config: SubsystemConfig,
    registry: Mutex<Registry>,
    epoch: Instant,
    discovery_generation: AtomicU64,
    pub(crate) counters: IoCounters,
}

impl Subsystem {
    /// Creates an empty subsystem that admits any host.
    pub fn new(config: SubsystemConfig) -> Arc<Subsystem> {
        let first_cntlid = config.cntlid_range.first();
        Arc::new(Subsystem {
            config,
            registry: Mutex::new(Registry {
                namespaces: BTreeMap::new(),
                controllers: BTreeMap::new(),
                next_cntlid: first_cntlid,
                host_acl: HostAcl::AnyHost,
                ana_change_count: 0,
                peer_portals: Arc::new(Vec::new()),
            }),
            epoch: Instant::now(),
            discovery_generation: AtomicU64::new(1),
            counters: IoCounters::default(),
        })
    }

    /// The subsystem NQN.
    pub fn nqn(&self) -> &str {
        &self.config.nqn
    }

    /// The subsystem identity.
    pub fn config(&self) -> &SubsystemConfig {
        &self.config
    }

    /// Sets which hosts may connect to the subsystem at all. Namespace ACLs
    /// further restrict what a connected host sees and whether the subsystem is
    /// listed to it in the discovery log (see the module documentation).
    pub fn set_host_acl(&self, acl: HostAcl) {
        let mut reg = self.registry.lock();
        reg.host_acl = acl;
        self.refresh_discovery(&reg);
    }

    /// Sets the portals (address and TCP port) of the other nodes that serve
    /// this subsystem, listed in the discovery log after this node's own
    /// portals to every host that sees the subsystem. Leave this node's own
    /// addresses out. A different list bumps GENCTR and raises a
    /// discovery-log-change notice on each live discovery controller whose
    /// host sees the records; the same list changes nothing.
    pub fn set_peer_portals(&self, portals: Vec<SocketAddr>) {
        let mut reg = self.registry.lock();
        if *reg.peer_portals == portals {
            return;
        }
        reg.peer_portals = Arc::new(portals);
        self.discovery_generation.fetch_add(1, Ordering::AcqRel);
        for c in reg
            .controllers
            .values()
            .filter(|c| c.kind == ControllerType::Discovery)
        {
            if Self::discoverable(&reg, &c.host_nqn, c.host_addr) {
                c.discovery_changed();
            }
        }
    }

    /// The portals of the other nodes, as last set.
    pub fn peer_portals(&self) -> Vec<SocketAddr> {
        self.registry.lock().peer_portals.to_vec()
    }

    /// Whether `host_nqn` may connect to the subsystem.
    pub fn host_allowed(&self, host_nqn: &str) -> bool {
        self.registry.lock().host_acl.allows(host_nqn)
    }

    /// Whether the discovery log lists this subsystem to `host_nqn` at
    /// `host_addr`: the subsystem ACL and at least one namespace's ACLs
    /// admit the host.
    pub fn discoverable_by(&self, host_nqn: &str, host_addr: IpAddr) -> bool {
        Self::discoverable(&self.registry.lock(), host_nqn, host_addr)
    }

    fn discoverable(reg: &Registry, host_nqn: &str, host_addr: IpAddr) -> bool {
        reg.host_acl.allows(host_nqn)
            && reg
                .namespaces
                .values()
                .any(|s| s.admits(host_nqn, host_addr))
    }

    /// The discovery generation counter, whether `host_nqn` sees the
    /// subsystem and the peer portals, read together so a log page is
    /// consistent with its GENCTR.
    pub(crate) fn discovery_view(&self, host_nqn: &str, host_addr: IpAddr) -> DiscoveryView {
        let reg = self.registry.lock();
        DiscoveryView {
            generation: self.discovery_generation.load(Ordering::Acquire),
            visible: Self::discoverable(&reg, host_nqn, host_addr),
            peer_portals: reg.peer_portals.clone(),
        }
    }

    /// Bumps GENCTR and raises a discovery-log-change event on each live
    /// discovery controller whose host gained or lost the subsystem record.
    /// Called with the registry locked, after any namespace or ACL change.
    fn refresh_discovery(&self, reg: &Registry) {
        self.discovery_generation.fetch_add(1, Ordering::AcqRel);
        for c in reg
            .controllers
            .values()
            .filter(|c| c.kind == ControllerType::Discovery)
        {
            let visible = Self::discoverable(reg, &c.host_nqn, c.host_addr);
            if c.swap_discovery_visible(visible) != visible {
                c.discovery_changed();
            }
        }
    }

    /// Adds namespace `nsid` backed by `backend`. `options` is a [`HostAcl`]
    /// (the namespace starts optimized) or [`NamespaceOptions`] with an ANA
    /// state of its own.
    pub fn add_namespace(
        &self,
        nsid: u32,
        backend: Arc<dyn NamespaceBackend>,
        options: impl Into<NamespaceOptions>,
    ) -> Result<(), NamespaceChangeError> {
        let NamespaceOptions {
            acl,
            addresses,
            ana_state,
            rate_limits,
        } = options.into();
        if nsid == 0 || nsid > NSID_MAX {
            return Err(NamespaceChangeError::InvalidNsid(nsid));
        }
        let mut reg = self.registry.lock();
        if reg.namespaces.contains_key(&nsid) {
            return Err(NamespaceChangeError::Exists(nsid));
        }
        reg.ana_change_count += 1;
        let ana_change_count = reg.ana_change_count;
        reg.namespaces.insert(
            nsid,
            NamespaceSlot {
                backend,
                acl,
                addresses,
                ana_state,
                ana_change_count,
                throttle: Arc::new(Throttle::new(rate_limits)),
            },
        );
        Self::refresh_views(&reg, &[]);
        self.refresh_discovery(&reg);
        Ok(())
    }

    /// Sets the ANA state of namespace `nsid`'s group. A change bumps the ANA
    /// change count, is published to every live controller before this
    /// returns (an I/O command that arrives later sees it), and raises an
    /// ANA change notice on each I/O controller that sees the namespace and
    /// enabled the notice. Setting the current state changes nothing.
    pub fn set_ana_state(&self, nsid: u32, state: AnaState) -> Result<(), NamespaceChangeError> {
        let mut reg = self.registry.lock();
        let current = reg
            .namespaces
            .get(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?
            .ana_state;
        if current == state {
            return Ok(());
        }
        reg.ana_change_count += 1;
        let ana_change_count = reg.ana_change_count;
        if let Some(slot) = reg.namespaces.get_mut(&nsid) {
            slot.ana_state = state;
            slot.ana_change_count = ana_change_count;
        }
        Self::refresh_views(&reg, &[]);
        if self.config.ana_reporting {
            for c in reg
                .controllers
                .values()
                .filter(|c| c.kind == ControllerType::Io && c.view().contains_key(&nsid))
            {
                c.ana_changed();
            }
        }
        Ok(())
    }

    /// The ANA state of namespace `nsid`, if it exists.
    pub fn ana_state(&self, nsid: u32) -> Option<AnaState> {
        self.registry
            .lock()
            .namespaces
            .get(&nsid)
            .map(|s| s.ana_state)
    }

    /// The ANA log page change count and `controller`'s namespace view, read
    /// together so a log page is consistent with its change count.
    pub(crate) fn ana_view(&self, controller: &Controller) -> (u64, Arc<NamespaceView>) {
        let reg = self.registry.lock();
        (reg.ana_change_count, controller.view())
    }

    /// Removes namespace `nsid`, returning its backend.
    pub fn remove_namespace(
        &self,
        nsid: u32,
    ) -> Result<Arc<dyn NamespaceBackend>, NamespaceChangeError> {
        let mut reg = self.registry.lock();
        let slot = reg
            .namespaces
            .remove(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?;
        reg.ana_change_count += 1;
        Self::refresh_views(&reg, &[]);
        self.refresh_discovery(&reg);
        Ok(slot.backend)
    }

    /// Replaces the ACL of namespace `nsid`.
    pub fn set_namespace_acl(&self, nsid: u32, acl: HostAcl) -> Result<(), NamespaceChangeError> {
        let mut reg = self.registry.lock();
        reg.namespaces
            .get_mut(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?
            .acl = acl;
        Self::refresh_views(&reg, &[]);
        self.refresh_discovery(&reg);
        Ok(())
    }

    /// Replaces both ACLs of namespace `nsid` in one step (no host is
    /// judged by one new list and one old one): hosts they no longer admit
    /// lose the namespace at once, as with [`Self::set_namespace_acl`].
    pub fn set_namespace_access(
        &self,
        nsid: u32,
        acl: HostAcl,
        addresses: AddressAcl,
    ) -> Result<(), NamespaceChangeError> {
        let mut reg = self.registry.lock();
        let slot = reg
            .namespaces
            .get_mut(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?;
        slot.acl = acl;
        slot.addresses = addresses;
        Self::refresh_views(&reg, &[]);
        self.refresh_discovery(&reg);
        Ok(())
    }

    /// Holds namespace `nsid`'s I/O to `limits` from the next command on,
    /// for every host (see [`crate::throttle`]).
    pub fn set_namespace_rate_limits(
        &self,
        nsid: u32,
        limits: RateLimits,
    ) -> Result<(), NamespaceChangeError> {
        let reg = self.registry.lock();
        reg.namespaces
            .get(&nsid)
            .ok_or(NamespaceChangeError::NotFound(nsid))?
            .throttle
            .set_limits(limits);
        Ok(())
    }

    /// Namespace `nsid`'s rate limits and the commands they held back.
    pub fn namespace_throttle_stats(&self, nsid: u32) -> Option<ThrottleStats> {
        self.registry
            .lock()
            .namespaces
            .get(&nsid)
            .map(|s| s.throttle.stats())
    }

    /// Every namespace's nsid, NVMe UUID and throttle statistics (for a
    /// metrics export that names volumes by their UUID).
    pub fn throttle_stats(&self) -> Vec<(u32, [u8; 16], ThrottleStats)> {
        self.registry
            .lock()
            .namespaces
            .iter()
            .map(|(nsid, s)| (*nsid, s.backend.uuid(), s.throttle.stats()))
            .collect()
    }

    /// Tells hosts that namespace `nsid` changed size (call after resizing the backend).
    pub fn namespace_resized(&self, nsid: u32) -> Result<(), NamespaceChangeError> {
        let reg = self.registry.lock();
        if !reg.namespaces.contains_key(&nsid) {
            return Err(NamespaceChangeError::NotFound(nsid));
        }
        Self::refresh_views(&reg, &[nsid]);
        Ok(())
    }

    /// NSIDs currently defined, with their ACLs.
    pub fn namespaces(&self) -> Vec<(u32, HostAcl)> {
        self.registry
            .lock()
            .namespaces
            .iter()
            .map(|(n, s)| (*n, s.acl.clone()))
            .collect()
    }

    /// Number of live controllers (I/O and discovery).
    pub fn controller_count(&self) -> usize {
        self.registry.lock().controllers.len()
    }

    fn view_for(reg: &Registry, host_nqn: &str, host_addr: IpAddr) -> NamespaceView {
        reg.namespaces
            .iter()
            .filter(|(_, s)| s.admits(host_nqn, host_addr))
            .map(|(n, s)| {
                (
                    *n,
                    VisibleNamespace {
                        backend: s.backend.clone(),
                        ana_state: s.ana_state,
                        ana_change_count: s.ana_change_count,
                        throttle: s.throttle.clone(),
                    },
                )
            })
            .collect()
    }

    /// Recomputes every I/O controller's view; notifies those whose visible set
    /// changed or that see one of `also_changed`. A view that differs only in
    /// ANA states is published without a namespace notice (the ANA notice is
    /// the caller's).
    fn refresh_views(reg: &Registry, also_changed: &[u32]) {
        for c in reg
            .controllers
            .values()
            .filter(|c| c.kind == ControllerType::Io)
        {
            let new_view = Self::view_for(reg, &c.host_nqn, c.host_addr);
            let old_view = c.view();
            let mut changed: Vec<u32> = new_view
                .keys()
                .filter(|n| !old_view.contains_key(n) || also_changed.contains(n))
                .chain(old_view.keys().filter(|n| !new_view.contains_key(n)))
                .copied()
                .collect();
            // A replaced backend under the same NSID is a change too.
            changed.extend(
                new_view
                    .iter()
                    .filter(|(n, v)| {
                        old_view
                            .get(n)
                            .is_some_and(|o| !Arc::ptr_eq(&o.backend, &v.backend))
                    })
                    .map(|(n, _)| *n),
            );
            let ana_moved = new_view.iter().any(|(n, v)| {
                old_view
                    .get(n)
                    .is_some_and(|o| o.ana_change_count != v.ana_change_count)
            });
            if !changed.is_empty() {
                c.publish_view(new_view);
                c.namespaces_changed(&changed);
            } else if ana_moved {
                c.publish_view(new_view);
            }
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn now_ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Creates a controller with a controller id from the configured range,
    /// unique among live controllers. Ids are handed out round-robin so a
    /// freed id is not reused at once.
    pub(crate) fn create_controller(
        &self,
        kind: ControllerType,
        host_nqn: &str,
        host_addr: IpAddr,
        host_id: [u8; 16],
        kato_ms: u32,
        now_ms: u64,
    ) -> Result<Arc<Controller>, ControllerCreateError> {
        let range = self.config.cntlid_range;
        let mut reg = self.registry.lock();
        let mut candidate = reg.next_cntlid;
        for _ in 0..range.len() {
            if !reg.controllers.contains_key(&candidate) {
                break;
            }
            candidate = range.after(candidate);
        }
        if reg.controllers.contains_key(&candidate) {
            return Err(ControllerCreateError::NoControllerId);
        }
        // INVARIANT: every live controller's id lies in the configured range.
        assert!(range.contains(candidate));
        reg.next_cntlid = range.after(candidate);
        let view = match kind {
            ControllerType::Io => Self::view_for(&reg, host_nqn, host_addr),
            ControllerType::Discovery => NamespaceView::new(),
        };
        let c = Arc::new(Controller::new(
            candidate,
            kind,
            HostIdentity {
                nqn: host_nqn.to_owned(),
                addr: host_addr.to_canonical(),
                id: host_id,
            },
            kato_ms,
            now_ms,
            view,
        ));
        if kind == ControllerType::Discovery {
            c.swap_discovery_visible(Self::discoverable(&reg, host_nqn, host_addr));
        }
        reg.controllers.insert(candidate, c.clone());
        Ok(c)
    }

    pub(crate) fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.registry.lock().controllers.get(&cntlid).cloned()
    }

    /// Tears a controller down: removes it and marks it dead so its queues close.
    pub(crate) fn remove_controller(&self, cntlid: u16) {
        let removed = self.registry.lock().controllers.remove(&cntlid);
        if let Some(c) = removed {
            c.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    use super::*;
    use crate::backend::{BlockSize, MemoryNamespace};
    use crate::controller::{
        AEC_ANA_CHANGE, AEC_DISCOVERY, AEC_NS_ATTRIBUTE, AEN_ANA_CHANGED, AEN_DISCOVERY_CHANGED,
    };

    fn subsystem() -> Arc<Subsystem> {
        Subsystem::new(SubsystemConfig::new("nqn.2024-01.io.keel:test", "SN1"))
    }

    #[test]
    fn controller_ids_are_unique_among_live_controllers() {
        let s = subsystem();
        let a = s
            .create_controller(ControllerType::Io, "h", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let b = s
            .create_controller(ControllerType::Io, "h", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        assert_ne!(a.cntlid, b.cntlid);
        s.remove_controller(a.cntlid);
        assert!(a.is_dead());
        assert!(s.controller(a.cntlid).is_none());
    }

    #[test]
    fn controller_ids_come_from_the_configured_range_and_run_out() {
        let mut config = SubsystemConfig::new("nqn.2024-01.io.keel:test", "SN1");
        config.cntlid_range = CntlidRange::new(0x100, 0x102).unwrap();
        let s = Subsystem::new(config);
        let make = || s.create_controller(ControllerType::Io, "h", LOCALHOST, [0; 16], 0, 0);
        let ids: Vec<u16> = (0..3).map(|_| make().unwrap().cntlid).collect();
        assert_eq!(ids, vec![0x100, 0x101, 0x102]);
        assert_eq!(make().err(), Some(ControllerCreateError::NoControllerId));
        // A freed id is handed out again once the others are taken.
        s.remove_controller(0x101);
        assert_eq!(make().unwrap().cntlid, 0x101);
        assert_eq!(make().err(), Some(ControllerCreateError::NoControllerId));
    }

    #[test]
    fn controller_id_ranges_stay_inside_the_dynamic_ids() {
        assert!(CntlidRange::new(0, 5).is_err());
        assert!(CntlidRange::new(6, 5).is_err());
        assert!(CntlidRange::new(1, 0xFFF0).is_err());
        let one = CntlidRange::new(7, 7).unwrap();
        assert_eq!((one.first(), one.last(), one.len()), (7, 7, 1));
        assert_eq!(CntlidRange::ALL.len(), 0xFFEF);
    }

    #[test]
    fn acl_filters_views_and_changes_raise_events() {
        let s = subsystem();
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        s.add_namespace(1, ns.clone(), HostAcl::hosts(["hostA"]))
            .unwrap();
        let a = s
            .create_controller(ControllerType::Io, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let b = s
            .create_controller(ControllerType::Io, "hostB", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        a.state.lock().aec = AEC_NS_ATTRIBUTE;
        b.state.lock().aec = AEC_NS_ATTRIBUTE;
        assert_eq!(a.view().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(b.view().is_empty());
        s.add_namespace(2, ns.clone(), HostAcl::AnyHost).unwrap();
        assert_eq!(a.take_changed_namespaces(), vec![2]);
        assert_eq!(b.take_changed_namespaces(), vec![2]);
        s.set_namespace_acl(1, HostAcl::hosts(["hostB"])).unwrap();
        assert_eq!(a.take_changed_namespaces(), vec![1]);
        assert_eq!(b.view().keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        s.namespace_resized(2).unwrap();
        assert_eq!(a.take_changed_namespaces(), vec![2]);
        assert_eq!(
            s.add_namespace(2, ns.clone(), HostAcl::AnyHost),
            Err(NamespaceChangeError::Exists(2))
        );
        assert_eq!(
            s.add_namespace(0, ns, HostAcl::AnyHost),
            Err(NamespaceChangeError::InvalidNsid(0))
        );
        s.remove_namespace(2).unwrap();
        assert!(a.view().is_empty());
    }

    #[test]
    fn address_acls_filter_views_and_discovery_live() {
        let s = subsystem();
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let only_other = AddressAcl::Networks(vec!["127.0.0.2/32".parse().unwrap()]);
        s.add_namespace(
            1,
            ns.clone(),
            NamespaceOptions::new(HostAcl::AnyHost).with_addresses(only_other),
        )
        .unwrap();
        let here = s
            .create_controller(ControllerType::Io, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let there = s
            .create_controller(ControllerType::Io, "hostA", other, [0; 16], 0, 0)
            .unwrap();
        here.state.lock().aec = AEC_NS_ATTRIBUTE;
        assert!(here.view().is_empty(), "the same NQN from another address");
        assert_eq!(there.view().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(!s.discoverable_by("hostA", LOCALHOST));
        assert!(s.discoverable_by("hostA", other));
        // Widening the list takes effect on live controllers, with a notice.
        s.set_namespace_access(
            1,
            HostAcl::AnyHost,
            AddressAcl::Networks(vec!["127.0.0.0/8".parse().unwrap()]),
        )
        .unwrap();
        assert_eq!(here.take_changed_namespaces(), vec![1]);
        assert_eq!(here.view().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(s.discoverable_by("hostA", LOCALHOST));
        // Both halves must admit the host.
        s.set_namespace_acl(1, HostAcl::hosts(["hostB"])).unwrap();
        assert!(there.view().is_empty());
        s.set_namespace_access(1, HostAcl::AnyHost, AddressAcl::Networks(Vec::new()))
            .unwrap();
        assert!(here.view().is_empty() && there.view().is_empty());
        assert_eq!(
            s.set_namespace_access(9, HostAcl::AnyHost, AddressAcl::AnyAddress),
            Err(NamespaceChangeError::NotFound(9))
        );
    }

    #[test]
    fn ana_changes_publish_views_and_notify_only_controllers_that_see_the_namespace() {
        let mut config = SubsystemConfig::new("nqn.2024-01.io.keel:test", "SN1");
        config.ana_reporting = true;
        let s = Subsystem::new(config);
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        s.add_namespace(1, ns.clone(), HostAcl::hosts(["hostA"]))
            .unwrap();
        s.add_namespace(
            2,
            ns,
            NamespaceOptions::new(HostAcl::AnyHost).with_ana_state(AnaState::Inaccessible),
        )
        .unwrap();
        let a = s
            .create_controller(ControllerType::Io, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let b = s
            .create_controller(ControllerType::Io, "hostB", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let quiet = s
            .create_controller(ControllerType::Io, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        a.state.lock().aec = AEC_ANA_CHANGE;
        b.state.lock().aec = AEC_ANA_CHANGE;
        assert_eq!(a.view()[&2].ana_state, AnaState::Inaccessible);
        let (count, _) = s.ana_view(&a);
        let generation = a.view_generation();

        s.set_ana_state(1, AnaState::Change).unwrap();
        assert!(a.view_generation() > generation);
        assert_eq!(a.view()[&1].ana_state, AnaState::Change);
        assert_eq!(s.ana_state(1), Some(AnaState::Change));
        let (later, _) = s.ana_view(&a);
        assert_eq!(later, count + 1);
        assert_eq!(discovery_events(&a), vec![AEN_ANA_CHANGED]);
        // B cannot see namespace 1; the third controller did not ask.
        assert_eq!(discovery_events(&b), Vec::<u32>::new());
        assert_eq!(discovery_events(&quiet), Vec::<u32>::new());
        // No namespace notice for a state change.
        assert!(a.take_changed_namespaces().is_empty());

        // Setting the current state is no change.
        s.set_ana_state(1, AnaState::Change).unwrap();
        assert_eq!(s.ana_view(&a).0, later);
        assert_eq!(
            s.set_ana_state(3, AnaState::Optimized),
            Err(NamespaceChangeError::NotFound(3))
        );
    }

    #[test]
    fn peer_portal_changes_bump_genctr_and_notify_hosts_that_see_the_records() {
        let s = subsystem();
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        s.add_namespace(1, ns, HostAcl::hosts(["hostA"])).unwrap();
        let a = s
            .create_controller(ControllerType::Discovery, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let b = s
            .create_controller(ControllerType::Discovery, "hostB", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        a.state.lock().aec = AEC_DISCOVERY;
        b.state.lock().aec = AEC_DISCOVERY;
        let before = s.discovery_view("hostA", LOCALHOST).generation;
        let peers: Vec<SocketAddr> = vec!["10.0.0.2:4420".parse().unwrap()];
        s.set_peer_portals(peers.clone());
        let view = s.discovery_view("hostA", LOCALHOST);
        assert!(view.generation > before);
        assert_eq!(*view.peer_portals, peers);
        assert_eq!(s.peer_portals(), peers);
        // Only A sees the subsystem, so only A's log changed.
        assert_eq!(discovery_events(&a), vec![AEN_DISCOVERY_CHANGED]);
        assert_eq!(discovery_events(&b), Vec::<u32>::new());
        // The same list again changes nothing.
        read_discovery_log(&a);
        s.set_peer_portals(peers);
        assert_eq!(
            s.discovery_view("hostA", LOCALHOST).generation,
            view.generation
        );
        assert_eq!(discovery_events(&a), Vec::<u32>::new());
    }

    fn discovery_events(c: &Controller) -> Vec<u32> {
        c.state.lock().pending_events.drain(..).collect()
    }

    /// Reading log 70h re-arms the discovery notice.
    fn read_discovery_log(c: &Controller) {
        c.state.lock().discovery_notice_masked = false;
    }

    #[test]
    fn discovery_lists_the_subsystem_only_to_hosts_a_namespace_acl_admits() {
        let s = subsystem();
        // No namespace yet: nobody sees the subsystem, whatever its own ACL says.
        assert!(!s.discoverable_by("hostA", LOCALHOST));
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        s.add_namespace(1, ns.clone(), HostAcl::hosts(["hostA"]))
            .unwrap();
        assert!(s.discoverable_by("hostA", LOCALHOST));
        assert!(!s.discoverable_by("hostB", LOCALHOST));
        // The subsystem ACL must admit the host too.
        s.set_host_acl(HostAcl::hosts(["hostB"]));
        assert!(!s.discoverable_by("hostA", LOCALHOST));
        s.set_host_acl(HostAcl::AnyHost);
        assert!(s.discoverable_by("hostA", LOCALHOST));
        s.remove_namespace(1).unwrap();
        assert!(!s.discoverable_by("hostA", LOCALHOST));
    }

    #[test]
    fn discovery_change_events_go_only_to_hosts_whose_records_changed() {
        let s = subsystem();
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [1; 16]);
        s.add_namespace(1, ns.clone(), HostAcl::hosts(["hostA"]))
            .unwrap();
        let a = s
            .create_controller(ControllerType::Discovery, "hostA", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        let b = s
            .create_controller(ControllerType::Discovery, "hostB", LOCALHOST, [0; 16], 0, 0)
            .unwrap();
        a.state.lock().aec = AEC_DISCOVERY;
        b.state.lock().aec = AEC_DISCOVERY;
        let view = s.discovery_view("hostB", LOCALHOST);
        let (generation, visible) = (view.generation, view.visible);
        assert!(!visible);

        // B gains a namespace: only B's record set changes.
        s.add_namespace(2, ns.clone(), HostAcl::hosts(["hostB"]))
            .unwrap();
        assert_eq!(discovery_events(&a), Vec::<u32>::new());
        assert_eq!(discovery_events(&b), vec![AEN_DISCOVERY_CHANGED]);
        let view = s.discovery_view("hostB", LOCALHOST);
        let (later, visible) = (view.generation, view.visible);
        assert!(visible);
        assert!(later > generation);

        // A second namespace for A changes nothing A or B sees.
        s.add_namespace(3, ns.clone(), HostAcl::hosts(["hostA"]))
            .unwrap();
        assert_eq!(discovery_events(&a), Vec::<u32>::new());
        assert_eq!(discovery_events(&b), Vec::<u32>::new());

        // The subsystem ACL shutting B out removes B's record.
        read_discovery_log(&b);
        s.set_host_acl(HostAcl::hosts(["hostA"]));
        assert_eq!(discovery_events(&a), Vec::<u32>::new());
        assert_eq!(discovery_events(&b), vec![AEN_DISCOVERY_CHANGED]);

        // Until the log is read the notice stays masked.
        s.set_host_acl(HostAcl::AnyHost);
        assert_eq!(discovery_events(&b), Vec::<u32>::new());
        read_discovery_log(&b);
        s.remove_namespace(2).unwrap();
        assert_eq!(discovery_events(&b), vec![AEN_DISCOVERY_CHANGED]);
        // A loses its last namespaces one by one: only the last removal counts.
        s.remove_namespace(1).unwrap();
        assert_eq!(discovery_events(&a), Vec::<u32>::new());
        s.remove_namespace(3).unwrap();
        assert_eq!(discovery_events(&a), vec![AEN_DISCOVERY_CHANGED]);
    }
}
