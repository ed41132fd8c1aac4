//! Network namespaces for system tests that cut links: a Linux bridge in the
//! root namespace and one namespace per node, each joined to the bridge by a
//! veth pair with its own address on a private /24. The test process stays in
//! the root namespace and reaches every node; services every node must reach
//! (etcd) listen on [`Fabric::service_ip`], a second address of the bridge.
//!
//! A [`Partition`] makes addresses unreachable *from* one node's namespace
//! with `prohibit` routes (locally sent packets fail with EACCES, and TCP
//! connections there stall), and removes them again to heal. Packets towards
//! the node still arrive, but nothing it answers leaves, so no TCP exchange
//! with a cut address completes; the test's own address stays reachable.
//!
//! Everything is made with `ip` (iproute2, needs root) and removed by `Drop`,
//! also when a test fails: declare the [`Fabric`] before the processes that
//! run in it, so they are killed (dropped) first.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Fabrics made by this process so far (names must differ per fabric).
static FABRICS: AtomicU32 = AtomicU32::new(0);
/// First address of a node on the subnet (`.10`, `.11`, ...).
const NODE_HOST_FIRST: u8 = 10;
/// Candidate third octets of `10.77.x.0/24` tried before giving up.
const SUBNET_ATTEMPTS_MAX: u32 = 200;

/// Runs `ip args`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2, needs root): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip args` for cleanup, where a failure (already gone) is fine.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// A bridge and one network namespace per node.
pub struct Fabric {
    subnet: u8,
    bridge: Option<String>,
    namespaces: Vec<String>,
}

impl Fabric {
    /// Makes the bridge and `nodes` namespaces with their addresses.
    pub fn new(nodes: usize) -> Fabric {
        assert!(nodes <= 100, "at most 100 nodes on one /24");
        let tag = format!(
            "{}{}",
            std::process::id(),
            FABRICS.fetch_add(1, Ordering::Relaxed)
        );
        let subnet = free_subnet();
        // Built step by step so Drop removes whatever exists if a step fails.
        let mut fabric = Fabric {
            subnet,
            bridge: None,
            namespaces: Vec::new(),
        };
        let bridge = format!("kb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        fabric.bridge = Some(bridge.clone());
        for addr in [fabric.host_ip(), fabric.service_ip()] {
            ip(&["addr", "add", &format!("{addr}/24"), "dev", &bridge]);
        }
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..nodes {
            let ns = format!("keel-{tag}-{i}");
            ip(&["netns", "add", &ns]);
            fabric.namespaces.push(ns.clone());
            let outside = format!("kv{tag}.{i}");
            let inside = format!("kp{tag}.{i}");
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
            ]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            let node = format!("{}/24", fabric.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &node, "dev", &inside]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        fabric
    }

    /// The test process's address on the bridge (clients connect from it).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// A second address of the bridge for services every node reaches
    /// (etcd); a partition can cut it without cutting [`Fabric::host_ip`].
    pub fn service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 2)
    }

    /// Node `i`'s address inside its namespace.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        let host = NODE_HOST_FIRST + u8::try_from(i).expect("node index");
        Ipv4Addr::new(10, 77, self.subnet, host)
    }

    /// Node `i`'s namespace name.
    pub fn netns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Makes `cut` unreachable from node `i`'s namespace, in that order,
    /// until the returned guard is healed or dropped.
    pub fn partition(&self, i: usize, cut: &[Ipv4Addr]) -> Partition<'_> {
        let mut partition = Partition {
            netns: self.netns(i),
            routes: Vec::new(),
            cut_at: Vec::new(),
        };
        for addr in cut {
            let route = format!("{addr}/32");
            ip(&["-n", partition.netns, "route", "add", "prohibit", &route]);
            partition.routes.push(route);
            partition.cut_at.push((*addr, Instant::now()));
        }
        partition
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it
        // the peer on the bridge.
        for ns in self.namespaces.drain(..) {
            ip_quiet(&["netns", "del", &ns]);
        }
        if let Some(bridge) = self.bridge.take() {
            ip_quiet(&["link", "del", &bridge]);
        }
    }
}

/// Routes that cut one node off; removed by [`Partition::heal`] or on drop.
pub struct Partition<'a> {
    netns: &'a str,
    routes: Vec<String>,
    cut_at: Vec<(Ipv4Addr, Instant)>,
}

impl Partition<'_> {
    /// An instant by which nothing the node sends reaches `addr` any more:
    /// taken right after its route was in place.
    pub fn cut_at(&self, addr: Ipv4Addr) -> Instant {
        self.cut_at
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, at)| *at)
            .expect("an address this partition cut")
    }

    /// Removes the routes: the node reaches everything again.
    pub fn heal(mut self) {
        for route in std::mem::take(&mut self.routes) {
            ip(&["-n", self.netns, "route", "del", "prohibit", &route]);
        }
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        for route in self.routes.drain(..) {
            ip_quiet(&["-n", self.netns, "route", "del", "prohibit", &route]);
        }
    }
}

/// A third octet for `10.77.x.0/24` that no interface of the root namespace
/// uses yet, starting from one derived from the process id (tests of other
/// processes may run fabrics at the same time).
fn free_subnet() -> u8 {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2, needs root): {e}"));
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = std::process::id() % SUBNET_ATTEMPTS_MAX;
    (0..SUBNET_ATTEMPTS_MAX)
        .map(|n| u8::try_from(20 + (start + n) % SUBNET_ATTEMPTS_MAX).expect("below 220"))
        .find(|octet| !used.contains(&format!(" 10.77.{octet}.")))
        .expect("a free 10.77.x.0/24 subnet")
}
