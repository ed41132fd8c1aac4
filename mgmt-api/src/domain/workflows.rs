//! Workflows: long operations (thick clones) tracked durably with progress and
//! cancel, limited to `max_running_workflows` at once.

use uuid::Uuid;

use super::error::ServiceError;
use super::model::{ResourceState, VolumeRecord, WorkflowKind, WorkflowRecord, WorkflowState};
use super::qos::{self, QosPolicyRef};
use super::rules;
use super::service::{now_ms, now_s, Service};
use crate::control::VolumeSpec;

/// Most workflows one list page returns (the documents keep the last 100).
pub const WORKFLOW_PAGE_MAX: usize = 100;
/// Most finished workflows the catalog keeps; older ones are pruned.
const WORKFLOWS_KEPT_MAX: usize = 1000;

/// A thick-clone request (into a volume, or into a snapshot via a new volume).
#[derive(Debug, Clone, Default)]
pub struct ThickClone {
    /// Source snapshot.
    pub source_snapshot: Uuid,
    /// Project of the source snapshot.
    pub source_project: String,
    /// Destination name (volume or snapshot).
    pub name: String,
    /// Destination project (default: the source's).
    pub project: Option<String>,
    /// Destination size (default and minimum: the source's).
    pub size_bytes: Option<u64>,
    /// Destination replica count (default: the source's).
    pub replica_count: Option<u32>,
    /// Destination sector size (default: the source's).
    pub sector_size_bytes: Option<u32>,
    /// Destination compression (default: the source's).
    pub compression: Option<bool>,
    /// Destination QoS policy (default: the destination project's default).
    pub qos_policy: Option<QosPolicyRef>,
    /// Description of a destination snapshot.
    pub description: Option<String>,
    /// Whether the destination is a snapshot (else a volume).
    pub into_snapshot: bool,
    /// Read both sides back and compare them before completing ("verifyClone").
    pub verify: bool,
    /// The request as received, echoed in the workflow.
    pub request: serde_json::Value,
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

impl Service {
    /// Starts a thick clone and returns its workflow id.
    pub fn start_thick_clone(&self, req: ThickClone) -> Result<Uuid, ServiceError> {
        rules::check_name("dst.name", &req.name).map_err(invalid)?;
        self.require_project(&req.source_project)?;
        let project = req
            .project
            .clone()
            .unwrap_or_else(|| req.source_project.clone());
        self.require_project(&project)?;
        let description = req.description.clone().unwrap_or_default();
        rules::check_description(&description).map_err(invalid)?;
        // An unknown policy is a bad request whatever the source: checked
        // before the snapshot is looked up (and again when the record is made).
        if let Some(reference) = &req.qos_policy {
            qos::resolve(&self.inner.catalog(), &project, "dst.qosPolicy", reference)?;
        }
        // Values given explicitly are checked before any lookup, so a malformed
        // request is a 400 whatever exists; defaults taken from the source are
        // checked below, once the source is known.
        if let Some(sector) = req.sector_size_bytes {
            rules::check_sector_size(sector).map_err(invalid)?;
        }
        if let Some(replicas) = req.replica_count {
            rules::check_replica_count(replicas, self.config().max_replicas).map_err(invalid)?;
        }
        let id = Uuid::new_v4();
        let volume_uuid = Uuid::new_v4();
        let max = self.config().max_running_workflows;
        let max_replicas = self.config().max_replicas;
        let volume = self.inner.commit(|c| {
            if c.workflows.values().filter(|w| w.is_running()).count() >= max {
                return Err(ServiceError::TooManyWorkflows { max });
            }
            let src = c
                .snapshots
                .get(&req.source_snapshot)
                .filter(|s| s.project == req.source_project)
                .ok_or(ServiceError::NotFound {
                    what: "snapshot",
                    id: req.source_snapshot.to_string(),
                })?
                .clone();
            super::service::require_stable("snapshot", src.uuid, src.state)?;
            let volume_name = if req.into_snapshot {
                if c.snapshot_named(&project, &req.name).is_some() {
                    return Err(ServiceError::AlreadyExists {
                        what: "snapshot",
                        name: req.name.clone(),
                    });
                }
                format!("thickclone-{id}")
            } else {
                req.name.clone()
            };
            if c.volume_named(&project, &volume_name).is_some() {
                return Err(ServiceError::AlreadyExists {
                    what: "volume",
                    name: volume_name,
                });
            }
            let sector = req.sector_size_bytes.unwrap_or(src.sector_size_bytes);
            rules::check_sector_size(sector).map_err(invalid)?;
            let replicas = req.replica_count.unwrap_or(src.replica_count);
            rules::check_replica_count(replicas, max_replicas).map_err(invalid)?;
            let size = req.size_bytes.unwrap_or(src.size_bytes);
            if size < src.size_bytes {
                return Err(invalid(format!(
                    "size {size} is smaller than the source volume size {}",
                    src.size_bytes
                )));
            }
            if !rules::is_multiple(size, u64::from(sector)) {
                return Err(invalid(format!(
                    "size {size} is not a multiple of the sector size {sector}"
                )));
            }
            let qos_policy = match &req.qos_policy {
                Some(reference) => Some(qos::resolve(c, &project, "dst.qosPolicy", reference)?),
                None => c.projects.get(&project).and_then(|p| p.default_qos_policy),
            };
            let nsid = self.inner.reserve_nsid(c)?;
            let volume = VolumeRecord {
                uuid: volume_uuid,
                name: volume_name,
                project: project.clone(),
                state: ResourceState::Creating,
                size_bytes: size,
                sector_size_bytes: sector,
                replica_count: replicas,
                compression: req.compression.unwrap_or(src.compression),
                acl: vec![rules::ALLOW_NONE.to_owned()],
                ip_acl: vec![rules::ALLOW_ANY.to_owned()],
                qos_policy,
                labels: Vec::new(),
                source_snapshot: None,
                source_volume: None,
                nsid: Some(nsid),
                revision: 1,
                created_at_s: now_s(),
                workflow: Some(id),
                failure: None,
            };
            c.volumes.insert(volume_uuid, volume.clone());
            let seq = c.next_seq;
            c.next_seq = c.next_seq.wrapping_add(1);
            let mut projects = vec![req.source_project.clone()];
            if project != req.source_project {
                projects.push(project.clone());
            }
            c.workflows.insert(
                id,
                WorkflowRecord {
                    id,
                    kind: if req.into_snapshot {
                        WorkflowKind::ThickCloneSnapshot
                    } else {
                        WorkflowKind::ThickCloneVolume
                    },
                    state: WorkflowState::Running,
                    msg: String::new(),
                    percent: 0,
                    stage: "Starting".to_owned(),
                    created_at_ms: now_ms(),
                    started_at_ms: None,
                    ended_at_ms: None,
                    projects,
                    target_volume: volume_uuid,
                    source_snapshot: src.uuid,
                    target_snapshot: req
                        .into_snapshot
                        .then(|| (Uuid::new_v4(), req.name.clone(), description.clone())),
                    job: None,
                    cancel_requested: false,
                    request: req.request.clone(),
                    seq,
                },
            );
            prune_workflows(c);
            Ok(volume)
        })?;
        let spec = VolumeSpec {
            uuid: volume.uuid,
            size_bytes: volume.size_bytes,
            sector_size_bytes: volume.sector_size_bytes,
            compression: volume.compression,
            replica_count: volume.replica_count,
        };
        match self
            .inner
            .control
            .start_clone_job(req.source_snapshot, &spec, req.verify)
        {
            Ok(job) => {
                self.inner.commit(|c| {
                    if let Some(w) = c.workflows.get_mut(&id) {
                        w.job = Some(job);
                        w.started_at_ms = Some(now_ms());
                        w.stage = "Copying".to_owned();
                    }
                    Ok(())
                })?;
                self.inner.notify();
                Ok(id)
            }
            Err(err) => {
                // Nothing started: forget the workflow and its destination entirely.
                let _ = self.inner.control.delete_volume(volume.uuid);
                let _ = self.inner.commit(|c| {
                    c.remove_volume(&volume.uuid);
                    c.workflows.remove(&id);
                    Ok(())
                });
                Err(err.into())
            }
        }
    }

