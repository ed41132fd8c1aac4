//! A node of a multi-node Keel cluster, as the Linux multipath host sees it:
//! controller ids from the node's own range, ANA states and the ANA log page,
//! path-related statuses, and a discovery log that lists every node. Every
//! test runs once per reactor backend (`epoll::*`, `uring::*`).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nvmf_target::host::{discover, HostController, HostError, HostOptions};
use nvmf_target::nvme::identify::{nidt, OAES_ANA_CHANGE, OAES_NS_ATTRIBUTE};
use nvmf_target::nvme::log_page::{AddressFamily, AnaLog, DiscoveryEntry};
use nvmf_target::nvme::{feature, io_opcode, log_id, Command, DISCOVERY_NQN};
use nvmf_target::{
    AnaState, BlockSize, CntlidRange, Completion, HostAcl, Lba, LbaRange, MemoryNamespace,
    NamespaceBackend, NamespaceOptions, ReactorKind, Status, SubsystemConfig,
};

use common::{pattern, status_of, Fixture, HOST_A, HOST_B, NQN};

/// A subsystem configuration like the fixture's, with ANA reporting on and
/// controller ids from `first..=last`.
fn node_config(first: u16, last: u16) -> SubsystemConfig {
    let mut config = SubsystemConfig::new(NQN, "KEEL0001");
    config.cntlid_range = CntlidRange::new(first, last).unwrap();
    config.ana_reporting = true;
    config
}

/// A cluster node: the fixture with ANA reporting on.
fn node(kind: ReactorKind) -> Fixture {
    Fixture::serving(kind, node_config(1, 100), |_| {})
}

/// DW0 of an ANA change notice: type Notice, info 03h, log page 0Ch.
const AEN_ANA_CHANGED: u32 = 0x000C_0302;
/// Asynchronous Event Configuration as Linux sets it for an ANA-capable
/// controller: namespace attribute and ANA change notices.
const AEC_NS_ATTRIBUTE_AND_ANA: u32 = (1 << 8) | (1 << 11);

/// A namespace that counts every call that would move data or state, so a
/// test can tell that nothing reached it.
struct CountingNamespace {
    inner: Arc<MemoryNamespace>,
    calls: AtomicUsize,
}

impl CountingNamespace {
    fn new(inner: Arc<MemoryNamespace>) -> Arc<CountingNamespace> {
        Arc::new(CountingNamespace {
            inner,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl NamespaceBackend for CountingNamespace {
    describe_as_inner!();
    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        self.count();
        self.inner.read(lba, blocks, done)
    }
    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        self.count();
        self.inner.write(lba, data, done)
    }
    fn flush(&self, done: Completion<()>) {
        self.count();
        self.inner.flush(done)
    }
    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>) {
        self.count();
        self.inner.write_zeroes(lba, blocks, done)
    }
    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>) {
        self.count();
        self.inner.deallocate(ranges, done)
    }
}

fn controller_ids_come_from_the_nodes_range_and_running_out_refuses_connect(kind: ReactorKind) {
    let f = Fixture::serving(kind, node_config(0x2000, 0x2001), |_| {});
    let a = f.connect(HOST_A);
    let b = f.connect(HOST_B);
    assert_eq!((a.cntlid, b.cntlid), (0x2000, 0x2001));
    assert_eq!((a.identity.cntlid, b.identity.cntlid), (0x2000, 0x2001));
    let refused = HostController::connect(f.addr(), f.options(HOST_A));
    assert_eq!(
        status_of(refused.err().expect("a third controller")),
        Status::ConnectControllerBusy
    );
}

