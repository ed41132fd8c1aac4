//! Thick clones between clusters: a snapshot on one cluster becomes a new
//! volume (or a snapshot of one) on another, its data copied over NVMe/TCP
//! by this node acting as a host.
//!
//! The steps, each on the cluster it concerns (through the domain service
//! for this cluster, through the other's Lightbits API with the DMS token
//! and pinned certificate otherwise): read the source snapshot; make a thin
//! clone of it that grants this node's host NQN; make the destination
//! volume granting the same; copy (blocks of zeros skipped, so thin stays
//! thin; progress and cancel through the workflow); remove the thin clone;
//! take the host's grant back (the destination's ACL becomes `ALLOW_NONE`,
//! as a new volume's is); for a snapshot destination, snapshot the volume
//! (kept as `thickclone-<workflowId>`, as for clones within a cluster). A
//! failure or cancel removes what was made.
//!
//! A restart of this node fails the workflow (as for every thick clone);
//! volumes it had made on another cluster stay there, named
//! `dms-source-<workflowId>` or as the destination.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::copy::{BlockCopier, CopyOrder, CopyOutcome, RemoteNamespace};
use super::peer;
use super::Dms;
use crate::domain::model::{AttachedClusterRecord, ResourceState, WorkflowKind, WorkflowState};
use crate::domain::qos::QosPolicyRef;
use crate::domain::rules::ALLOW_NONE;
use crate::domain::{NewSnapshot, NewVolume, Service, VolumeChanges};

/// How long a new volume on another cluster may take to become Available.
const AVAILABLE_WAIT: Duration = Duration::from_secs(60);

/// A thick clone whose source or destination is another cluster.
#[derive(Debug, Clone)]
pub struct CrossClone {
    /// Into a snapshot (else a volume).
    pub into_snapshot: bool,
    /// The source cluster (`None`: this one).
    pub source_cluster: Option<AttachedClusterRecord>,
    /// The source snapshot's project.
    pub source_project: String,
    /// The source snapshot.
    pub snapshot: Uuid,
    /// The destination cluster (`None`: this one).
    pub destination_cluster: Option<AttachedClusterRecord>,
    /// The destination project.
    pub destination_project: String,
    /// The destination's name.
    pub name: String,
    /// Destination size (default and minimum: the source's).
    pub size_bytes: Option<u64>,
    /// Destination replicas (default: the source's).
    pub replica_count: Option<u32>,
    /// Destination sector size (must be the source's).
    pub sector_size_bytes: Option<u32>,
    /// Destination compression (default: the source volume's).
    pub compression: Option<bool>,
    /// Destination QoS policy, by name.
    pub qos_policy_name: Option<String>,
    /// A destination snapshot's description.
    pub description: Option<String>,
    /// Read the destination back and compare.
    pub verify: bool,
    /// The request as received.
    pub request: Value,
}

/// Where one side of the transfer lives.
#[derive(Debug, Clone)]
enum Side {
    Local,
    Remote(AttachedClusterRecord),
}

/// What the source snapshot is.
#[derive(Debug, Clone, Copy)]
struct SnapshotFacts {
    size: u64,
    sector: u32,
    replicas: u32,
    compression: bool,
}

/// A volume to make on one side.
#[derive(Debug, Clone)]
struct VolumeOrder {
    project: String,
    name: String,
    size: u64,
    sector: u32,
    replicas: Option<u32>,
    compression: bool,
    qos_policy_name: Option<String>,
    source_snapshot: Option<Uuid>,
}

/// What the transfer needs to reach both sides.
struct Ctx {
    service: Arc<Service>,
    dms: Arc<Dms>,
    host_nqn: String,
}

/// Starts a cross-cluster thick clone; the workflow id is the answer.
pub fn start(
    service: &Arc<Service>,
    dms: &Arc<Dms>,
    copier: Arc<dyn BlockCopier>,
    order: CrossClone,
) -> Result<Uuid, crate::domain::ServiceError> {
    let kind = if order.into_snapshot {
        WorkflowKind::ThickCloneSnapshot
    } else {
        WorkflowKind::ThickCloneVolume
    };
    let mut projects = vec![order.source_project.clone()];
    if order.destination_project != order.source_project {
        projects.push(order.destination_project.clone());
    }
    let id = service.begin_transfer_workflow(kind, projects, order.request.clone())?;
    let ctx = Ctx {
        service: Arc::clone(service),
        dms: Arc::clone(dms),
        host_nqn: format!(
            "nqn.2014-08.org.nvmexpress:uuid:{}",
            service.control().node_info().uuid
        ),
    };
    tokio::spawn(async move {
        let (state, msg) = run(&ctx, id, &order, copier).await;
        let service = Arc::clone(&ctx.service);
        tokio::task::spawn_blocking(move || service.end_background_workflow(id, state, &msg))
            .await
            .ok();
    });
    Ok(id)
}

