//! Attachments of volumes to instances and attach-workflow statuses
//! (Cinder's os-attach, os-reserve, os-begin_detaching, os-reset_status).
//! Bookkeeping only: what grants a host access is the volume's host ACL.

use uuid::Uuid;

use super::{invalid, now_s, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{AttachmentRecord, AttachmentStatus};

impl Service {
    fn require_volume(
        catalog: &crate::domain::model::Catalog,
        volume: Uuid,
    ) -> Result<(), ServiceError> {
        if catalog.volumes.contains_key(&volume) {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "volume",
                id: volume.to_string(),
            })
        }
    }

    /// Records an attachment of `volume` and clears its attach status.
    pub fn attach(
        &self,
        volume: Uuid,
        instance: Option<Uuid>,
        host_name: Option<String>,
        mountpoint: Option<String>,
        mode: &str,
    ) -> Result<AttachmentRecord, ServiceError> {
        if mode != "rw" && mode != "ro" {
            return Err(invalid(format!(
                "attach mode {mode:?} is neither rw nor ro"
            )));
        }
        self.inner.commit(|c| {
            Self::require_volume(c, volume)?;
            let record = AttachmentRecord {
                id: Uuid::new_v4(),
                volume,
                instance,
                host_name: host_name.clone(),
                mountpoint: mountpoint.clone(),
                mode: mode.to_owned(),
                attached_at_s: now_s(),
                host_nqn: None,
                status: AttachmentStatus::Attached,
            };
            c.attachments.insert(record.id, record.clone());
            c.attach_status.remove(&volume);
            Ok(record)
        })
    }

    /// Removes `volume`'s attachment `id` (every one when `None`) and
    /// clears its attach status.
    pub fn detach(&self, volume: Uuid, id: Option<Uuid>) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            Self::require_volume(c, volume)?;
            if let Some(id) = id {
                match c.attachments.get(&id) {
                    Some(a) if a.volume == volume => {}
                    _ => {
                        return Err(ServiceError::NotFound {
                            what: "attachment",
                            id: id.to_string(),
                        })
                    }
                }
            }
            c.attachments
                .retain(|at, a| !(a.volume == volume && id.is_none_or(|id| id == *at)));
            c.attach_status.remove(&volume);
            Ok(())
        })
    }

    /// Reserves `volume` for `instance`: an attachment without a host yet.
    pub fn reserve_attachment(
        &self,
        volume: Uuid,
        instance: Option<Uuid>,
        mode: &str,
    ) -> Result<AttachmentRecord, ServiceError> {
        let record = self.attach(volume, instance, None, None, mode)?;
        self.change_attachment(record.id, |a| a.status = AttachmentStatus::Reserved)
    }

    /// Applies `change` to attachment `id` and returns it.
    pub fn change_attachment(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut AttachmentRecord),
    ) -> Result<AttachmentRecord, ServiceError> {
        self.inner.commit(|c| {
            let a = c.attachments.get_mut(&id).ok_or(ServiceError::NotFound {
                what: "attachment",
                id: id.to_string(),
            })?;
            change(a);
            Ok(a.clone())
        })
    }

    /// Removes attachment `id` and returns what it was.
    pub fn remove_attachment(&self, id: Uuid) -> Result<AttachmentRecord, ServiceError> {
        self.inner.commit(|c| {
            c.attachments.remove(&id).ok_or(ServiceError::NotFound {
                what: "attachment",
                id: id.to_string(),
            })
        })
    }

    /// Attachment `id`.
    pub fn attachment(&self, id: Uuid) -> Result<AttachmentRecord, ServiceError> {
        self.inner
            .catalog()
            .attachments
            .get(&id)
            .cloned()
            .ok_or(ServiceError::NotFound {
                what: "attachment",
                id: id.to_string(),
            })
    }

    /// `volume`'s attachments.
    pub fn attachments_of(&self, volume: Uuid) -> Vec<AttachmentRecord> {
        self.inner
            .catalog()
            .attachments
            .values()
            .filter(|a| a.volume == volume)
            .cloned()
            .collect()
    }

    /// Sets (or with `None` clears) the status an attach workflow shows for
    /// `volume`; `expect` must be its current one, when given.
    pub fn set_attach_status(
        &self,
        volume: Uuid,
        expect: Option<&[&str]>,
        current: impl Fn(&crate::domain::model::Catalog) -> String,
        status: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            Self::require_volume(c, volume)?;
            let now = current(c);
            if let Some(allowed) = expect {
                if !allowed.contains(&now.as_str()) {
                    return Err(ServiceError::InvalidArgument(format!(
                        "volume {volume} is {now}; the action needs it {}",
                        allowed.join(" or ")
                    )));
                }
            }
            match status {
                Some(s) => {
                    c.attach_status.insert(volume, s.to_owned());
                }
                None => {
                    c.attach_status.remove(&volume);
                }
            }
            Ok(())
        })
    }

    /// The catalog, for dialects that derive a view (a Cinder status) from
    /// several records at once.
    pub fn catalog_snapshot(&self) -> crate::domain::model::Catalog {
        self.inner.catalog().clone()
    }
}
