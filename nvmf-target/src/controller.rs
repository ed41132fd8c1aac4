//! Per-controller state shared by the controller's queues (connections).
//!
//! A controller is created by an admin-queue Connect and lives until its admin
//! connection closes, the host disconnects or shuts it down, or its keep-alive
//! timer expires. Its I/O queues may live on other reactor threads; they read
//! the namespace view through a generation counter (one atomic load per command)
//! and notice teardown through [`Controller::is_dead`].

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::NamespaceBackend;
use crate::error_log::ErrorLog;
use crate::nvme::identify::ControllerType;
use crate::nvme::log_page::{AnaState, ErrorInformationEntry};

/// A namespace as a controller's host sees it: its backend and the ANA
/// state of its group, published together so a queue never runs I/O on a
/// state older than the view it holds.
#[derive(Clone)]
pub(crate) struct VisibleNamespace {
    pub backend: Arc<dyn NamespaceBackend>,
    pub ana_state: AnaState,
    /// The subsystem's ANA change count when this namespace's state last changed.
    pub ana_change_count: u64,
    /// The namespace's rate limiter, shared by every controller that sees it.
    pub throttle: Arc<crate::throttle::Throttle>,
}

/// The namespaces a controller's host may see, by NSID.
pub(crate) type NamespaceView = BTreeMap<u32, VisibleNamespace>;

/// Callback that wakes the reactor owning the admin queue so it can complete
/// held Asynchronous Event Requests.
pub(crate) type Notifier = Arc<dyn Fn() + Send + Sync>;

/// AEN DW0 for "namespace attribute changed, read log page 04h" (type Notice).
pub(crate) const AEN_NS_ATTRIBUTE_CHANGED: u32 = 0x02 | (0x04 << 16); // type Notice, info 00h, log 04h
/// AEN DW0 for "discovery log page changed, read log page 70h" (type Notice).
pub(crate) const AEN_DISCOVERY_CHANGED: u32 = 0x02 | (0xF0 << 8) | (0x70 << 16);
/// Async Event Configuration bit enabling namespace attribute notices.
pub(crate) const AEC_NS_ATTRIBUTE: u32 = 1 << 8;
/// Async Event Configuration bit enabling discovery log change notices.
pub(crate) const AEC_DISCOVERY: u32 = 1 << 31;
/// AEN DW0 for "Asymmetric Namespace Access change, read log page 0Ch"
/// (type Notice, info 03h).
pub(crate) const AEN_ANA_CHANGED: u32 = 0x02 | (0x03 << 8) | (0x0C << 16);
/// Async Event Configuration bit enabling ANA change notices.
pub(crate) const AEC_ANA_CHANGE: u32 = 1 << 11;
/// More changed namespaces than the log can list: report 0xFFFFFFFF.
const CHANGED_NS_MAX: usize = 1024;

/// Mutable controller registers and event state.
pub(crate) struct ControllerState {
    /// Controller Configuration property.
    pub cc: u32,
    /// Controller Status property.
    pub csts: u32,
    /// Asynchronous Event Configuration (feature 0Bh).
    pub aec: u32,
    /// Granted I/O queues, 0-based (feature 07h), once negotiated.
    pub queues_granted: Option<u16>,
    /// Write cache enable (feature 06h).
    pub write_cache_enabled: bool,
    /// Namespaces changed since the host last read log page 04h.
    pub changed_ns: Vec<u32>,
    /// Set once a namespace notice was sent; cleared by reading log 04h.
    pub ns_notice_masked: bool,
    /// Set once a discovery notice was sent; cleared by reading log 70h.
    pub discovery_notice_masked: bool,
    /// Set once an ANA change notice was sent; cleared by reading log 0Ch.
    pub ana_notice_masked: bool,
    /// Events waiting for an Asynchronous Event Request.
    pub pending_events: VecDeque<u32>,
    /// I/O queue ids currently connected.
    pub io_queues: Vec<u16>,
    /// Wakes the admin queue's reactor.
    pub notifier: Option<Notifier>,
}

