//! A node of a multi-node Keel cluster, as the Linux multipath host sees it:
//! controller ids from the node's own range, ANA states and the ANA log page,
//! path-related statuses, and a discovery log that lists every node. Every
//! test runs once per reactor backend (`epoll::*`, `uring::*`).

#[macro_use]
mod common;

use nvmf_target::{CntlidRange, ReactorKind, Status, SubsystemConfig};

use common::{status_of, Fixture, HOST_A, HOST_B, NQN};

/// A subsystem configuration like the fixture's, with ANA reporting on and
/// controller ids from `first..=last`.
fn node_config(first: u16, last: u16) -> SubsystemConfig {
    let mut config = SubsystemConfig::new(NQN, "KEEL0001");
    config.cntlid_range = CntlidRange::new(first, last).unwrap();
    config
}

fn controller_ids_come_from_the_nodes_range_and_running_out_refuses_connect(kind: ReactorKind) {
    let f = Fixture::serving(kind, node_config(0x2000, 0x2001), |_| {});
    let a = f.connect(HOST_A);
    let b = f.connect(HOST_B);
    assert_eq!((a.cntlid, b.cntlid), (0x2000, 0x2001));
    assert_eq!((a.identity.cntlid, b.identity.cntlid), (0x2000, 0x2001));
    let refused = nvmf_target::host::HostController::connect(f.addr(), f.options(HOST_A));
    assert_eq!(
        status_of(refused.err().expect("a third controller")),
        Status::ConnectControllerBusy
    );
}

include!("../src/target/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    controller_ids_come_from_the_nodes_range_and_running_out_refuses_connect,
);