    /// One workflow.
    pub fn workflow(&self, id: Uuid) -> Result<WorkflowRecord, ServiceError> {
        self.inner
            .catalog()
            .workflows
            .get(&id)
            .cloned()
            .ok_or(ServiceError::NotFound {
                what: "workflow",
                id: id.to_string(),
            })
    }

    /// Workflows newest first, filtered by `visible`, one page of at most
    /// `page_size` (≤ 100) after `page_token`; returns the next token if more remain.
    pub fn workflows(
        &self,
        visible: impl Fn(&WorkflowRecord) -> bool,
        page_size: Option<usize>,
        page_token: Option<u64>,
    ) -> (Vec<WorkflowRecord>, Option<u64>) {
        let size = page_size
            .filter(|s| *s > 0)
            .unwrap_or(WORKFLOW_PAGE_MAX)
            .min(WORKFLOW_PAGE_MAX);
        let catalog = self.inner.catalog();
        let mut all: Vec<&WorkflowRecord> = catalog
            .workflows
            .values()
            .filter(|w| page_token.is_none_or(|t| w.seq < t))
            .filter(|w| visible(w))
            .collect();
        all.sort_by_key(|w| std::cmp::Reverse(w.seq));
        let more = all.len() > size;
        let page: Vec<WorkflowRecord> = all.into_iter().take(size).cloned().collect();
        let next = if more {
            page.last().map(|w| w.seq)
        } else {
            None
        };
        (page, next)
    }

    /// Requests cancellation of a running workflow.
    pub fn cancel_workflow(&self, id: Uuid) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let w = c.workflows.get_mut(&id).ok_or(ServiceError::NotFound {
                what: "workflow",
                id: id.to_string(),
            })?;
            if !w.is_running() {
                return Err(invalid(format!(
                    "workflow {id} has already ended ({:?})",
                    w.state
                )));
            }
            if !w.kind.is_thick_clone() {
                return Err(invalid(format!(
                    "workflow {id} reads cluster information and runs to its end; only thick clones are canceled"
                )));
            }
            w.cancel_requested = true;
            w.stage = "Canceling".to_owned();
            Ok(())
        })?;
        self.inner.notify();
        Ok(())
    }
}

pub(super) fn prune_workflows(c: &mut super::model::Catalog) {
    while c.workflows.len() > WORKFLOWS_KEPT_MAX {
        let oldest = c
            .workflows
            .values()
            .filter(|w| !w.is_running())
            .min_by_key(|w| w.seq)
            .map(|w| w.id);
        match oldest {
            Some(id) => {
                c.workflows.remove(&id);
            }
            None => break,
        }
    }
}