/// A live controller.
pub(crate) struct Controller {
    pub cntlid: u16,
    pub kind: ControllerType,
    pub host_nqn: String,
    /// The source address of the connection that made the controller.
    pub host_addr: IpAddr,
    pub host_id: [u8; 16],
    kato_ms: AtomicU32,
    last_activity_ms: AtomicU64,
    dead: AtomicBool,
    /// Discovery controllers: whether the host saw the subsystem record when the
    /// registry last changed (written only under the subsystem registry lock).
    discovery_visible: AtomicBool,
    view_generation: AtomicU64,
    view: Mutex<Arc<NamespaceView>>,
    pub state: Mutex<ControllerState>,
    /// Error Information log (its own lock: errors are recorded from every queue).
    errors: Mutex<ErrorLog>,
}

/// Who made a controller: the host's NQN and identifier from Connect, and
/// the source address of its connection.
pub(crate) struct HostIdentity {
    pub nqn: String,
    pub addr: IpAddr,
    pub id: [u8; 16],
}

impl Controller {
    pub fn new(
        cntlid: u16,
        kind: ControllerType,
        host: HostIdentity,
        kato_ms: u32,
        now_ms: u64,
        view: NamespaceView,
    ) -> Controller {
        Controller {
            cntlid,
            kind,
            host_nqn: host.nqn,
            host_addr: host.addr,
            host_id: host.id,
            kato_ms: AtomicU32::new(kato_ms),
            last_activity_ms: AtomicU64::new(now_ms),
            dead: AtomicBool::new(false),
            discovery_visible: AtomicBool::new(false),
            view_generation: AtomicU64::new(1),
            view: Mutex::new(Arc::new(view)),
            state: Mutex::new(ControllerState {
                cc: 0,
                csts: 0,
                aec: 0,
                queues_granted: None,
                write_cache_enabled: true,
                changed_ns: Vec::new(),
                ns_notice_masked: false,
                discovery_notice_masked: false,
                ana_notice_masked: false,
                pending_events: VecDeque::new(),
                io_queues: Vec::new(),
                notifier: None,
            }),
            errors: Mutex::new(ErrorLog::new()),
        }
    }

    /// Records a failed command in the Error Information log; returns its error count.
    pub fn record_error(&self, entry: ErrorInformationEntry) -> u64 {
        self.errors.lock().record(entry)
    }

    /// The Error Information log page, newest entry first.
    pub fn error_log_page(&self) -> Vec<u8> {
        self.errors.lock().encode()
    }

    /// Errors recorded over the controller's life.
    pub fn error_count(&self) -> u64 {
        self.errors.lock().count()
    }

