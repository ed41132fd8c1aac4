//! The management API's [`VolumeAccess`] and [`VolumeRateLimits`] in the
//! target's terms: the host NQN half as an [`nvmf_target::HostAcl`], the
//! address half as an [`nvmf_target::AddressAcl`], the limits as
//! [`nvmf_target::RateLimits`].

use mgmt_api::control::{AddressAcl, HostAcl, VolumeAccess, VolumeRateLimits};
use mgmt_api::ControlError;
use nvmf_target::IpNetwork;

/// Who may see a namespace, as the target enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAccess {
    /// By host NQN.
    pub hosts: nvmf_target::HostAcl,
    /// By host address.
    pub addresses: nvmf_target::AddressAcl,
}

impl TargetAccess {
    /// No host at all: what a volume gets before its access is set.
    pub fn nobody() -> TargetAccess {
        TargetAccess {
            hosts: nvmf_target::HostAcl::Hosts(Default::default()),
            addresses: nvmf_target::AddressAcl::AnyAddress,
        }
    }
}

/// `limits` as the target's throttle takes them.
pub fn target_rate_limits(limits: &VolumeRateLimits) -> nvmf_target::RateLimits {
    nvmf_target::RateLimits {
        read_iops: limits.read_iops,
        write_iops: limits.write_iops,
        total_iops: limits.total_iops,
        read_bytes_per_second: limits.read_bytes_per_second,
        write_bytes_per_second: limits.write_bytes_per_second,
        total_bytes_per_second: limits.total_bytes_per_second,
    }
}

/// `access` for the target; an address that is not an IP address or
/// network is refused (the API checks them before they get here).
pub fn target_access(access: &VolumeAccess) -> Result<TargetAccess, ControlError> {
    let hosts = match &access.hosts {
        HostAcl::AllowAny => nvmf_target::HostAcl::AnyHost,
        HostAcl::Hosts(hosts) => nvmf_target::HostAcl::hosts(hosts.iter().cloned()),
    };
    let addresses = match &access.addresses {
        AddressAcl::AllowAny => nvmf_target::AddressAcl::AnyAddress,
        AddressAcl::Networks(networks) => address_acl(networks)?,
    };
    Ok(TargetAccess { hosts, addresses })
}

/// The address ACL of IP addresses and networks `networks`.
pub fn address_acl(networks: &[String]) -> Result<nvmf_target::AddressAcl, ControlError> {
    networks
        .iter()
        .map(|n| {
            n.parse::<IpNetwork>()
                .map_err(|err| ControlError::InvalidArgument(err.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(nvmf_target::AddressAcl::Networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_reach_the_target_and_bad_networks_are_refused() {
        let access = VolumeAccess {
            hosts: HostAcl::Hosts(vec!["nqn.a".into()]),
            addresses: AddressAcl::Networks(vec!["127.0.0.2".into(), "10.0.0.0/8".into()]),
        };
        let target = target_access(&access).expect("valid");
        assert!(target.hosts.allows("nqn.a") && !target.hosts.allows("nqn.b"));
        assert!(target.addresses.allows("10.1.2.3".parse().expect("ip")));
        assert!(!target.addresses.allows("127.0.0.1".parse().expect("ip")));
        let bad = VolumeAccess {
            hosts: HostAcl::AllowAny,
            addresses: AddressAcl::Networks(vec!["example.com".into()]),
        };
        assert!(matches!(
            target_access(&bad),
            Err(ControlError::InvalidArgument(_))
        ));
    }
}
