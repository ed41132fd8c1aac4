//! Registered initiator hosts (KumoScale's host probe), the names publishing
//! resolves to NQNs.

use uuid::Uuid;

use super::{invalid, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::HostRecord;
use crate::domain::rules;

impl Service {
    /// Registers a host or refreshes its record; one NQN belongs to one host.
    pub fn probe_host(&self, host: HostRecord) -> Result<HostRecord, ServiceError> {
        rules::check_host_acl(std::slice::from_ref(&host.nqn)).map_err(invalid)?;
        if host.nqn == rules::ALLOW_ANY || host.nqn == rules::ALLOW_NONE {
            return Err(invalid(format!("{:?} is not a host NQN", host.nqn)));
        }
        self.inner.commit(|c| {
            if let Some(other) = c
                .hosts
                .values()
                .find(|h| h.nqn == host.nqn && h.uuid != host.uuid)
            {
                return Err(ServiceError::AlreadyExists {
                    what: "host",
                    name: format!("{} (NQN {})", other.uuid, host.nqn),
                });
            }
            c.hosts.insert(host.uuid, host.clone());
            Ok(host)
        })
    }

    /// Every registered host, by UUID.
    pub fn hosts(&self) -> Vec<HostRecord> {
        self.inner.catalog().hosts.values().cloned().collect()
    }

    /// A registered host.
    pub fn host(&self, uuid: Uuid) -> Result<HostRecord, ServiceError> {
        self.inner
            .catalog()
            .hosts
            .get(&uuid)
            .cloned()
            .ok_or(ServiceError::NotFound {
                what: "host",
                id: uuid.to_string(),
            })
    }

    /// Forgets a host.
    pub fn delete_host(&self, uuid: Uuid) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            c.hosts
                .remove(&uuid)
                .map(|_| ())
                .ok_or(ServiceError::NotFound {
                    what: "host",
                    id: uuid.to_string(),
                })
        })
    }
}
