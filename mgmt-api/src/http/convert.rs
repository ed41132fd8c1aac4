//! Catalog records to response bodies.

use std::time::{Duration, UNIX_EPOCH};

use super::dto::{
    AclDto, LabelDto, ProgressDto, QosLimitDto, QosPolicyDto, QosRatesDto, SnapshotDto, VolumeDto,
    VolumeStatisticsDto, WorkflowDto,
};
use crate::domain::model::{
    Label, QosPolicyRecord, QosRates, QosScale, ResourceState, SnapshotRecord, WorkflowKind,
    WorkflowRecord, WorkflowState,
};
use crate::domain::VolumeView;

/// Latest instant RFC 3339 can spell (9999-12-31T23:59:59Z); later catalog times
/// (a damaged catalog) are clamped so formatting never panics.
const RFC3339_MAX_S: u64 = 253_402_300_799;

/// RFC 3339 time of `seconds` since the epoch.
pub fn time_s(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds.min(RFC3339_MAX_S)))
        .to_string()
}

/// RFC 3339 time of `millis` since the epoch.
pub fn time_ms(millis: u64) -> String {
    let clamped = millis.min(RFC3339_MAX_S.saturating_mul(1000));
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(clamped)).to_string()
}

/// Labels from the wire.
pub fn labels_in(labels: Vec<LabelDto>) -> Vec<Label> {
    labels
        .into_iter()
        .map(|l| Label {
            key: l.key,
            value: l.value,
        })
        .collect()
}

