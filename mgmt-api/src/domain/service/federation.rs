//! The DMS registry: other clusters this one manages, and the workflows
//! that attach them and re-read them. The HTTP calls to those clusters are
//! the caller's (`dms`); the registry records what they found.

use uuid::Uuid;

use super::{invalid, now_ms, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{AttachedClusterRecord, WorkflowKind, WorkflowRecord, WorkflowState};

impl Service {
    /// Records a cluster workflow (attach or refresh) as running; its work
    /// is the caller's, which ends it with [`Service::end_cluster_workflow`].
    pub fn begin_cluster_workflow(
        &self,
        kind: WorkflowKind,
        request: serde_json::Value,
    ) -> Result<Uuid, ServiceError> {
        if kind.is_thick_clone() {
            return Err(invalid(format!("{kind:?} is not a cluster workflow")));
        }
        let id = Uuid::new_v4();
        self.inner.commit(|c| {
            let seq = c.next_seq;
            c.next_seq = c.next_seq.wrapping_add(1);
            let now = now_ms();
            c.workflows.insert(
                id,
                WorkflowRecord {
                    id,
                    kind,
                    state: WorkflowState::Running,
                    msg: String::new(),
                    percent: 0,
                    stage: "Contacting".to_owned(),
                    created_at_ms: now,
                    started_at_ms: Some(now),
                    ended_at_ms: None,
                    projects: Vec::new(),
                    target_volume: Uuid::nil(),
                    source_snapshot: Uuid::nil(),
                    target_snapshot: None,
                    job: None,
                    cancel_requested: false,
                    request: request.clone(),
                    seq,
                },
            );
            crate::domain::workflows::prune_workflows(c);
            Ok(())
        })?;
        Ok(id)
    }

    /// Ends a cluster workflow: Completed with `Ok(message)`, else Failed.
    pub fn end_cluster_workflow(&self, id: Uuid, outcome: Result<String, String>) {
        let result = self.inner.commit(|c| {
            if let Some(w) = c.workflows.get_mut(&id) {
                let (state, msg) = match &outcome {
                    Ok(msg) => (WorkflowState::Completed, msg),
                    Err(msg) => (WorkflowState::Failed, msg),
                };
                w.state = state;
                w.msg = msg.clone();
                w.percent = 100;
                w.stage = if state == WorkflowState::Completed {
                    "Done"
                } else {
                    "Failed"
                }
                .to_owned();
                w.ended_at_ms = Some(now_ms());
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(%id, %err, "could not record the end of a cluster workflow");
        }
    }

    /// Adds an attached cluster (`replace`: or updates a known one).
    /// Refused for this cluster itself and, without `replace`, for one
    /// attached already.
    pub fn record_attached_cluster(
        &self,
        record: AttachedClusterRecord,
        replace: bool,
    ) -> Result<(), ServiceError> {
        if record.id == self.cluster_uuid() {
            return Err(invalid(format!(
                "{} is this cluster; a DMS manages its own cluster without attaching it",
                record.attached_via
            )));
        }
        self.inner.commit(|c| {
            let known = c.attached_clusters.contains_key(&record.id);
            if known && !replace {
                return Err(ServiceError::AlreadyExists {
                    what: "attached cluster",
                    name: record.id.to_string(),
                });
            }
            if !known && replace {
                // Detached while it was being read: stays detached.
                return Ok(());
            }
            c.attached_clusters.insert(record.id, record.clone());
            Ok(())
        })
    }

    /// Every attached cluster, in id order.
    pub fn attached_clusters(&self) -> Vec<AttachedClusterRecord> {
        self.inner
            .catalog()
            .attached_clusters
            .values()
            .cloned()
            .collect()
    }

    /// Forgets an attached cluster.
    pub fn detach_cluster(&self, id: Uuid) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            c.attached_clusters
                .remove(&id)
                .map(|_| ())
                .ok_or(ServiceError::NotFound {
                    what: "attached cluster",
                    id: id.to_string(),
                })
        })
    }
}