fn without_ana_reporting_identify_and_logs_say_nothing_of_ana(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    let id = c.identity.clone();
    assert_eq!(id.cmic, 0x3);
    assert_eq!(id.oaes & OAES_ANA_CHANGE, 0);
    assert_eq!(
        (id.anatt, id.anacap, id.anagrpmax, id.nanagrpid, id.mnan),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(c.identify_namespace(1).unwrap().anagrpid, 0);
    assert_eq!(
        status_of(c.get_log_page(log_id::ANA, 0, 4096, false).unwrap_err()),
        Status::InvalidLogPage
    );
}

fn identify_reports_ana_and_shared_namespaces_when_ana_is_on(kind: ReactorKind) {
    let f = node(kind);
    let ns7 = MemoryNamespace::new(BlockSize::B4096, 256, [0x77; 16]);
    f.subsystem.add_namespace(7, ns7, HostAcl::AnyHost).unwrap();
    let mut c = f.connect(HOST_A);
    let id = c.identity.clone();
    // Multiple ports, multiple controllers, ANA reporting.
    assert_eq!(id.cmic, 0x3 | 0x8);
    assert_eq!(id.oaes, OAES_NS_ATTRIBUTE | OAES_ANA_CHANGE);
    assert_eq!(id.anatt, 10);
    // Every state, and group ids fixed while attached.
    assert_eq!(id.anacap, 0x1F | 0x40);
    assert_eq!((id.anagrpmax, id.nanagrpid), (1024, 1024));
    // Linux refuses ANA when MNAN is 0 or above NN.
    assert!(id.mnan != 0 && id.mnan <= id.nn);
    // One group per namespace: ANAGRPID is the NSID; NMIC says shared.
    for (nsid, nguid) in [(1, [0xA1; 16]), (7, [0x77; 16])] {
        let ns = c.identify_namespace(nsid).unwrap();
        assert_eq!((ns.anagrpid, ns.nmic, ns.nguid), (nsid, 1, nguid));
        assert_eq!(
            c.namespace_descriptors(nsid).unwrap(),
            vec![
                (nidt::NGUID, nguid.to_vec()),
                (nidt::UUID, nguid.to_vec()),
                (nidt::CSI, vec![0])
            ]
        );
        let independent = c.identify(0x08, nsid).unwrap();
        assert_eq!(independent[1], 1);
        assert_eq!(&independent[4..8], &nsid.to_le_bytes());
    }
}

fn ana_log_lists_one_group_per_namespace_the_host_may_see(kind: ReactorKind) {
    let f = node(kind);
    let ns2 = MemoryNamespace::new(BlockSize::B512, 64, [0xB2; 16]);
    let ns3 = MemoryNamespace::new(BlockSize::B512, 64, [0xC3; 16]);
    f.subsystem
        .add_namespace(
            2,
            ns2,
            NamespaceOptions::new(HostAcl::hosts([HOST_A])).with_ana_state(AnaState::Inaccessible),
        )
        .unwrap();
    f.subsystem
        .add_namespace(
            3,
            ns3,
            NamespaceOptions::new(HostAcl::hosts([HOST_B])).with_ana_state(AnaState::NonOptimized),
        )
        .unwrap();
    assert_eq!(f.subsystem.ana_state(2), Some(AnaState::Inaccessible));
    let mut a = f.connect(HOST_A);
    let log = a.ana_log(false).unwrap();
    let groups: Vec<(u32, AnaState, Vec<u32>)> = log
        .groups
        .iter()
        .map(|g| (g.anagrpid, g.state, g.nsids.clone()))
        .collect();
    assert_eq!(
        groups,
        vec![
            (1, AnaState::Optimized, vec![1]),
            (2, AnaState::Inaccessible, vec![2]),
        ]
    );
    let mut b = f.connect(HOST_B);
    let states: Vec<(u32, AnaState)> = b
        .ana_log(false)
        .unwrap()
        .groups
        .iter()
        .map(|g| (g.anagrpid, g.state))
        .collect();
    assert_eq!(
        states,
        vec![(1, AnaState::Optimized), (3, AnaState::NonOptimized)]
    );
    // Return Groups Only: the same groups without NSID lists.
    let rgo = a.ana_log(true).unwrap();
    assert_eq!(rgo.change_count, log.change_count);
    assert_eq!(
        rgo.groups.iter().map(|g| g.anagrpid).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(rgo.groups.iter().all(|g| g.nsids.is_empty()));
    // Partial reads are windows on the same page.
    let whole = a.get_log_page(log_id::ANA, 0, 128, true).unwrap();
    let second = a.get_log_page(log_id::ANA, 52, 36, true).unwrap();
    assert_eq!(&second[..], &whole[52..88]);
    assert_eq!(AnaLog::decode(&whole).unwrap(), log);
}

fn an_ana_state_change_raises_a_notice_and_the_log_shows_it(kind: ReactorKind) {
    let f = node(kind);
    let mut c = f.connect(HOST_A);
    // Set Features remembers the ANA change bit, as Linux sets it.
    c.set_features(feature::ASYNC_EVENT_CONFIG, AEC_NS_ATTRIBUTE_AND_ANA)
        .unwrap();
    assert_eq!(
        c.get_features(feature::ASYNC_EVENT_CONFIG).unwrap(),
        AEC_NS_ATTRIBUTE_AND_ANA
    );
    let before = c.ana_log(false).unwrap();
    let aer = c.submit_aer().unwrap();
    f.subsystem
        .set_ana_state(1, AnaState::Inaccessible)
        .unwrap();
    let event = c.admin.wait(aer).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_ANA_CHANGED);
    let after = c.ana_log(false).unwrap();
    assert!(after.change_count > before.change_count);
    assert_eq!(after.groups[0].state, AnaState::Inaccessible);
    assert_eq!(after.groups[0].change_count, after.change_count);
    // Reading the log re-armed the notice: the next change raises another.
    let aer = c.submit_aer().unwrap();
    f.subsystem.set_ana_state(1, AnaState::Optimized).unwrap();
    let event = c.admin.wait(aer).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_ANA_CHANGED);
    assert_eq!(
        c.ana_log(false).unwrap().groups[0].state,
        AnaState::Optimized
    );
    assert_eq!(
        f.subsystem.set_ana_state(9, AnaState::Optimized),
        Err(nvmf_target::NamespaceChangeError::NotFound(9))
    );
}