    /// Records host activity (any command counts, as with CTRATT.TBKAS).
    pub fn touch(&self, now_ms: u64) {
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    pub fn set_kato_ms(&self, kato_ms: u32) {
        self.kato_ms.store(kato_ms, Ordering::Relaxed);
    }

    /// True when a keep-alive timeout is set and no command arrived within it.
    /// A grace of one KATO is not given: Linux sends keep-alives at KATO/2.
    pub fn keep_alive_expired(&self, now_ms: u64) -> bool {
        let kato = u64::from(self.kato_ms());
        kato != 0 && now_ms.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)) > kato
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the controller torn down; its queues close on their next tick.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let notifier = self.state.lock().notifier.take();
        if let Some(n) = notifier {
            n();
        }
    }

    /// Records whether the host now sees the subsystem in the discovery log;
    /// returns what it saw before.
    pub fn swap_discovery_visible(&self, visible: bool) -> bool {
        self.discovery_visible.swap(visible, Ordering::AcqRel)
    }

    pub fn view_generation(&self) -> u64 {
        self.view_generation.load(Ordering::Acquire)
    }

    pub fn view(&self) -> Arc<NamespaceView> {
        self.view.lock().clone()
    }

    /// Replaces the namespace view and bumps the generation so queues refetch it.
    pub fn publish_view(&self, view: NamespaceView) {
        *self.view.lock() = Arc::new(view);
        self.view_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records changed namespaces and raises a namespace-attribute notice if enabled.
    pub fn namespaces_changed(&self, nsids: &[u32]) {
        let notify = {
            let mut st = self.state.lock();
            for n in nsids {
                if !st.changed_ns.contains(n) && st.changed_ns.len() <= CHANGED_NS_MAX {
                    st.changed_ns.push(*n);
                }
            }
            if st.aec & AEC_NS_ATTRIBUTE != 0 && !st.ns_notice_masked {
                st.ns_notice_masked = true;
                st.pending_events.push_back(AEN_NS_ATTRIBUTE_CHANGED);
                st.notifier.clone()
            } else {
                None
            }
        };
        if let Some(n) = notify {
            n();
        }
    }

    /// Raises a discovery-log-changed notice if enabled.
    pub fn discovery_changed(&self) {
        let notify = {
            let mut st = self.state.lock();
            if st.aec & AEC_DISCOVERY != 0 && !st.discovery_notice_masked {
                st.discovery_notice_masked = true;
                st.pending_events.push_back(AEN_DISCOVERY_CHANGED);
                st.notifier.clone()
            } else {
                None
            }
        };
        if let Some(n) = notify {
            n();
        }
    }

    /// Raises an ANA change notice if enabled.
    pub fn ana_changed(&self) {
        let notify = {
            let mut st = self.state.lock();
            if st.aec & AEC_ANA_CHANGE != 0 && !st.ana_notice_masked {
                st.ana_notice_masked = true;
                st.pending_events.push_back(AEN_ANA_CHANGED);
                st.notifier.clone()
            } else {
                None
            }
        };
        if let Some(n) = notify {
            n();
        }
    }

    /// Takes the changed namespace list (reading log 04h) and re-arms the notice.
    pub fn take_changed_namespaces(&self) -> Vec<u32> {
        let mut st = self.state.lock();
        st.ns_notice_masked = false;
        let mut list = std::mem::take(&mut st.changed_ns);
        list.sort_unstable();
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_notice_is_masked_until_log_read() {
        let c = Controller::new(
            1,
            ControllerType::Io,
            HostIdentity {
                nqn: "h".into(),
                addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                id: [0; 16],
            },
            0,
            0,
            NamespaceView::new(),
        );
        c.state.lock().aec = AEC_NS_ATTRIBUTE;
        c.namespaces_changed(&[3]);
        c.namespaces_changed(&[5, 3]);
        assert_eq!(c.state.lock().pending_events.len(), 1);
        assert_eq!(c.take_changed_namespaces(), vec![3, 5]);
        c.namespaces_changed(&[7]);
        assert_eq!(c.state.lock().pending_events.len(), 2);
    }

    #[test]
    fn ana_notice_needs_its_configuration_bit_and_is_masked_until_log_read() {
        let c = Controller::new(
            1,
            ControllerType::Io,
            HostIdentity {
                nqn: "h".into(),
                addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                id: [0; 16],
            },
            0,
            0,
            NamespaceView::new(),
        );
        c.ana_changed();
        assert!(c.state.lock().pending_events.is_empty());
        c.state.lock().aec = AEC_ANA_CHANGE;
        c.ana_changed();
        c.ana_changed();
        assert_eq!(
            c.state
                .lock()
                .pending_events
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![0x000C_0302]
        );
        c.state.lock().ana_notice_masked = false;
        c.ana_changed();
        assert_eq!(c.state.lock().pending_events.len(), 2);
    }

    #[test]
    fn keep_alive_expires_only_when_set() {
        let c = Controller::new(
            1,
            ControllerType::Io,
            HostIdentity {
                nqn: "h".into(),
                addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                id: [0; 16],
            },
            1000,
            0,
            NamespaceView::new(),
        );
        assert!(!c.keep_alive_expired(1000));
        assert!(c.keep_alive_expired(1001));
        c.touch(1001);
        assert!(!c.keep_alive_expired(1500));
        c.set_kato_ms(0);
        assert!(!c.keep_alive_expired(u64::MAX));
    }
}
