//! The scrub routes, a Keel extension in the cluster API v2 style (the
//! Lightbits API has no scrub): `POST /api/v2/cluster/scrub` starts a pass
//! (cluster admins only), `GET` reads its state and findings (any caller; the
//! damaged volumes listed are those the caller may read).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::convert;
use super::dto::{ErrorBody, ScrubDto, ScrubStateDto, ScrubVolumeDto};
use super::error::ApiError;
use super::extract::Caller;
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::domain::ScrubView;

/// Start a scrub pass now (cluster admin only; Keel extension). Answers 202
/// with the state when this request started a pass, 200 with the running
/// pass's state when one was already running (it goes on; no second pass is
/// queued).
#[utoipa::path(post, path = "/api/v2/cluster/scrub", tag = "cluster",
    responses(
        (status = 202, description = "A pass started", body = ScrubDto),
        (status = 200, description = "A pass was already running and goes on", body = ScrubDto),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start_scrub(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<(StatusCode, Json<ScrubDto>), ApiError> {
    if !caller.is_cluster_admin() {
        return Err(ApiError::PermissionDenied(
            "only a cluster admin may start a scrub".to_owned(),
        ));
    }
    blocking(&state, move |s| {
        let (started, view) = s.start_scrub()?;
        let status = if started {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(scrub_dto(&view, &caller))))
    })
    .await
}

/// The scrub's state and the damaged blocks its last completed pass found, per
/// volume and snapshot (Keel extension).
#[utoipa::path(get, path = "/api/v2/cluster/scrub", tag = "cluster",
    responses((status = 200, body = ScrubDto), (status = 401, body = ErrorBody), (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn scrub_status(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ScrubDto>, ApiError> {
    blocking(&state, move |s| Ok(Json(scrub_dto(&s.scrub()?, &caller)))).await
}

/// The answer for `caller`: totals of the whole pool, and the damaged maps it
/// may read (maps the catalog does not know belong to no project, so only a
/// cluster admin sees them).
fn scrub_dto(view: &ScrubView, caller: &Principal) -> ScrubDto {
    let r = &view.report;
    let volumes = view
        .maps
        .iter()
        .filter(|m| match &m.project {
            Some(project) => caller.can_read(project),
            None => caller.is_cluster_admin(),
        })
        .map(|m| ScrubVolumeDto {
            uuid: m.damage.uuid.map(|u| u.to_string()),
            name: m.name.clone(),
            project_name: m.project.clone(),
            kind: m.kind.as_str().to_owned(),
            engine_id: m.damage.engine_id,
            damaged_blocks: m.damage.damaged_blocks,
            damaged_lbas: m.damage.lbas.clone(),
        })
        .collect();
    ScrubDto {
        state: if r.running {
            ScrubStateDto::Running
        } else {
            ScrubStateDto::Idle
        },
        passes_completed: r.passes_completed,
        blocks_checked: r.blocks_checked,
        blocks_total: r.blocks_total,
        last_started: r.last_started_unix_s.map(convert::time_s),
        last_finished: r.last_finished_unix_s.map(convert::time_s),
        bytes_per_second: r.bytes_per_s,
        damaged_blocks: view.damaged_blocks(),
        metadata_damaged: r.metadata_damaged,
        volumes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::control::{ScrubDamage, ScrubReport};
    use crate::domain::{DamagedMap, MapKind};

    fn map(project: Option<&str>, engine_id: u64, lbas: &[u64]) -> DamagedMap {
        DamagedMap {
            damage: ScrubDamage::new(engine_id, None, lbas),
            kind: if project.is_some() {
                MapKind::Volume
            } else {
                MapKind::Unknown
            },
            name: project.map(|_| format!("v{engine_id}")),
            project: project.map(str::to_owned),
        }
    }

    #[test]
    fn callers_see_pool_totals_but_only_the_volumes_they_may_read() {
        let view = ScrubView {
            report: ScrubReport {
                running: true,
                last_started_unix_s: Some(0),
                ..ScrubReport::default()
            },
            maps: vec![
                map(Some("a"), 1, &[7]),
                map(Some("b"), 2, &[8, 9]),
                map(None, 3, &[10]),
            ],
        };
        let admin = Principal::anonymous_admin();
        let dto = scrub_dto(&view, &admin);
        assert_eq!(dto.state, ScrubStateDto::Running);
        assert_eq!(dto.last_started.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(dto.last_finished, None);
        assert_eq!(dto.damaged_blocks, 4);
        let ids: Vec<u64> = dto.volumes.iter().map(|v| v.engine_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(dto.volumes[2].kind, "Unknown");

        let viewer = Principal {
            subject: "v".to_owned(),
            role: Role::ProjectViewer("b".to_owned()),
        };
        let dto = scrub_dto(&view, &viewer);
        assert_eq!(dto.damaged_blocks, 4);
        assert_eq!(dto.volumes.len(), 1);
        assert_eq!(dto.volumes[0].damaged_lbas, [8, 9]);
        assert_eq!(dto.volumes[0].project_name.as_deref(), Some("b"));
    }
}