/// Every I/O command on `nsid`, each expected to fail as `status` on this path.
fn every_io_command_fails_as(q: &mut nvmf_target::host::IoQueue, nsid: u32, status: Status) {
    let path_error = |r: Result<(), HostError>| match r {
        Err(e @ HostError::PathUnavailable { .. }) => {
            assert!(e.is_path_unavailable());
            e.status()
        }
        other => panic!("expected a path related status, got {other:?}"),
    };
    assert_eq!(
        path_error(q.read(nsid, Lba(0), 1, 4096).map(drop)),
        Some(status)
    );
    // In-capsule write, then one long enough to need an R2T.
    assert_eq!(
        path_error(q.write(nsid, Lba(0), pattern(4096, 1), 4096)),
        Some(status)
    );
    assert_eq!(
        path_error(q.write(nsid, Lba(0), pattern(16 * 4096, 2), 4096)),
        Some(status)
    );
    assert_eq!(path_error(q.flush(nsid)), Some(status));
    assert_eq!(path_error(q.write_zeroes(nsid, Lba(0), 8)), Some(status));
    assert_eq!(
        path_error(q.deallocate(
            nsid,
            &[LbaRange {
                start: Lba(0),
                blocks: 8
            }]
        )),
        Some(status)
    );
}

fn io_on_a_namespace_this_path_cannot_serve_fails_over_and_never_reaches_the_backend(
    kind: ReactorKind,
) {
    let f = node(kind);
    let volume = CountingNamespace::new(MemoryNamespace::new(BlockSize::B4096, 256, [0x55; 16]));
    f.subsystem
        .add_namespace(
            5,
            volume.clone(),
            NamespaceOptions::new(HostAcl::AnyHost).with_ana_state(AnaState::Inaccessible),
        )
        .unwrap();
    let (mut c, mut q) = f.connect_with_io_queue(HOST_A);
    for (state, status) in [
        (AnaState::Inaccessible, Status::AnaInaccessible),
        (AnaState::PersistentLoss, Status::AnaPersistentLoss),
        (AnaState::Change, Status::AnaTransition),
    ] {
        f.subsystem.set_ana_state(5, state).unwrap();
        every_io_command_fails_as(&mut q, 5, status);
        // Admin commands keep working on this path.
        assert_eq!(c.identify_namespace(5).unwrap().nguid, [0x55; 16]);
        assert_eq!(c.ana_log(false).unwrap().groups[1].state, state);
    }
    assert_eq!(volume.calls(), 0, "a command reached the backend");
    // The statuses are path related (SCT 3) and leave DNR clear: Linux
    // fails a command with DNR set without trying another path.
    let mut flush = Command::new(io_opcode::FLUSH, 0);
    flush.set_nsid(5);
    let r = q.queue.execute(flush, None, 0).unwrap();
    assert_eq!(r.status(), Ok(Status::AnaTransition));
    assert_eq!(r.completion.status_field & 0x4000, 0, "DNR set");
    // Back to optimized: I/O runs again.
    f.subsystem.set_ana_state(5, AnaState::Optimized).unwrap();
    q.write(5, Lba(3), pattern(4096, 7), 4096).unwrap();
    assert_eq!(
        q.read(5, Lba(3), 1, 4096).unwrap(),
        pattern(4096, 7).to_vec()
    );
    assert_eq!(volume.calls(), 2);
    // Non-optimized still serves I/O.
    f.subsystem
        .set_ana_state(5, AnaState::NonOptimized)
        .unwrap();
    q.flush(5).unwrap();
    // Another namespace on the same queue was never affected.
    q.read(1, Lba(0), 1, 512).unwrap();
}

