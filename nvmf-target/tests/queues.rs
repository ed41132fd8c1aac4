//! Queue rules, tested against the real target over loopback with this crate's
//! host side: Disconnect, SQ size, which host may add I/O queues, command ids,
//! out-of-order completion and I/O queues spread over the reactors. Every test
//! runs once per reactor backend (`epoll::*`, `uring::*`).

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::ThreadId;

use bytes::Bytes;
use nvmf_target::host::{HostError, OwnedPdu};
use nvmf_target::nvme::fabrics::{fctype, CONNECT_CMD_SQSIZE_OFFSET, CONNECT_DATA_HOSTNQN_OFFSET};
use nvmf_target::nvme::{admin_opcode, io_opcode, Command};
use nvmf_target::pdu::{Digests, FatalErrorStatus};
use nvmf_target::{
    BlockSize, Completion, HostAcl, Lba, MemoryNamespace, NamespaceBackend, ReactorKind, Status,
};
use parking_lot::Mutex;

use common::{pattern, rw_command, send_command, wait_until, Fixture, HOST_A, HOST_B};

/// DW0 of a Connect refused for a field of its data (IATTR 1) at `offset`.
fn invalid_data_dw0(offset: u16) -> u32 {
    0x1_0000 | u32::from(offset)
}

fn connect_error(err: HostError) -> (Status, u32) {
    match err {
        HostError::Status { status_field, dw0 } => (Status::from_field(status_field).unwrap(), dw0),
        other => panic!("expected a Connect status, got {other:?}"),
    }
}

fn disconnect_deletes_an_io_queue_and_is_refused_on_the_admin_queue(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.set_queue_count(2).unwrap();
    let mut q1 = c.connect_io_queue(1).unwrap();
    let mut q2 = c.connect_io_queue(2).unwrap();
    q1.write(1, Lba(0), pattern(512, 1), 512).unwrap();
    let connections = f.target.stats().connections;
    q1.disconnect().unwrap();
    wait_until("the disconnected queue's connection to close", || {
        f.target.stats().connections == connections - 1
    });
    // The controller, its admin queue and its other I/O queue carry on, and
    // the deleted queue's id may be connected again.
    assert_eq!(f.subsystem.controller_count(), 1);
    c.keep_alive().unwrap();
    assert_eq!(
        q2.read(1, Lba(0), 1, 512).unwrap(),
        pattern(512, 1).to_vec()
    );
    let mut again = c.connect_io_queue(1).unwrap();
    again.write(1, Lba(1), pattern(512, 2), 512).unwrap();
    assert_eq!(
        q2.read(1, Lba(1), 1, 512).unwrap(),
        pattern(512, 2).to_vec()
    );
    // The admin queue is not disconnected by command: Invalid Queue Type,
    // and the controller stays.
    let mut disconnect_admin = Command::new(admin_opcode::FABRICS, 0);
    disconnect_admin.0[4] = fctype::DISCONNECT;
    let refused = c.admin.execute(disconnect_admin, None, 0).unwrap();
    assert_eq!(refused.status(), Ok(Status::DisconnectInvalidQueueType));
    c.keep_alive().unwrap();
    assert_eq!(f.subsystem.controller_count(), 1);
}

