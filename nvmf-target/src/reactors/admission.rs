//! Which accepted connections the target keeps: a bounded table of open
//! connections with a cap per peer address, in which a connection that has not
//! finished its handshake (ICReq, then a successful Fabrics Connect) gives way
//! to a new one when the table is full.
//!
//! Why: an idle TCP connection costs its peer nothing. Without a cap per
//! address, one peer fills the table; without eviction, peers that never
//! speak lock every real host out until they leave. A real host finishes its
//! handshake within a few round trips of connecting, so the oldest unfinished
//! connection is the one least likely to be a host at work; the handshake
//! timeout (`TargetConfig::handshake_timeout`) closes the rest.
//!
//! The table is shared by the acceptor (admission) and the reactors (handshake
//! done, close) behind one mutex, taken once per accept, per handshake and per
//! close: never on the I/O path.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use parking_lot::Mutex;

/// Identifies an admitted connection; its reactor uses it as the connection's
/// token. Ids increase with admission, so a smaller id is an older connection.
pub(super) type ConnId = usize;

/// What to do with a connection just accepted from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Keep it as connection `id`, owned by the reactor the acceptor chose.
    Admit {
        /// The new connection's id.
        id: ConnId,
    },
    /// Keep it as connection `id` in the place of `evicted`, the oldest
    /// connection still in its handshake, which is already out of the table:
    /// its reactor must close it.
    AdmitEvicting {
        /// The new connection's id.
        id: ConnId,
        /// The connection to close.
        evicted: ConnId,
        /// The reactor that owns `evicted`.
        evicted_reactor: usize,
    },
    /// Close it: its peer already has `connections_per_peer_max` connections.
    RefusePeerFull,
    /// Close it: the table is full and every connection in it finished its
    /// handshake.
    RefuseTableFull,
}

/// One open connection.
#[derive(Debug, Clone, Copy)]
struct Entry {
    peer: IpAddr,
    reactor: usize,
}

/// The open connections and what admission needs to know about them.
#[derive(Debug)]
struct Table {
    /// Next id to hand out; ids start at 1 (0 is never a connection's token).
    next_id: ConnId,
    open: HashMap<ConnId, Entry>,
    per_peer: HashMap<IpAddr, usize>,
    /// Ids of open connections still in their handshake, oldest first.
    // INVARIANT: a subset of the keys of `open`.
    in_handshake: BTreeSet<ConnId>,
}

/// The admission table of one target.
#[derive(Debug)]
pub(super) struct Admission {
    connections_max: usize,
    connections_per_peer_max: usize,
    table: Mutex<Table>,
}

/// The address a peer is counted under: an IPv4 peer reaching an IPv6
/// listener (`::ffff:a.b.c.d`) is the same peer as over IPv4.
fn peer_key(peer: IpAddr) -> IpAddr {
    peer.to_canonical()
}

impl Admission {
    /// An empty table admitting `connections_max` connections in all, at most
    /// `connections_per_peer_max` of them from one address.
    pub fn new(connections_max: usize, connections_per_peer_max: usize) -> Admission {
        Admission {
            connections_max,
            connections_per_peer_max,
            table: Mutex::new(Table {
                next_id: 1,
                open: HashMap::new(),
                per_peer: HashMap::new(),
                in_handshake: BTreeSet::new(),
            }),
        }
    }

    /// Decides on a connection accepted from `peer`, which `reactor` would own.
    pub fn admit(&self, peer: IpAddr, reactor: usize) -> Decision {
        let peer = peer_key(peer);
        let mut t = self.table.lock();
        if t.per_peer.get(&peer).copied().unwrap_or(0) >= self.connections_per_peer_max {
            return Decision::RefusePeerFull;
        }
        let mut evicted = None;
        if t.open.len() >= self.connections_max {
            let Some(oldest) = t.in_handshake.first().copied() else {
                return Decision::RefuseTableFull;
            };
            if let Some(entry) = t.remove(oldest) {
                evicted = Some((oldest, entry.reactor));
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        t.open.insert(id, Entry { peer, reactor });
        *t.per_peer.entry(peer).or_insert(0) += 1;
        t.in_handshake.insert(id);
        debug_assert!(t.open.len() <= self.connections_max.max(1));
        match evicted {
            Some((evicted, evicted_reactor)) => Decision::AdmitEvicting {
                id,
                evicted,
                evicted_reactor,
            },
            None => Decision::Admit { id },
        }
    }

    /// Notes that connection `id` finished its handshake: it is no longer
    /// evicted to make room.
    pub fn handshake_done(&self, id: ConnId) {
        self.table.lock().in_handshake.remove(&id);
    }

    /// Takes connection `id` out of the table (it closed). Nothing happens if
    /// it was evicted before.
    pub fn release(&self, id: ConnId) {
        self.table.lock().remove(id);
    }

    /// Connections in the table now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.lock().open.len()
    }
}

impl Table {
    fn remove(&mut self, id: ConnId) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        self.in_handshake.remove(&id);
        if let Some(n) = self.per_peer.get_mut(&entry.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn admitted(d: Decision) -> ConnId {
        match d {
            Decision::Admit { id } | Decision::AdmitEvicting { id, .. } => id,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[test]
    fn a_peer_at_its_cap_is_refused_while_others_get_in() {
        let a = Admission::new(10, 2);
        admitted(a.admit(ip(1), 0));
        let second = admitted(a.admit(ip(1), 1));
        assert_eq!(a.admit(ip(1), 0), Decision::RefusePeerFull);
        admitted(a.admit(ip(2), 0));
        // An IPv4 peer counts the same through an IPv6 listener.
        let mapped = IpAddr::from(std::net::Ipv4Addr::from([10, 0, 0, 1]).to_ipv6_mapped());
        assert_eq!(a.admit(mapped, 0), Decision::RefusePeerFull);
        a.release(second);
        admitted(a.admit(ip(1), 0));
    }

    #[test]
    fn a_full_table_evicts_the_oldest_connection_in_handshake() {
        let a = Admission::new(3, 10);
        let first = admitted(a.admit(ip(1), 0));
        let second = admitted(a.admit(ip(2), 1));
        let third = admitted(a.admit(ip(3), 0));
        a.handshake_done(first);
        assert_eq!(
            a.admit(ip(4), 1),
            Decision::AdmitEvicting {
                id: third + 1,
                evicted: second,
                evicted_reactor: 1,
            }
        );
        assert_eq!(a.len(), 3);
        // The evicted connection's own close later changes nothing.
        a.release(second);
        assert_eq!(a.len(), 3);
        // Its peer's count went with it.
        admitted(a.admit(ip(2), 0));
    }

    #[test]
    fn a_full_table_of_finished_handshakes_refuses() {
        let a = Admission::new(2, 10);
        for peer in 1..=2 {
            let id = admitted(a.admit(ip(peer), 0));
            a.handshake_done(id);
        }
        assert_eq!(a.admit(ip(3), 0), Decision::RefuseTableFull);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn released_connections_free_their_places() {
        let a = Admission::new(1, 1);
        let id = admitted(a.admit(ip(1), 0));
        a.handshake_done(id);
        assert_eq!(a.admit(ip(1), 0), Decision::RefusePeerFull);
        a.release(id);
        a.release(id);
        assert_eq!(a.len(), 0);
        admitted(a.admit(ip(1), 0));
    }
}
