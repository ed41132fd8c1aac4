//! Background work and startup reconciliation: finishing deletes, driving clone
//! jobs, and bringing the catalog in line with the engine after a restart.
//!
//! The worker is persistence-driven: it scans the catalog for `Deleting`
//! resources and running workflows, so work interrupted by a crash resumes from
//! the durable state without any in-memory queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

use super::model::{ResourceState, SnapshotRecord, WorkflowKind, WorkflowState};
use super::nsids;
use super::service::{now_ms, now_s, volume_access, Inner};
use crate::control::{CloneJobState, ControlError, VolumeAccess};

/// Longest the worker sleeps when there is no running workflow.
const IDLE_WAIT: Duration = Duration::from_secs(1);

impl Inner {
    /// Brings the catalog in line with the engine after a (possibly unclean) stop.
    pub(super) fn reconcile(&self) -> Result<(), ControlError> {
        let listed = self.control.list_volumes()?;
        let engine_sizes: HashMap<Uuid, u64> =
            listed.iter().map(|v| (v.uuid, v.size_bytes)).collect();
        let engine_ids: HashMap<Uuid, u64> = listed.iter().map(|v| (v.uuid, v.engine_id)).collect();
        let engine: HashSet<Uuid> = engine_sizes.keys().copied().collect();
        self.repair_nsids(&engine_ids);
        let snapshot = self.catalog().clone();

        // Workflows cut short by the restart fail; their destination goes away.
        for w in snapshot.workflows.values().filter(|w| w.is_running()) {
            self.finish_workflow(
                w.id,
                WorkflowState::Failed,
                "interrupted by a restart of the daemon",
            );
        }
        for v in snapshot.volumes.values() {
            match v.state {
                ResourceState::Creating if v.workflow.is_some() => {}
                ResourceState::Creating if engine.contains(&v.uuid) => {
                    let outcome = self.expose(v.uuid, v.nsid, &volume_access(&v.acl, &v.ip_acl));
                    let _ = self.commit(|c| {
                        if let Some(r) = c.volumes.get_mut(&v.uuid) {
                            match &outcome {
                                Ok(()) => {
                                    r.state = ResourceState::Available;
                                }
                                Err(e) => {
                                    r.state = ResourceState::Failed;
                                    r.failure =
                                        Some(format!("could not expose after restart: {e}"));
                                }
                            }
                            r.revision = r.revision.wrapping_add(1);
                        }
                        Ok(())
                    });
                }
                ResourceState::Creating => {
                    let _ = self.commit(|c| {
                        c.remove_volume(&v.uuid);
                        Ok(())
                    });
                }
                ResourceState::Updating => {
                    let _ = self.commit(|c| {
                        if let Some(r) = c.volumes.get_mut(&v.uuid) {
                            r.state = ResourceState::Available;
                            if let Some(size) = engine_sizes.get(&v.uuid) {
                                if *size != r.size_bytes {
                                    tracing::warn!(uuid = %v.uuid, catalog_bytes = r.size_bytes, engine_bytes = *size,
                                        "a resize was cut short; the catalog takes the engine's size");
                                }
                                r.size_bytes = *size;
                            }
                            r.revision = r.revision.wrapping_add(1);
                        }
                        Ok(())
                    });
                }
                // INVARIANT: a grow writes the engine before the catalog (the
                // record is Updating in between, handled above), so an Available
                // record never legitimately disagrees with the engine: a larger
                // catalog size is never a grow to finish. The engine holds the
                // data, so its size wins.
                ResourceState::Available
                    if engine_sizes
                        .get(&v.uuid)
                        .is_some_and(|size| *size != v.size_bytes) =>
                {
                    let engine_bytes = engine_sizes.get(&v.uuid).copied().unwrap_or(v.size_bytes);
                    tracing::warn!(
                        uuid = %v.uuid,
                        catalog_bytes = v.size_bytes,
                        engine_bytes,
                        "the catalog's volume size disagrees with the engine's; correcting the catalog"
                    );
                    let _ = self.commit(|c| {
                        if let Some(r) = c.volumes.get_mut(&v.uuid) {
                            r.size_bytes = engine_bytes;
                            r.revision = r.revision.wrapping_add(1);
                        }
                        Ok(())
                    });
                }
                ResourceState::Available if !engine.contains(&v.uuid) => {
                    tracing::error!(uuid = %v.uuid, "catalog volume missing from the engine; marking it Failed");
                    let _ = self.commit(|c| {
                        if let Some(r) = c.volumes.get_mut(&v.uuid) {
                            r.state = ResourceState::Failed;
                            r.failure = Some("the engine no longer holds this volume".to_owned());
                            r.revision = r.revision.wrapping_add(1);
                        }
                        Ok(())
                    });
                }
                ResourceState::Available | ResourceState::Deleting | ResourceState::Failed => {}
            }
        }
        // The target's namespaces and ACLs live only in memory: after a restart
        // every volume that serves I/O is exposed again with its catalog ACL.
        let serving: Vec<_> = self
            .catalog()
            .volumes
            .values()
            .filter(|v| matches!(v.state, ResourceState::Available) && engine.contains(&v.uuid))
            .map(|v| (v.uuid, v.nsid, volume_access(&v.acl, &v.ip_acl)))
            .collect();
        for (uuid, nsid, acl) in serving {
            if let Err(err) = self.expose(uuid, nsid, &acl) {
                tracing::error!(%uuid, %err, "could not expose a volume after restart");
            }
        }
        for s in snapshot.snapshots.values() {
            match s.state {
                ResourceState::Creating => {
                    let gone = matches!(
                        self.control.delete_snapshot(s.uuid),
                        Ok(()) | Err(ControlError::NotFound(_))
                    );
                    let _ = self.commit(|c| {
                        if gone {
                            c.remove_snapshot(&s.uuid);
                        } else if let Some(r) = c.snapshots.get_mut(&s.uuid) {
                            r.state = ResourceState::Failed;
                        }
                        Ok(())
                    });
                }
                ResourceState::Updating => {
                    let _ = self.commit(|c| {
                        if let Some(r) = c.snapshots.get_mut(&s.uuid) {
                            r.state = ResourceState::Available;
                        }
                        Ok(())
                    });
                }
                ResourceState::Available | ResourceState::Deleting | ResourceState::Failed => {}
            }
        }
        self.reconcile_snapshot_records();
        let known: HashSet<Uuid> = self.catalog().volumes.keys().copied().collect();
        for orphan in engine.difference(&known) {
            tracing::warn!(uuid = %orphan, "engine volume unknown to the catalog; left untouched");
        }
        Ok(())
    }

