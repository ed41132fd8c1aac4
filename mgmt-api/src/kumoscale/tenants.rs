//! Tenants: projects with a capacity, IOPS and bandwidth budget.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{success, KsError, KsResult};
use super::{blocking, project_of, tenant_of, KsCaller, KsJson, DEFAULT_TENANT, GB};
use crate::domain::model::{ProjectQuota, DEFAULT_PROJECT};
use crate::http::AppState;

/// Create and modify tenant bodies.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TenantBody {
    tenant_id: Option<String>,
    #[serde(alias = "Name")]
    name: Option<String>,
    /// GB.
    capacity: Option<u64>,
    #[serde(rename = "totalIOPS")]
    total_iops: Option<u64>,
    #[serde(rename = "totalBW")]
    total_bw: Option<u64>,
}

impl TenantBody {
    fn quota(&self) -> Result<ProjectQuota, KsError> {
        let need = |field: &str, value: Option<u64>| {
            value.ok_or_else(|| KsError::invalid(format!("{field} is mandatory")))
        };
        let capacity = need("capacity", self.capacity)?;
        Ok(ProjectQuota {
            capacity_bytes: capacity
                .checked_mul(GB)
                .ok_or_else(|| KsError::invalid("capacity is too large"))?,
            iops: need("totalIOPS", self.total_iops)?,
            bandwidth_bytes_per_s: need("totalBW", self.total_bw)?,
        })
    }
}

fn tenant_json(
    name: &str,
    description: &str,
    quota: Option<ProjectQuota>,
    used: crate::domain::quota::Provisioned,
) -> Value {
    let display = if name == DEFAULT_PROJECT {
        DEFAULT_PROJECT
    } else {
        description
    };
    json!({
        "tenantId": tenant_of(name),
        "name": display,
        "capacity": quota.map(|q| q.capacity_bytes / GB),
        "totalIOPS": quota.map(|q| q.iops),
        "totalBW": quota.map(|q| q.bandwidth_bytes_per_s),
        // To the nearest GB: volumes are sized in GiB and rounded to blocks.
        "consumedCapacity": used.capacity_bytes.saturating_add(GB / 2) / GB,
        "consumedIOPS": used.iops,
        "consumedBW": used.bandwidth_bytes_per_s,
    })
}

/// `GET /tenants`: every project, the default one as tenant `0`.
pub(super) async fn list(State(state): State<AppState>, caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    blocking(&state, |s| {
        let tenants: Vec<Value> = s
            .projects()
            .iter()
            .map(|p| {
                tenant_json(
                    &p.name,
                    &p.description,
                    p.quota,
                    s.project_provisioned(&p.name),
                )
            })
            .collect();
        Ok(Json(tenants).into_response())
    })
    .await
}

/// `POST /tenants`: a project named by the tenant id (a new UUID unless
/// given), its name as the description, with the budget as its quota.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: KsCaller,
    KsJson(body): KsJson<TenantBody>,
) -> KsResult {
    caller.require_admin()?;
    let name = body
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| KsError::invalid("name is mandatory"))?;
    let quota = body.quota()?;
    let tenant = match body.tenant_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    if tenant == DEFAULT_TENANT || tenant == DEFAULT_PROJECT {
        return Err(KsError::new(
            "TenantAlreadyExists",
            "the default tenant exists already",
        ));
    }
    blocking(&state, move |s| {
        s.create_project(&tenant, &name, None)
            .map_err(|e| match e {
                crate::domain::ServiceError::AlreadyExists { .. } => {
                    KsError::new("TenantAlreadyExists", e.to_string())
                }
                other => KsError::from_service(other, "TenantNotFound", "TenantHasVolumes"),
            })?;
        s.set_project_quota(&tenant, None, Some(quota))
            .map_err(|e| KsError::from_service(e, "TenantNotFound", "TenantHasVolumes"))?;
        Ok(success(
            format!("tenant {name} created"),
            &[("tenantId", json!(tenant))],
        ))
    })
    .await
}

/// `PUT /tenants/{tenantId}`: a new budget (never below what the tenant
/// already provisions).
pub(super) async fn update(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<TenantBody>,
) -> KsResult {
    caller.require_admin()?;
    let quota = body.quota()?;
    if let Some(id) = body.tenant_id.as_deref().filter(|id| !id.is_empty()) {
        if id != tenant {
            return Err(KsError::invalid(format!(
                "tenantId {id:?} in the body differs from {tenant:?} in the path"
            )));
        }
    }
    let project = project_of(&tenant);
    blocking(&state, move |s| {
        let description = body.name.as_deref().filter(|_| project != DEFAULT_PROJECT);
        s.set_project_quota(&project, description, Some(quota))
            .map_err(|e| KsError::from_service(e, "TenantNotFound", "TenantHasVolumes"))?;
        Ok(success(format!("tenant {tenant} updated"), &[]))
    })
    .await
}

/// `DELETE /tenants/{tenantId}`: only an empty tenant.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
) -> KsResult {
    caller.require_admin()?;
    let project = project_of(&tenant);
    if project == DEFAULT_PROJECT {
        return Err(KsError::invalid("the default tenant cannot be deleted"));
    }
    blocking(&state, move |s| {
        s.delete_project(&project)
            .map_err(|e| KsError::from_service(e, "TenantNotFound", "TenantHasVolumes"))?;
        Ok(success(format!("tenant {tenant} deleted"), &[]))
    })
    .await
}