fn side(cluster: &Option<AttachedClusterRecord>) -> Side {
    cluster.clone().map_or(Side::Local, Side::Remote)
}

/// The transfer; how it ended.
async fn run(
    ctx: &Ctx,
    id: Uuid,
    order: &CrossClone,
    copier: Arc<dyn BlockCopier>,
) -> (WorkflowState, String) {
    let source = side(&order.source_cluster);
    let destination = side(&order.destination_cluster);
    let facts = match ctx
        .snapshot_facts(&source, &order.source_project, order.snapshot)
        .await
    {
        Ok(f) => f,
        Err(e) => return (WorkflowState::Failed, e),
    };
    let size = order.size_bytes.unwrap_or(facts.size);
    if size < facts.size {
        return (
            WorkflowState::Failed,
            format!(
                "dst.size {size} is smaller than the source's {}",
                facts.size
            ),
        );
    }
    if order.sector_size_bytes.is_some_and(|s| s != facts.sector) {
        return (
            WorkflowState::Failed,
            format!(
                "dst.sectorSize must be the source's ({}) for a copy between clusters",
                facts.sector
            ),
        );
    }
    ctx.service.set_workflow_progress(id, 0, "Preparing");
    let source_clone = match ctx
        .create_volume(
            &source,
            &VolumeOrder {
                project: order.source_project.clone(),
                name: format!("dms-source-{id}"),
                size: facts.size,
                sector: facts.sector,
                replicas: None,
                compression: false,
                qos_policy_name: None,
                source_snapshot: Some(order.snapshot),
            },
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return (WorkflowState::Failed, format!("source: {e}")),
    };
    let destination_name = if order.into_snapshot {
        format!("thickclone-{id}")
    } else {
        order.name.clone()
    };
    let made = ctx
        .create_volume(
            &destination,
            &VolumeOrder {
                project: order.destination_project.clone(),
                name: destination_name,
                size,
                sector: facts.sector,
                replicas: order.replica_count.or(Some(facts.replicas)),
                compression: order.compression.unwrap_or(facts.compression),
                qos_policy_name: order.qos_policy_name.clone(),
                source_snapshot: None,
            },
        )
        .await;
    let target = match made {
        Ok(v) => v,
        Err(e) => {
            ctx.remove(&source, &order.source_project, source_clone.0)
                .await;
            return (WorkflowState::Failed, format!("destination: {e}"));
        }
    };
    ctx.service.set_workflow_progress(id, 0, "Copying");
    let copy = CopyOrder {
        host_nqn: ctx.host_nqn.clone(),
        source: source_clone.1.clone(),
        destination: target.1.clone(),
        bytes: facts.size,
        block_size: facts.sector,
        verify: order.verify,
    };
    let service = Arc::clone(&ctx.service);
    let total = facts.size.max(1);
    let copied = tokio::task::spawn_blocking(move || {
        let mut last = 0;
        copier.copy(&copy, &mut |done| {
            let percent = u32::try_from(done.saturating_mul(100) / total).unwrap_or(100);
            if percent != last {
                last = percent;
                service.set_workflow_progress(id, percent, "Copying");
            }
            !service.workflow_cancel_requested(id)
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("copy task failed: {e}")));
    ctx.remove(&source, &order.source_project, source_clone.0)
        .await;
    let ended = match copied {
        Ok(CopyOutcome::Done) => None,
        Ok(CopyOutcome::Stopped) => {
            Some((WorkflowState::Canceled, "canceled by request".to_owned()))
        }
        Err(e) => Some((WorkflowState::Failed, format!("copy: {e}"))),
    };
    if let Some(ended) = ended {
        ctx.remove(&destination, &order.destination_project, target.0)
            .await;
        return ended;
    }
    let finished = async {
        ctx.revoke(&destination, &order.destination_project, target.0)
            .await?;
        if order.into_snapshot {
            ctx.snapshot_volume(
                &destination,
                &order.destination_project,
                target.0,
                &order.name,
                order.description.as_deref().unwrap_or_default(),
            )
            .await?;
        }
        Ok::<(), String>(())
    }
    .await;
    let cluster = order.destination_cluster.as_ref().map_or_else(
        || "this cluster".to_owned(),
        |c| format!("cluster {}", c.id),
    );
    match finished {
        Err(e) => {
            ctx.remove(&destination, &order.destination_project, target.0)
                .await;
            (WorkflowState::Failed, e)
        }
        Ok(()) if order.into_snapshot => (
            WorkflowState::Completed,
            format!(
                "snapshot {} created from volume {} on {cluster}",
                order.name, target.0
            ),
        ),
        Ok(()) => (
            WorkflowState::Completed,
            format!("volume {} created on {cluster}", target.0),
        ),
    }
}

impl Ctx {
    /// Runs domain work for this cluster off the executor.
    async fn local<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let service = Arc::clone(&self.service);
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .map_err(|e| format!("task failed: {e}"))?
    }

    /// Calls another cluster's Lightbits API.
    async fn remote(
        &self,
        cluster: &AttachedClusterRecord,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let token = self
            .dms
            .key()
            .and_then(|k| k.token())
            .map_err(|e| e.to_string())?;
        let client =
            peer::client(Some(cluster.certificate_sha256.clone())).map_err(|e| e.message)?;
        let url = format!("https://{}{path}", cluster.attached_via);
        let mut request = client.request(method.clone(), &url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "{method} {url} answered {status}: {}",
                crate::http::extract::truncate(&text)
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn snapshot_facts(
        &self,
        side: &Side,
        project: &str,
        snapshot: Uuid,
    ) -> Result<SnapshotFacts, String> {
        match side {
            Side::Local => {
                let project = project.to_owned();
                self.local(move |s| {
                    let snap = s.snapshot(snapshot).map_err(|e| e.to_string())?;
                    if snap.project != project || snap.state != ResourceState::Available {
                        return Err(format!(
                            "snapshot {snapshot} is not an Available snapshot of project {project}"
                        ));
                    }
                    Ok(SnapshotFacts {
                        size: snap.size_bytes,
                        sector: snap.sector_size_bytes,
                        replicas: snap.replica_count,
                        compression: snap.compression,
                    })
                })
                .await
            }
            Side::Remote(cluster) => {
                let path = format!("/api/v2/projects/{project}/snapshots/{snapshot}");
                let snap = self
                    .remote(cluster, reqwest::Method::GET, &path, None)
                    .await?;
                if snap["state"] != "Available" {
                    return Err(format!("snapshot {snapshot} is {}", snap["state"]));
                }
                let size = snap["size"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| format!("snapshot {snapshot} has no size: {snap}"))?;
                let volume = snap["sourceVolumeUUID"].as_str().unwrap_or_default();
                let compression = self
                    .remote(
                        cluster,
                        reqwest::Method::GET,
                        &format!("/api/v2/projects/{project}/volumes/{volume}"),
                        None,
                    )
                    .await
                    .is_ok_and(|v| v["compression"] == "true");
                Ok(SnapshotFacts {
                    size,
                    sector: snap["sectorSize"]
                        .as_u64()
                        .and_then(|s| u32::try_from(s).ok())
                        .unwrap_or(4096),
                    replicas: snap["replicaCount"]
                        .as_u64()
                        .and_then(|r| u32::try_from(r).ok())
                        .unwrap_or(1),
                    compression,
                })
            }
        }
    }

    /// Makes a volume granting only this node's host; its id and where a
    /// host reaches it.
    async fn create_volume(
        &self,
        side: &Side,
        order: &VolumeOrder,
    ) -> Result<(Uuid, RemoteNamespace), String> {
        match side {
            Side::Local => {
                let order = order.clone();
                let host = self.host_nqn.clone();
                self.local(move |s| {
                    let view = s
                        .create_volume(NewVolume {
                            name: order.name,
                            project: order.project,
                            size_bytes: Some(order.size),
                            sector_size_bytes: Some(order.sector),
                            replica_count: order.replicas,
                            compression: Some(order.compression),
                            acl: Some(vec![host]),
                            qos_policy: order.qos_policy_name.map(QosPolicyRef::Name),
                            source_snapshot: order.source_snapshot,
                            ..NewVolume::default()
                        })
                        .map_err(|e| e.to_string())?;
                    let nsid = view
                        .record
                        .nsid
                        .ok_or("the new volume has no namespace id")?;
                    Ok((
                        view.record.uuid,
                        RemoteNamespace {
                            portal: s.control().node_info().nvme_endpoint,
                            subsystem_nqn: s.control().subsystem_nqn(),
                            nsid,
                        },
                    ))
                })
                .await
            }
            Side::Remote(cluster) => {
                let mut body = json!({
                    "name": order.name,
                    "size": order.size.to_string(),
                    "sectorSize": order.sector,
                    "compression": if order.compression { "true" } else { "false" },
                    "acl": {"values": [self.host_nqn]},
                });
                if let Some(r) = order.replicas {
                    body["replicaCount"] = json!(r);
                }
                if let Some(q) = &order.qos_policy_name {
                    body["qosPolicyName"] = json!(q);
                }
                if let Some(s) = order.source_snapshot {
                    body["sourceSnapshotUUID"] = json!(s);
                }
                let path = format!("/api/v2/projects/{}/volumes", order.project);
                let made = self
                    .remote(cluster, reqwest::Method::POST, &path, Some(body))
                    .await?;
                let uuid: Uuid = made["UUID"]
                    .as_str()
                    .and_then(|u| u.parse().ok())
                    .ok_or_else(|| format!("the new volume has no UUID: {made}"))?;
                let view = self.await_available(cluster, &order.project, uuid).await?;
                let nsid = view["nsid"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("volume {uuid} has no nsid: {view}"))?;
                let node = view["nodeList"][0].as_str().unwrap_or_default().to_owned();
                let node = self
                    .remote(
                        cluster,
                        reqwest::Method::GET,
                        &format!("/api/v2/nodes/{node}"),
                        None,
                    )
                    .await?;
                let portal = node["nvmeEndpoint"]
                    .as_str()
                    .ok_or_else(|| format!("node {node} names no NVMe endpoint"))?
                    .to_owned();
                Ok((
                    uuid,
                    RemoteNamespace {
                        portal,
                        subsystem_nqn: cluster.subsystem_nqn.clone(),
                        nsid,
                    },
                ))
            }
        }
    }

    /// Polls another cluster's volume until it is Available.
    async fn await_available(
        &self,
        cluster: &AttachedClusterRecord,
        project: &str,
        uuid: Uuid,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + AVAILABLE_WAIT;
        let path = format!("/api/v2/projects/{project}/volumes/{uuid}");
        loop {
            let view = self
                .remote(cluster, reqwest::Method::GET, &path, None)
                .await?;
            match view["state"].as_str() {
                Some("Available") => return Ok(view),
                Some("Failed") => return Err(format!("volume {uuid} failed: {view}")),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "volume {uuid} was not Available within {AVAILABLE_WAIT:?}"
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Takes this node's grant back: the volume's ACL becomes `ALLOW_NONE`.
    async fn revoke(&self, side: &Side, project: &str, uuid: Uuid) -> Result<(), String> {
        match side {
            Side::Local => {
                self.local(move |s| {
                    s.update_volume(
                        uuid,
                        VolumeChanges {
                            acl: Some(vec![ALLOW_NONE.to_owned()]),
                            ..VolumeChanges::default()
                        },
                        None,
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                })
                .await
            }
            Side::Remote(cluster) => self
                .remote(
                    cluster,
                    reqwest::Method::PUT,
                    &format!("/api/v2/projects/{project}/volumes/{uuid}"),
                    Some(json!({"acl": {"values": [ALLOW_NONE]}})),
                )
                .await
                .map(|_| ()),
        }
    }

    async fn snapshot_volume(
        &self,
        side: &Side,
        project: &str,
        volume: Uuid,
        name: &str,
        description: &str,
    ) -> Result<(), String> {
        match side {
            Side::Local => {
                let (project, name, description) =
                    (project.to_owned(), name.to_owned(), description.to_owned());
                self.local(move |s| {
                    s.create_snapshot(NewSnapshot {
                        name,
                        project,
                        source_volume: volume,
                        description,
                        ..NewSnapshot::default()
                    })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                })
                .await
            }
            Side::Remote(cluster) => self
                .remote(
                    cluster,
                    reqwest::Method::POST,
                    &format!("/api/v2/projects/{project}/snapshots"),
                    Some(json!({"name": name, "sourceVolumeUUID": volume, "description": description})),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Deletes a volume the transfer made; a failure is logged (the volume
    /// stays, named after the workflow).
    async fn remove(&self, side: &Side, project: &str, uuid: Uuid) {
        let outcome = match side {
            Side::Local => {
                self.local(move |s| s.delete_volume(uuid, None).map_err(|e| e.to_string()))
                    .await
            }
            Side::Remote(cluster) => self
                .remote(
                    cluster,
                    reqwest::Method::DELETE,
                    &format!("/api/v2/projects/{project}/volumes/{uuid}"),
                    None,
                )
                .await
                .map(|_| ()),
        };
        if let Err(err) = outcome {
            tracing::warn!(%uuid, %err, "a thick clone between clusters could not remove a volume it made");
        }
    }
}