    /// Brings Available snapshot records in line with the snapshots the engine
    /// holds: one the engine lacks is marked Failed, and a size that disagrees
    /// takes the engine's (a snapshot never changes size, so only a hand-edited
    /// catalog can disagree). Skipped where the port cannot list snapshots.
    fn reconcile_snapshot_records(&self) {
        let listed = match self.control.list_snapshots() {
            Ok(listed) => listed,
            Err(ControlError::Unsupported(_)) => return,
            Err(err) => {
                tracing::error!(%err, "cannot list the engine's snapshots; snapshot records left as they are");
                return;
            }
        };
        let engine_sizes: HashMap<Uuid, u64> =
            listed.iter().map(|s| (s.uuid, s.size_bytes)).collect();
        let _ = self.commit(|c| {
            for (uuid, r) in c.snapshots.iter_mut() {
                if r.state != ResourceState::Available {
                    continue;
                }
                match engine_sizes.get(uuid) {
                    None => {
                        tracing::error!(%uuid, "catalog snapshot missing from the engine; marking it Failed");
                        r.state = ResourceState::Failed;
                        r.revision = r.revision.wrapping_add(1);
                    }
                    Some(&size) if size != r.size_bytes => {
                        tracing::warn!(
                            %uuid,
                            catalog_bytes = r.size_bytes,
                            engine_bytes = size,
                            "the catalog's snapshot size disagrees with the engine's; correcting the catalog"
                        );
                        r.size_bytes = size;
                        r.revision = r.revision.wrapping_add(1);
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        });
    }

    /// Sets who may see `volume` and the rates its QoS policy allows, and
    /// exposes it under the nsid its record holds.
    pub(super) fn expose(
        &self,
        volume: Uuid,
        nsid: Option<u32>,
        access: &VolumeAccess,
    ) -> Result<(), ControlError> {
        let nsid = nsid.ok_or_else(|| {
            ControlError::Internal(format!(
                "no namespace id is free (all {} are in use)",
                self.nsid_max
            ))
        })?;
        self.control.set_access(volume, access)?;
        self.apply_rate_limits(volume)?;
        self.control.expose_volume(volume, nsid)
    }

    /// Gives every volume record a distinct nsid in range (`nsids::repair`),
    /// logging each change: catalogs written before the catalog allocated
    /// nsids have none on records that were never exposed.
    fn repair_nsids(&self, engine_ids: &HashMap<Uuid, u64>) {
        let changes = self.commit(|c| Ok(nsids::repair(c, self.nsid_max, engine_ids)));
        match changes {
            Ok(changes) => {
                for change in changes {
                    let uuid = change.uuid;
                    match (change.before, change.after) {
                        (None, Some(nsid)) => {
                            tracing::info!(%uuid, nsid, "volume given a namespace id")
                        }
                        (Some(before), Some(nsid)) => tracing::warn!(
                            %uuid,
                            before,
                            nsid,
                            "volume's namespace id was out of range or held twice; moved"
                        ),
                        (before, None) => tracing::error!(
                            %uuid,
                            ?before,
                            "no namespace id is free for this volume; it stays unexposed"
                        ),
                    }
                }
            }
            Err(err) => tracing::error!(%err, "could not persist repaired namespace ids"),
        }
    }

    /// The worker thread's body: runs until shutdown.
    pub(super) fn run_worker(&self) {
        while !self.shutdown.load(Ordering::Acquire) {
            self.step();
            let wait = if self.catalog().workflows.values().any(|w| w.is_running()) {
                self.config.workflow_poll_interval
            } else {
                IDLE_WAIT
            };
            let mut flag = self.wake_flag.lock();
            if !*flag {
                let _ = self.wake.wait_for(&mut flag, wait);
            }
            *flag = false;
        }
    }

    /// One pass over pending work.
    pub(super) fn step(&self) {
        let (volumes, snapshots, workflows) = {
            let c = self.catalog();
            (
                c.volumes
                    .values()
                    .filter(|v| v.state == ResourceState::Deleting)
                    .map(|v| v.uuid)
                    .collect::<Vec<_>>(),
                c.snapshots
                    .values()
                    .filter(|s| s.state == ResourceState::Deleting)
                    .map(|s| s.uuid)
                    .collect::<Vec<_>>(),
                c.workflows
                    .values()
                    .filter(|w| w.is_running())
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        for uuid in volumes {
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            let outcome = self.control.delete_volume(uuid);
            let _ = self.commit(|c| {
                match &outcome {
                    Ok(()) | Err(ControlError::NotFound(_)) => {
                        c.remove_volume(&uuid);
                    }
                    Err(ControlError::Busy(_)) => {}
                    Err(e) => {
                        if let Some(v) = c.volumes.get_mut(&uuid) {
                            v.state = ResourceState::Failed;
                            v.failure = Some(format!("delete failed: {e}"));
                            v.revision = v.revision.wrapping_add(1);
                        }
                    }
                }
                Ok(())
            });
        }
        for uuid in snapshots {
            let outcome = self.control.delete_snapshot(uuid);
            let _ = self.commit(|c| {
                match &outcome {
                    Ok(()) | Err(ControlError::NotFound(_)) => {
                        c.remove_snapshot(&uuid);
                    }
                    Err(ControlError::Busy(_)) => {}
                    Err(_) => {
                        if let Some(s) = c.snapshots.get_mut(&uuid) {
                            s.state = ResourceState::Failed;
                            s.revision = s.revision.wrapping_add(1);
                        }
                    }
                }
                Ok(())
            });
        }
        for w in workflows {
            let Some(job) = w.job else { continue };
            if w.cancel_requested {
                let _ = self.control.cancel_clone_job(job);
            }
            match self.control.clone_job_status(job) {
                Ok(status) => match status.state {
                    CloneJobState::Running => {
                        let percent = status
                            .copied_bytes
                            .saturating_mul(100)
                            .checked_div(status.total_bytes)
                            .map_or(0, |p| u32::try_from(p).unwrap_or(100));
                        let _ = self.commit(|c| {
                            if let Some(r) = c.workflows.get_mut(&w.id) {
                                r.percent = percent.min(99);
                                r.stage = "Copying".to_owned();
                            }
                            Ok(())
                        });
                    }
                    CloneJobState::Completed => self.complete_workflow(w.id),
                    CloneJobState::Failed(msg) => {
                        self.finish_workflow(w.id, WorkflowState::Failed, &msg)
                    }
                    CloneJobState::Cancelled => {
                        self.finish_workflow(w.id, WorkflowState::Canceled, "canceled by request")
                    }
                },
                Err(e) => self.finish_workflow(w.id, WorkflowState::Failed, &e.to_string()),
            }
        }
    }

    /// Ends a workflow without success: its destination volume is removed.
    pub(super) fn finish_workflow(&self, id: Uuid, state: WorkflowState, msg: &str) {
        let Some(w) = self.catalog().workflows.get(&id).cloned() else {
            return;
        };
        let cleanup = match self.control.delete_volume(w.target_volume) {
            Ok(()) | Err(ControlError::NotFound(_)) => None,
            Err(e) => Some(e),
        };
        let _ = self.commit(|c| {
            match &cleanup {
                None => {
                    c.remove_volume(&w.target_volume);
                }
                Some(e) => {
                    if let Some(v) = c.volumes.get_mut(&w.target_volume) {
                        v.state = ResourceState::Failed;
                        v.workflow = None;
                        v.failure =
                            Some(format!("thick clone ended ({msg}) and cleanup failed: {e}"));
                        v.revision = v.revision.wrapping_add(1);
                    }
                }
            }
            if let Some(r) = c.workflows.get_mut(&id) {
                r.state = state;
                r.msg = msg.to_owned();
                // The stage says how it ended: a canceled or failed copy is
                // not "Done".
                r.stage = match state {
                    WorkflowState::Canceled => "Canceled",
                    WorkflowState::Failed => "Failed",
                    WorkflowState::Completed | WorkflowState::Running => "Done",
                }
                .to_owned();
                r.ended_at_ms = Some(now_ms());
            }
            Ok(())
        });
    }

    /// Ends a workflow whose copy completed: exposes the volume and, for snapshot
    /// clones, takes the destination snapshot.
    fn complete_workflow(&self, id: Uuid) {
        let Some(w) = self.catalog().workflows.get(&id).cloned() else {
            return;
        };
        let Some(volume) = self.catalog().volumes.get(&w.target_volume).cloned() else {
            self.finish_workflow(
                id,
                WorkflowState::Failed,
                "the destination volume disappeared",
            );
            return;
        };
        if let Err(e) = self.expose(
            volume.uuid,
            volume.nsid,
            &volume_access(&volume.acl, &volume.ip_acl),
        ) {
            self.finish_workflow(
                id,
                WorkflowState::Failed,
                &format!("could not expose the clone: {e}"),
            );
            return;
        }
        let snapshot = match &w.target_snapshot {
            Some((snap_uuid, name, description)) => {
                match self.control.create_snapshot(volume.uuid, *snap_uuid) {
                    Ok(()) => Some(SnapshotRecord {
                        uuid: *snap_uuid,
                        name: name.clone(),
                        project: volume.project.clone(),
                        state: ResourceState::Available,
                        source_volume: volume.uuid,
                        source_volume_name: volume.name.clone(),
                        size_bytes: volume.size_bytes,
                        sector_size_bytes: volume.sector_size_bytes,
                        compression: volume.compression,
                        replica_count: volume.replica_count,
                        description: description.clone(),
                        retention_time: None,
                        revision: 1,
                        created_at_s: now_s(),
                        seq: 0,
                    }),
                    Err(e) => {
                        self.finish_workflow(
                            id,
                            WorkflowState::Failed,
                            &format!("could not take the snapshot: {e}"),
                        );
                        return;
                    }
                }
            }
            None => None,
        };
        let _ = self.commit(|c| {
            if let Some(v) = c.volumes.get_mut(&volume.uuid) {
                v.state = ResourceState::Available;
                v.workflow = None;
                v.revision = v.revision.wrapping_add(1);
            }
            if let Some(s) = &snapshot {
                let seq = c.next_seq;
                c.next_seq = c.next_seq.wrapping_add(1);
                c.snapshots
                    .insert(s.uuid, SnapshotRecord { seq, ..s.clone() });
            }
            if let Some(r) = c.workflows.get_mut(&id) {
                r.state = WorkflowState::Completed;
                r.percent = 100;
                r.stage = "Done".to_owned();
                r.ended_at_ms = Some(now_ms());
                r.msg = match r.kind {
                    WorkflowKind::ThickCloneVolume
                    | WorkflowKind::AttachCluster
                    | WorkflowKind::RefreshClusters => format!("volume {} created", volume.uuid),
                    WorkflowKind::ThickCloneSnapshot => format!(
                        "snapshot {} created from volume {}",
                        snapshot
                            .as_ref()
                            .map(|s| s.uuid.to_string())
                            .unwrap_or_default(),
                        volume.uuid
                    ),
                };
            }
            Ok(())
        });
    }
}
