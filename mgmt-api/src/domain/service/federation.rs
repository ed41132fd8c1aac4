//! The DMS registry: other clusters this one manages; and the workflows
//! whose work runs outside the domain worker (attaching and re-reading
//! clusters, thick clones between clusters). The calls to other clusters
//! and the copies are the caller's (`dms`); the domain records them.

use uuid::Uuid;

use super::{invalid, now_ms, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{AttachedClusterRecord, WorkflowKind, WorkflowRecord, WorkflowState};

impl Service {
    /// Records a cluster workflow (attach or refresh) as running; its work
    /// is the caller's, which ends it with [`Service::end_background_workflow`].
    pub fn begin_cluster_workflow(
        &self,
        kind: WorkflowKind,
        request: serde_json::Value,
    ) -> Result<Uuid, ServiceError> {
        if kind.is_thick_clone() {
            return Err(invalid(format!("{kind:?} is not a cluster workflow")));
        }
        self.begin_background_workflow(kind, Vec::new(), request, None)
    }

    /// Records a thick clone between clusters as running (its copy is the
    /// caller's); refused past `max_running_workflows` like any thick clone.
    pub fn begin_transfer_workflow(
        &self,
        kind: WorkflowKind,
        projects: Vec<String>,
        request: serde_json::Value,
    ) -> Result<Uuid, ServiceError> {
        if !kind.is_thick_clone() {
            return Err(invalid(format!("{kind:?} is not a thick clone")));
        }
        let max = self.config().max_running_workflows;
        self.begin_background_workflow(kind, projects, request, Some(max))
    }

    fn begin_background_workflow(
        &self,
        kind: WorkflowKind,
        projects: Vec<String>,
        request: serde_json::Value,
        max_running: Option<usize>,
    ) -> Result<Uuid, ServiceError> {
        let id = Uuid::new_v4();
        self.inner.commit(|c| {
            if let Some(max) = max_running {
                if c.workflows.values().filter(|w| w.is_running()).count() >= max {
                    return Err(ServiceError::TooManyWorkflows { max });
                }
            }
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
                    stage: "Starting".to_owned(),
                    created_at_ms: now,
                    started_at_ms: Some(now),
                    ended_at_ms: None,
                    projects: projects.clone(),
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

    /// Records how far a background workflow has come.
    pub fn set_workflow_progress(&self, id: Uuid, percent: u32, stage: &str) {
        let result = self.inner.commit(|c| {
            if let Some(w) = c.workflows.get_mut(&id).filter(|w| w.is_running()) {
                w.percent = percent.min(99);
                w.stage = stage.to_owned();
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(%id, %err, "could not record a workflow's progress");
        }
    }

    /// Whether a cancel of workflow `id` was asked for.
    pub fn workflow_cancel_requested(&self, id: Uuid) -> bool {
        self.inner
            .catalog()
            .workflows
            .get(&id)
            .is_some_and(|w| w.cancel_requested)
    }

    /// Ends a background workflow in `state` with `msg`.
    pub fn end_background_workflow(&self, id: Uuid, state: WorkflowState, msg: &str) {
        let result = self.inner.commit(|c| {
            if let Some(w) = c.workflows.get_mut(&id) {
                w.state = state;
                w.msg = msg.to_owned();
                w.stage = match state {
                    WorkflowState::Completed | WorkflowState::Running => "Done",
                    WorkflowState::Failed => "Failed",
                    WorkflowState::Canceled => "Canceled",
                }
                .to_owned();
                if state == WorkflowState::Completed {
                    w.percent = 100;
                }
                w.ended_at_ms = Some(now_ms());
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(%id, %err, "could not record the end of a workflow");
        }
    }

    /// Adds an attached cluster (`replace`: or updates a known one), as
    /// read now.
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
            c.attached_clusters.insert(
                record.id,
                AttachedClusterRecord {
                    refreshed_at_ms: now_ms(),
                    ..record.clone()
                },
            );
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