fn connect_refuses_more_entries_than_mqes_and_sqsize_bounds_commands_in_flight(kind: ReactorKind) {
    // Writes without in-capsule data wait for their data (R2T), so the
    // commands stay in flight for as long as the test withholds it.
    let f = Fixture::r2t_only(kind);
    let mut c = f.connect(HOST_A);
    c.set_queue_count(2).unwrap();
    // CAP.MQES is 127 (128 entries): a 129-entry queue is refused.
    c.options.queue_size = 129;
    let refused = connect_error(c.connect_io_queue(1).err().unwrap());
    assert_eq!(
        refused,
        (
            Status::ConnectInvalidParameters,
            CONNECT_CMD_SQSIZE_OFFSET.into()
        )
    );
    c.options.queue_size = 4;
    let mut q = c.connect_io_queue(1).unwrap();
    // SQSIZE 3 (four entries): four writes are admitted, each gets its R2T...
    for cid in 0..4u16 {
        let write = rw_command(io_opcode::WRITE, cid, 1, Lba(u64::from(cid)), 1);
        send_command(&mut q.queue, write, Digests::default());
    }
    for cid in 0..4u16 {
        match q.queue.next_raw_pdu().unwrap() {
            OwnedPdu::R2T { command_id, .. } => assert_eq!(command_id, cid),
            other => panic!("expected an R2T, got {other:?}"),
        }
    }
    // ...and a fifth overruns the queue.
    let fifth = rw_command(io_opcode::READ, 4, 1, Lba(0), 1);
    send_command(&mut q.queue, fifth, Digests::default());
    assert_eq!(
        q.queue.next_raw_pdu().unwrap(),
        OwnedPdu::Term {
            fes: FatalErrorStatus::PduSequenceError as u16,
            fei: 0
        }
    );
    // The controller survives its queue's end.
    c.keep_alive().unwrap();
}

fn io_queue_connect_must_come_from_the_admin_queues_host(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.set_queue_count(1).unwrap();
    c.options.host_nqn = HOST_B.into();
    assert_eq!(
        connect_error(c.connect_io_queue(1).err().unwrap()),
        (
            Status::ConnectInvalidParameters,
            invalid_data_dw0(CONNECT_DATA_HOSTNQN_OFFSET)
        )
    );
    c.options.host_nqn = HOST_A.into();
    c.options.host_id = [0x22; 16];
    assert_eq!(
        connect_error(c.connect_io_queue(1).err().unwrap()),
        (Status::ConnectInvalidParameters, invalid_data_dw0(0))
    );
    c.options.host_id = [0x11; 16];
    let mut q = c.connect_io_queue(1).unwrap();
    q.write(1, Lba(0), pattern(512, 3), 512).unwrap();
}

fn a_command_id_still_in_flight_terminates_the_connection(kind: ReactorKind) {
    let f = Fixture::r2t_only(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    let write = rw_command(io_opcode::WRITE, 7, 1, Lba(0), 1);
    send_command(&mut q.queue, write, Digests::default());
    assert!(matches!(
        q.queue.next_raw_pdu().unwrap(),
        OwnedPdu::R2T { command_id: 7, .. }
    ));
    let reused = rw_command(io_opcode::READ, 7, 1, Lba(0), 1);
    send_command(&mut q.queue, reused, Digests::default());
    assert_eq!(
        q.queue.next_raw_pdu().unwrap(),
        OwnedPdu::Term {
            fes: FatalErrorStatus::InvalidHeaderField as u16,
            fei: 10
        }
    );
    // Nothing was written.
    assert_eq!(f.ns1.snapshot_blocks(Lba(0), 1).unwrap(), vec![0; 512]);
}

/// A RAM namespace that parks reads of LBA 0 until the test releases them.
struct ParkingNamespace {
    inner: Arc<MemoryNamespace>,
    parked: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl ParkingNamespace {
    fn release(&self) -> usize {
        let parked = std::mem::take(&mut *self.parked.lock());
        let n = parked.len();
        for read in parked {
            read();
        }
        n
    }
}

/// A RAM namespace that notes, for each write, the thread that started it,
/// keyed by the write's 256-block region.
struct ThreadNotingNamespace {
    inner: Arc<MemoryNamespace>,
    starters: Mutex<HashMap<u64, HashSet<ThreadId>>>,
}

impl NamespaceBackend for ParkingNamespace {
    describe_as_inner!();
    maintain_through_inner!();
    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        if lba.0 == 0 {
            let inner = self.inner.clone();
            self.parked
                .lock()
                .push(Box::new(move || inner.read(lba, blocks, done)));
        } else {
            self.inner.read(lba, blocks, done)
        }
    }
    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        self.inner.write(lba, data, done)
    }
}