/// DW0 of a discovery-log-change notice: type Notice, info F0h, log page 70h.
const AEN_DISCOVERY_LOG_CHANGED: u32 = 0x0070_F002;

fn discovery_lists_the_other_nodes_portals_and_announces_changes(kind: ReactorKind) {
    let f = node(kind);
    f.subsystem
        .set_namespace_acl(1, HostAcl::hosts([HOST_A]))
        .unwrap();
    let disc = f.target.discovery_addrs()[0];
    let mut o = HostOptions::new(HOST_A, DISCOVERY_NQN);
    o.kato_ms = 5000;
    o.timeout = Duration::from_secs(30);
    let mut c = HostController::connect(disc, o).unwrap();
    c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 31)
        .unwrap();
    let own = c.discovery_log().unwrap();
    assert_eq!(own.len(), 1);

    let aer = c.submit_aer().unwrap();
    let peers: Vec<SocketAddr> = vec![
        "10.0.0.2:4420".parse().unwrap(),
        "[fd00::3]:4421".parse().unwrap(),
    ];
    f.subsystem.set_peer_portals(peers);
    let event = c.admin.wait(aer).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_DISCOVERY_LOG_CHANGED);
    let entries = c.discovery_log().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0], own[0]);
    let peer = |i: usize| {
        let e: &DiscoveryEntry = &entries[i];
        (e.adrfam, e.traddr.clone(), e.trsvcid.clone(), e.portid)
    };
    assert_eq!(
        peer(1),
        (
            AddressFamily::Ipv4,
            "10.0.0.2".to_owned(),
            "4420".to_owned(),
            2
        )
    );
    assert_eq!(
        peer(2),
        (
            AddressFamily::Ipv6,
            "fd00::3".to_owned(),
            "4421".to_owned(),
            3
        )
    );
    for e in &entries[1..] {
        // Every other field as for this node's own record.
        assert_eq!(
            (e.subtype, e.treq, e.cntlid, e.asqsz, e.subnqn.as_str()),
            (
                own[0].subtype,
                own[0].treq,
                own[0].cntlid,
                own[0].asqsz,
                NQN
            )
        );
    }
    // The peers' records follow the same visibility rule as the node's own.
    assert!(discover(disc, HOST_B).unwrap().is_empty());
    // An empty list takes them away again.
    let aer = c.submit_aer().unwrap();
    f.subsystem.set_peer_portals(Vec::new());
    let event = c.admin.wait(aer).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_DISCOVERY_LOG_CHANGED);
    assert_eq!(c.discovery_log().unwrap(), own);
}

include!("../src/reactors/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    controller_ids_come_from_the_nodes_range_and_running_out_refuses_connect,
    without_ana_reporting_identify_and_logs_say_nothing_of_ana,
    identify_reports_ana_and_shared_namespaces_when_ana_is_on,
    ana_log_lists_one_group_per_namespace_the_host_may_see,
    an_ana_state_change_raises_a_notice_and_the_log_shows_it,
    io_on_a_namespace_this_path_cannot_serve_fails_over_and_never_reaches_the_backend,
    discovery_lists_the_other_nodes_portals_and_announces_changes,
);
