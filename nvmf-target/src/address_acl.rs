//! Which host addresses may see a namespace: the IP half of a namespace's
//! access list (the host NQN half is [`crate::HostAcl`]).
//!
//! A host is judged by the source address of the connection it made its
//! controller with. IPv4 peers reached over an IPv6 socket
//! (`::ffff:a.b.c.d`) are judged as the IPv4 address they are.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not an IP network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or an address/prefix-length network")]
pub struct IpNetworkParseError(pub String);

impl IpNetwork {
    /// The network of `addr`'s first `prefix` bits; `None` when `prefix` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNetwork> {
        let addr = addr.to_canonical();
        (prefix <= max_prefix(addr)).then_some(IpNetwork { addr, prefix })
    }

    /// Whether `ip` lies in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_bits_equal(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_bits_equal(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether the top `prefix` of `width` bits of `a` and `b` agree.
fn prefix_bits_equal(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

impl FromStr for IpNetwork {
    type Err = IpNetworkParseError;

    fn from_str(text: &str) -> Result<IpNetwork, IpNetworkParseError> {
        let bad = || IpNetworkParseError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
                let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = text.trim().parse().map_err(|_| bad())?;
                (addr, max_prefix(addr.to_canonical()))
            }
        };
        IpNetwork::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which host addresses may see something.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AddressAcl {
    /// Every address.
    #[default]
    AnyAddress,
    /// Only addresses in these networks (none: no address).
    Networks(Vec<IpNetwork>),
}

impl AddressAcl {
    /// Whether a host at `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            AddressAcl::AnyAddress => true,
            AddressAcl::Networks(networks) => networks.iter().any(|n| n.contains(ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn networks_contain_exactly_their_prefix() {
        let net: IpNetwork = "10.1.0.0/16".parse().expect("network");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let host: IpNetwork = "127.0.0.2".parse().expect("address");
        assert!(host.contains(ip("127.0.0.2")));
        assert!(!host.contains(ip("127.0.0.1")));
        // An IPv4 peer on an IPv6 socket is its IPv4 address.
        assert!(host.contains(ip("::ffff:127.0.0.2")));
        let all: IpNetwork = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains(ip("192.0.2.1")));
        let v6: IpNetwork = "fd00::/8".parse().expect("v6 network");
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
    }

    #[test]
    fn bad_networks_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_acl_admits_any_listed_network_and_nothing_when_empty() {
        let acl = AddressAcl::Networks(vec![
            "127.0.0.2".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ]);
        assert!(acl.allows(ip("127.0.0.2")));
        assert!(acl.allows(ip("10.9.9.9")));
        assert!(!acl.allows(ip("127.0.0.1")));
        assert!(!AddressAcl::Networks(Vec::new()).allows(ip("127.0.0.1")));
        assert!(AddressAcl::AnyAddress.allows(ip("127.0.0.1")));
    }
}