impl NamespaceBackend for ThreadNotingNamespace {
    describe_as_inner!();
    maintain_through_inner!();
    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        self.inner.read(lba, blocks, done)
    }
    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        self.starters
            .lock()
            .entry(lba.0 / 256)
            .or_default()
            .insert(std::thread::current().id());
        self.inner.write(lba, data, done)
    }
}

fn a_held_command_completes_after_the_commands_behind_it(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let ns = Arc::new(ParkingNamespace {
        inner: MemoryNamespace::new(BlockSize::B4096, 16, [0xC3; 16]),
        parked: Mutex::new(Vec::new()),
    });
    f.subsystem
        .add_namespace(2, ns.clone(), HostAcl::AnyHost)
        .unwrap();
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    q.write(2, Lba(0), pattern(4096, 10), 4096).unwrap();
    q.write(2, Lba(1), pattern(4096, 11), 4096).unwrap();
    let first = q.submit_read(2, Lba(0), 1, 4096).unwrap();
    let second = q.submit_read(2, Lba(1), 1, 4096).unwrap();
    let (cid, response) = q.queue.wait_any().unwrap();
    assert_eq!(
        cid, second,
        "the later read answers while the first is held"
    );
    assert_eq!(response.success().unwrap().data, pattern(4096, 11).to_vec());
    assert_eq!(ns.release(), 1);
    let held = q.queue.wait(first).unwrap().success().unwrap();
    assert_eq!(held.data, pattern(4096, 10).to_vec());
}

fn io_queues_of_one_controller_spread_over_the_reactors_and_run_at_once(kind: ReactorKind) {
    const QUEUES: u16 = 4;
    let f = Fixture::new(kind);
    let ns = Arc::new(ThreadNotingNamespace {
        inner: MemoryNamespace::new(BlockSize::B4096, 256 * u64::from(QUEUES), [0xE5; 16]),
        starters: Mutex::new(HashMap::new()),
    });
    f.subsystem
        .add_namespace(3, ns.clone(), HostAcl::AnyHost)
        .unwrap();
    let mut c = f.connect(HOST_A);
    assert!(c.set_queue_count(QUEUES).unwrap() >= QUEUES);
    let queues: Vec<_> = (1..=QUEUES)
        .map(|qid| c.connect_io_queue(qid).unwrap())
        .collect();
    // Each queue keeps eight commands in flight on its own host thread, in
    // its own 256-block region, and reads back everything it wrote.
    let workers: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            std::thread::spawn(move || {
                let base = 256 * i as u64;
                for round in 0..16u64 {
                    let cids: Vec<u16> = (0..8u64)
                        .map(|b| {
                            let data = pattern(4096, (round * 8 + b) as u8);
                            q.submit_write(3, Lba(base + round * 8 + b), data, 4096)
                                .unwrap()
                        })
                        .collect();
                    for cid in cids {
                        q.queue.wait(cid).unwrap().success().unwrap();
                    }
                }
                for block in 0..128u64 {
                    let got = q.read(3, Lba(base + block), 1, 4096).unwrap();
                    assert_eq!(
                        got,
                        pattern(4096, block as u8).to_vec(),
                        "queue {i} block {block}"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let starters = ns.starters.lock();
    assert_eq!(starters.len(), usize::from(QUEUES));
    for (region, threads) in starters.iter() {
        assert_eq!(
            threads.len(),
            1,
            "queue {region}'s writes all start on one reactor"
        );
    }
    let reactors: HashSet<ThreadId> = starters.values().flatten().copied().collect();
    assert_eq!(reactors.len(), 2, "the four queues use both reactors");
}

include!("../src/reactors/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    disconnect_deletes_an_io_queue_and_is_refused_on_the_admin_queue,
    connect_refuses_more_entries_than_mqes_and_sqsize_bounds_commands_in_flight,
    io_queue_connect_must_come_from_the_admin_queues_host,
    a_command_id_still_in_flight_terminates_the_connection,
    a_held_command_completes_after_the_commands_behind_it,
    io_queues_of_one_controller_spread_over_the_reactors_and_run_at_once,
);
