//! Project quotas and project deletion: what a KumoScale tenant adds to a
//! Lightbits project.
//!
//! A volume being deleted still holds its project until the worker removes
//! it, so an emptied project can be deleted once its deletes finish.

use super::{invalid, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{ProjectQuota, DEFAULT_PROJECT};
use crate::domain::quota;
use crate::domain::rules;

impl Service {
    /// Sets (or with `None` removes) `project`'s quota; refused if the
    /// project already provisions more than it allows.
    pub fn set_project_quota(
        &self,
        project: &str,
        description: Option<&str>,
        new_quota: Option<ProjectQuota>,
    ) -> Result<(), ServiceError> {
        if let Some(text) = description {
            rules::check_description(text).map_err(invalid)?;
        }
        self.inner.commit(|c| {
            if !c.projects.contains_key(project) {
                return Err(ServiceError::NotFound {
                    what: "project",
                    id: project.to_owned(),
                });
            }
            if let Some(q) = &new_quota {
                quota::check_fits(c, project, q)?;
            }
            if let Some(p) = c.projects.get_mut(project) {
                p.quota = new_quota;
                if let Some(text) = description {
                    text.clone_into(&mut p.description);
                }
            }
            Ok(())
        })
    }

    /// What `project`'s volumes provision together.
    pub fn project_provisioned(&self, project: &str) -> quota::Provisioned {
        quota::provisioned(&self.inner.catalog(), project, None)
    }

    /// Deletes an empty project; refused for the default project and while
    /// any volume or snapshot (even one being deleted) belongs to it.
    pub fn delete_project(&self, project: &str) -> Result<(), ServiceError> {
        if project == DEFAULT_PROJECT {
            return Err(invalid("the default project cannot be deleted".to_owned()));
        }
        self.inner.commit(|c| {
            if !c.projects.contains_key(project) {
                return Err(ServiceError::NotFound {
                    what: "project",
                    id: project.to_owned(),
                });
            }
            if c.volumes.values().any(|v| v.project == project)
                || c.snapshots.values().any(|s| s.project == project)
            {
                return Err(ServiceError::InUse(format!(
                    "project {project:?} still holds volumes or snapshots"
                )));
            }
            if c.qos_policies
                .values()
                .any(|q| q.project.as_deref() == Some(project))
            {
                return Err(ServiceError::InUse(format!(
                    "project {project:?} still holds QoS policies"
                )));
            }
            c.projects.remove(project);
            c.project_default_types.remove(project);
            Ok(())
        })
    }
}
