//! What the protocol test binaries share: a target serving one RAM namespace
//! on loopback, host NQNs, data patterns and waits.
// Each test binary uses its own part of this module.
#![allow(dead_code, unused_macros)]

/// The `NamespaceBackend` methods that describe a namespace, answered by the
/// wrapper's `inner` namespace (for test wrappers that change how I/O runs).
macro_rules! describe_as_inner {
    () => {
        fn block_size(&self) -> nvmf_target::BlockSize {
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
    };
}

/// Flush, Write Zeroes and Deallocate passed straight to the wrapper's
/// `inner` namespace.
macro_rules! maintain_through_inner {
    () => {
        fn flush(&self, done: nvmf_target::Completion<()>) {
            self.inner.flush(done)
        }
        fn write_zeroes(
            &self,
            lba: nvmf_target::Lba,
            blocks: u32,
            done: nvmf_target::Completion<()>,
        ) {
            self.inner.write_zeroes(lba, blocks, done)
        }
        fn deallocate(
            &self,
            ranges: Vec<nvmf_target::LbaRange>,
            done: nvmf_target::Completion<()>,
        ) {
            self.inner.deallocate(ranges, done)
        }
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nvmf_target::connection::Limits;
use nvmf_target::host::{HostController, HostError, HostOptions, IoQueue, Queue};
use nvmf_target::nvme::{Command, SGL_TYPE_TRANSPORT};
use nvmf_target::pdu::{CapsuleCmd, DataPdu, Digests, PduType};
use nvmf_target::{
    BlockSize, HostAcl, Lba, MemoryNamespace, ReactorKind, Status, Subsystem, SubsystemConfig,
    Target, TargetConfig, TargetHandle,
};

/// The test subsystem's NQN.
pub const NQN: &str = "nqn.2024-01.io.keel:protocol-test";
/// A host the tests allow or refuse as each needs.
pub const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000001";
/// A second host, for ACL and isolation checks.
pub const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-0000-0000-000000000002";

/// A running target (two reactors) with namespace 1 (512 B blocks, 4096 of
/// them, any host) in its subsystem.
pub struct Fixture {
    /// The subsystem the target serves.
    pub subsystem: Arc<Subsystem>,
    /// Namespace 1.
    pub ns1: Arc<MemoryNamespace>,
    /// The running target.
    pub target: TargetHandle,
}

impl Fixture {
    /// The fixture with default limits.
    pub fn new(kind: ReactorKind) -> Fixture {
        Self::with_limits(kind, Limits::default())
    }

    /// The fixture with no in-capsule data for I/O: every write waits for an
    /// R2T, so it stays in flight while a test withholds its data.
    pub fn r2t_only(kind: ReactorKind) -> Fixture {
        Self::with_limits(
            kind,
            Limits {
                inline_data_max: 0,
                ..Limits::default()
            },
        )
    }

    /// The fixture with `limits` and a 50 ms reactor tick.
    pub fn with_limits(kind: ReactorKind, limits: Limits) -> Fixture {
        Self::build(kind, limits, Duration::from_millis(50))
    }

    /// The fixture with `limits` and reactors ticking every `tick_interval`.
    pub fn build(kind: ReactorKind, limits: Limits, tick_interval: Duration) -> Fixture {
        Self::configured(kind, |config| {
            config.limits = limits;
            config.tick_interval = tick_interval;
        })
    }

    /// The fixture with the target configuration `adjust` makes of the
    /// default one (default limits, a 50 ms tick, 64 connections).
    pub fn configured(kind: ReactorKind, adjust: impl FnOnce(&mut TargetConfig)) -> Fixture {
        Self::serving(kind, SubsystemConfig::new(NQN, "KEEL0001"), adjust)
    }

    /// The fixture serving a subsystem of identity `subsystem_config` (its
    /// NQN should be [`NQN`]), the target configured as `adjust` makes it.
    pub fn serving(
        kind: ReactorKind,
        subsystem_config: SubsystemConfig,
        adjust: impl FnOnce(&mut TargetConfig),
    ) -> Fixture {
        let subsystem = Subsystem::new(subsystem_config);
        let ns1 = MemoryNamespace::new(BlockSize::B512, 4096, [0xA1; 16]);
        subsystem
            .add_namespace(1, ns1.clone(), HostAcl::AnyHost)
            .unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = TargetConfig {
            listen_addrs: vec![local],
            discovery_addrs: vec![local],
            advertised_addr: None,
            reactors: 2,
            limits: Limits::default(),
            connections_max: 64,
            connections_per_peer_max: 64,
            handshake_timeout: Duration::from_secs(10),
            discovery_keep_alive: Duration::from_secs(120),
            tick_interval: Duration::from_millis(50),
            busy_poll: Duration::ZERO,
            reactor_kind: kind,
            reactor_poller: None,
        };
        adjust(&mut config);
        let target = Target::start(config, subsystem.clone()).unwrap();
        assert_eq!(target.reactor_kind(), kind);
        Fixture {
            subsystem,
            ns1,
            target,
        }
    }

    /// The I/O (and discovery) listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.target.local_addrs()[0]
    }

    /// Connect options for `host` to the test subsystem, with a 30 s
    /// timeout (a bound on hangs, generous for a loaded machine).
    pub fn options(&self, host: &str) -> HostOptions {
        let mut o = HostOptions::new(host, NQN);
        o.timeout = Duration::from_secs(30);
        o
    }

    /// Connects as `host` and opens I/O queue 1 (the controller must be kept
    /// for the queue to live).
    pub fn connect_with_io_queue(&self, host: &str) -> (HostController, IoQueue) {
        let mut c = self.connect(host);
        c.set_queue_count(1).unwrap();
        let q = c.connect_io_queue(1).unwrap();
        (c, q)
    }

    /// Connects an admin queue as `host` and enables the controller.
    pub fn connect(&self, host: &str) -> HostController {
        HostController::connect(self.addr(), self.options(host)).unwrap()
    }
}

/// `len` bytes of a pattern that differs with `seed` and along the buffer.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// Waits up to 30 s for `f` to hold, failing the test with `what` otherwise:
/// the bound only turns a hang into a failure, so it is generous.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// The NVMe status a failed command returned (fails the test for any other error).
pub fn status_of(e: HostError) -> Status {
    e.status()
        .unwrap_or_else(|| panic!("expected an NVMe status, got {e:?}"))
}

/// A Read or Write of `blocks` 512-byte blocks (namespace 1's size) at `lba`
/// with command id `cid`, its data moved by the transport (C2HData, or R2T
/// and H2CData): for tests that send raw PDUs.
pub fn rw_command(opcode: u8, cid: u16, nsid: u32, lba: Lba, blocks: u32) -> Command {
    let mut cmd = Command::new(opcode, cid);
    cmd.set_nsid(nsid);
    cmd.set_cdw(10, lba.0 as u32);
    cmd.set_cdw(11, (lba.0 >> 32) as u32);
    cmd.set_cdw(12, blocks - 1);
    cmd.set_sgl(0, blocks * 512, SGL_TYPE_TRANSPORT);
    cmd
}

/// Sends `cmd` as a CapsuleCmd without in-capsule data, bypassing the
/// queue's own command tracking: for tests that read the answers raw.
pub fn send_command(queue: &mut Queue, cmd: Command, digests: Digests) {
    let mut bytes = Vec::new();
    CapsuleCmd {
        sqe: cmd.0,
        data: &[],
    }
    .encode(digests, &mut bytes);
    queue.send_raw(&bytes).unwrap();
}

/// The bytes of an H2CData PDU for command `cid`, answering the R2T `ttag`.
pub fn encode_h2c(
    cid: u16,
    ttag: u16,
    offset: u32,
    last: bool,
    data: &[u8],
    d: Digests,
) -> Vec<u8> {
    let mut out = Vec::new();
    DataPdu {
        command_id: cid,
        ttag,
        offset,
        last,
        success: false,
        data,
    }
    .encode(PduType::H2CData, d, 0, &mut out);
    out
}