fn labels_out(labels: &[Label]) -> Vec<LabelDto> {
    labels
        .iter()
        .map(|l| LabelDto {
            key: l.key.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// A volume body.
pub fn volume(view: &VolumeView, node: &str) -> VolumeDto {
    let v = &view.record;
    VolumeDto {
        uuid: v.uuid.to_string(),
        name: v.name.clone(),
        project_name: v.project.clone(),
        state: v.state.as_str().to_owned(),
        protection_state: match (&view.replication, v.state) {
            (Some(r), _) => r.protection_state.clone(),
            (None, ResourceState::Available | ResourceState::Updating) => "FullyProtected".into(),
            (None, ResourceState::Creating | ResourceState::Deleting) => "Unknown".into(),
            (None, ResourceState::Failed) => "NotAvailable".into(),
        },
        size: v.size_bytes.to_string(),
        replica_count: v.replica_count,
        sector_size: v.sector_size_bytes,
        compression: v.compression.to_string(),
        acl: AclDto {
            values: v.acl.clone(),
        },
        ip_acl: AclDto {
            values: v.ip_acl.clone(),
        },
        // A Creating volume holds its nsid but is not exposed yet.
        nsid: match v.state {
            ResourceState::Creating => 0,
            _ => v.nsid.unwrap_or(0),
        },
        etag: v.revision.to_string(),
        labels: labels_out(&v.labels),
        source_snapshot_uuid: v.source_snapshot.map(|s| s.to_string()),
        qos_policy_name: view.qos_policy_name.clone(),
        qos_policy_uuid: v.qos_policy.map(|p| p.to_string()),
        statistics: VolumeStatisticsDto {
            logical_used_storage: view.usage.logical_used_bytes.to_string(),
            physical_used_storage: view.usage.physical_used_bytes.to_string(),
            damaged_blocks: view.usage.damaged_blocks,
            qos_delayed_commands: view.usage.qos_delayed_commands,
            qos_delay_ms: view.usage.qos_delay_ms,
            host_written_storage: view.usage.host_written_bytes.to_string(),
            device_written_storage: view.usage.device_written_bytes.to_string(),
            write_amplification: format!(
                "{:.3}",
                write_amplification(
                    view.usage.host_written_bytes,
                    view.usage.device_written_bytes
                )
            ),
        },
        node_list: match &view.replication {
            Some(r) => r.node_list.iter().map(ToString::to_string).collect(),
            None => vec![node.to_owned()],
        },
        rebuild_progress: match view.replication.as_ref().and_then(|r| r.rebuild_progress) {
            Some(percent) => percent.to_string(),
            None => "None".to_owned(),
        },
        creation_time: time_s(v.created_at_s),
        failure_reason: v.failure.clone(),
    }
}

/// A snapshot body.
pub fn snapshot(s: &SnapshotRecord) -> SnapshotDto {
    SnapshotDto {
        uuid: s.uuid.to_string(),
        name: s.name.clone(),
        project_name: s.project.clone(),
        state: s.state.as_str().to_owned(),
        source_volume_uuid: s.source_volume.to_string(),
        source_volume_name: s.source_volume_name.clone(),
        size: s.size_bytes.to_string(),
        sector_size: s.sector_size_bytes,
        replica_count: s.replica_count,
        description: s.description.clone(),
        retention_time: s.retention_time.clone(),
        creation_time: time_s(s.created_at_s),
        etag: s.revision.to_string(),
    }
}

/// A workflow body.
pub fn workflow(w: &WorkflowRecord) -> WorkflowDto {
    let (kind, volume_req, snapshot_req) = match w.kind {
        WorkflowKind::ThickCloneVolume => ("thick clone volume", Some(w.request.clone()), None),
        WorkflowKind::ThickCloneSnapshot => ("thick clone snapshot", None, Some(w.request.clone())),
        WorkflowKind::AttachCluster => ("attach cluster", None, None),
        WorkflowKind::RefreshClusters => ("refresh clusters", None, None),
    };
    let attach_req = (w.kind == WorkflowKind::AttachCluster).then(|| w.request.clone());
    WorkflowDto {
        id: w.id.to_string(),
        created_at: time_ms(w.created_at_ms),
        started_at: w.started_at_ms.map(time_ms),
        ended_at: w.ended_at_ms.map(time_ms),
        kind: kind.to_owned(),
        state: match w.state {
            WorkflowState::Running => "Running",
            WorkflowState::Completed => "Completed",
            WorkflowState::Failed => "Failed",
            WorkflowState::Canceled => "Canceled",
        }
        .to_owned(),
        msg: w.msg.clone(),
        progress: ProgressDto {
            percent: w.percent,
            stage: w.stage.clone(),
        },
        thick_clone_volume_request: volume_req,
        snapshot_clone_request: snapshot_req,
        attach_cluster_request: attach_req,
    }
}

/// A QoS policy's rates for the wire.
fn qos_rates(r: &QosRates) -> QosRatesDto {
    QosRatesDto {
        read_iops: r.read_iops,
        write_iops: r.write_iops,
        total_iops: r.total_iops,
        read_mbps: r.read_mbps,
        write_mbps: r.write_mbps,
        total_mbps: r.total_mbps,
    }
}

/// A QoS policy's limit from the wire: exactly one kind.
pub fn qos_limit_in(limit: &QosLimitDto) -> Result<(QosScale, QosRates), String> {
    let (scale, r) = match (limit.limit_absolute, limit.limit_per_gb) {
        (Some(r), None) => (QosScale::Absolute, r),
        (None, Some(r)) => (QosScale::PerGib, r),
        (Some(_), Some(_)) => {
            return Err("limit takes limitAbsolute or limitPerGb, not both".to_owned())
        }
        (None, None) => return Err("limit needs limitAbsolute or limitPerGb".to_owned()),
    };
    Ok((
        scale,
        QosRates {
            read_iops: r.read_iops,
            write_iops: r.write_iops,
            total_iops: r.total_iops,
            read_mbps: r.read_mbps,
            write_mbps: r.write_mbps,
            total_mbps: r.total_mbps,
        },
    ))
}

/// A QoS policy for the wire.
pub fn qos_policy(p: &QosPolicyRecord) -> QosPolicyDto {
    let rates = Some(qos_rates(&p.rates));
    QosPolicyDto {
        uuid: p.uuid.to_string(),
        name: p.name.clone(),
        description: p.description.clone(),
        project_name: p.project.clone().unwrap_or_default(),
        state: "Active".to_owned(),
        limit: match p.scale {
            QosScale::Absolute => QosLimitDto {
                limit_absolute: rates,
                limit_per_gb: None,
            },
            QosScale::PerGib => QosLimitDto {
                limit_absolute: None,
                limit_per_gb: rates,
            },
        },
        etag: p.revision.to_string(),
    }
}

/// Device bytes per host byte (1 before any host write).
pub(crate) fn write_amplification(host_bytes: u64, device_bytes: u64) -> f64 {
    if host_bytes == 0 {
        1.0
    } else {
        device_bytes as f64 / host_bytes as f64
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_from_a_damaged_catalog_do_not_panic() {
        assert_eq!(super::time_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time_s(u64::MAX), "9999-12-31T23:59:59Z");
        assert!(super::time_ms(u64::MAX).starts_with("9999-12-31T23:59:59"));
    }
}
