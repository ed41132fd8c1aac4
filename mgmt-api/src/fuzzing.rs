//! Entry point shared by the cargo-fuzz target `rest_body` and its proptest
//! twin: hostile requests through the real routers (every route of the
//! Lightbits and Cinder dialects on the main router and of the KumoScale
//! and PVC ones, hostile bodies, paths and queries) against a domain service over the
//! in-memory control. No request may panic the server or answer 500: bad
//! input gets the dialect's own error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use tower::ServiceExt;
use uuid::Uuid;

use crate::auth::{AuthConfig, Authenticator, PasswordCost};
use crate::control::memory::MemoryControl;
use crate::domain::service::{NewSnapshot, NewVolume, Service, ServiceConfig};
use crate::http::{router, AppState};

/// The route templates, as the router spells them. `/api/v1/clusters`
/// (attach) is left out: a fuzzed endpoint would send traffic off the
/// machine.
/// `ks:` marks the KumoScale router's, `pvc:` the PVC router's.
const ROUTES: [&str; 84] = [
    "/login",
    "/openapi.json",
    "/api/v2/users",
    "/api/v2/credentials",
    "/api/v2/credentials/{id}",
    "/api/v2/cluster",
    "/api/v2/clusterinfo",
    "/api/v2/cluster/scrub",
    "/api/v2/nodes",
    "/api/v2/nodes/{UUID}",
    "/api/v2/projects",
    "/api/v2/volumes",
    "/api/v2/volumes/",
    "/api/v2/volumes/{UUID}",
    "/api/v2/volumes/{UUID}/rollback",
    "/api/v2/projects/{projectName}/volumes",
    "/api/v2/projects/{projectName}/volumes/",
    "/api/v2/projects/{projectName}/volumes/{UUID}",
    "/api/v2/projects/{projectName}/volumes/{UUID}/rollback",
    "/api/v2/snapshots",
    "/api/v2/snapshots/",
    "/api/v2/snapshots/{UUID}",
    "/api/v2/projects/{projectName}/snapshots",
    "/api/v2/projects/{projectName}/snapshots/",
    "/api/v2/projects/{projectName}/snapshots/{UUID}",
    "/api/v1/volumes/thickclone",
    "/api/v1/snapshots/thickclone",
    "/api/v1/workflows",
    "/api/v1/workflows/{workflowId}",
    "/api/v1/workflows/{workflowId}/cancel",
    "/",
    "/v3/",
    "/v3/volumes",
    "/v3/{projectName}/volumes",
    "/v3/{projectName}/volumes/detail",
    "/v3/{projectName}/volumes/{UUID}",
    "/v3/{projectName}/volumes/{UUID}/action",
    "/v3/{projectName}/volumes/{UUID}/metadata",
    "/v3/{projectName}/volumes/{UUID}/metadata/k",
    "/v3/{projectName}/snapshots",
    "/v3/{projectName}/snapshots/{UUID}",
    "/v3/{projectName}/attachments",
    "/v3/{projectName}/attachments/{UUID}",
    "/v3/{projectName}/os-quota-sets/{projectName}",
    "/v3/{projectName}/volumes/summary",
    "/v3/{projectName}/snapshots/{UUID}/action",
    "/v3/{projectName}/types",
    "/v3/{projectName}/types/{UUID}",
    "/v3/{projectName}/types/{UUID}/extra_specs",
    "/v3/{projectName}/types/{UUID}/action",
    "/v3/{projectName}/qos-specs",
    "/v3/{projectName}/qos-specs/{UUID}",
    "/v3/{projectName}/volume-transfers",
    "/v3/{projectName}/volume-transfers/{UUID}/accept",
    "/v3/{projectName}/os-volume-manage",
    "/v3/{projectName}/manageable_volumes",
    "/api/v1/service-credentials",
    "/api/v1/clusters/{UUID}",
    "ks:/tenants",
    "ks:/tenants/{projectName}",
    "ks:/{projectName}/volumes",
    "ks:/{projectName}/volumes/{UUID}",
    "ks:/{projectName}/snapshots",
    "ks:/{projectName}/snapshots/{UUID}",
    "ks:/{projectName}/snapshot_volume",
    "ks:/{projectName}/clone_volume",
    "ks:/host_probe",
    "ks:/{projectName}/publish",
    "ks:/targets",
    "ks:/forward_log",
    "ks:/backends/{UUID}",
    "ks:/backends",
    "ks:/auth_server",
    "ks:/license",
    "pvc:/api/v1/auth/login",
    "pvc:/api/v1/node",
    "pvc:/api/v1/storage/ceph",
    "pvc:/api/v1/storage/ceph/osd/0/state",
    "pvc:/api/v1/storage/ceph/pool",
    "pvc:/api/v1/storage/ceph/pool/{projectName}",
    "pvc:/api/v1/storage/ceph/volume",
    "pvc:/api/v1/storage/ceph/volume/{projectName}/v0",
    "pvc:/api/v1/storage/ceph/volume/snapshot",
    "pvc:/api/v1/storage/ceph/volume/snapshot/{projectName}/v0/s0",
];

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// Queries the list routes take, and some they do not.
const QUERIES: [&str; 11] = [
    "",
    "?name=v0&projectName=default",
    "?showAll=true&limit=2",
    "?Name=s0",
    "?snapshotUUID=not-a-uuid",
    "?limit=-1",
    "?projectName=%00%ff",
    "?after=00000000-0000-0000-0000-000000000000",
    "?limit=(a*)*b&pool=default",
    "?volume=v9&pool=default&size=4M&name=v8",
    "?yes_i_really_mean_it&pgs=8&pool=p9",
];

/// A router over a fresh service in a private directory.
pub struct RestFuzzer {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    kumoscale: axum::Router,
    pvc: axum::Router,
    dir: PathBuf,
    volume: Uuid,
    snapshot: Uuid,
}

impl Default for RestFuzzer {
    fn default() -> Self {
        Self::new()
    }
}

impl RestFuzzer {
    /// A service over the in-memory control with one volume and one
    /// snapshot, authentication off (every caller a cluster admin, so the
    /// handlers behind the gate see the input).
    pub fn new() -> RestFuzzer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keel-rest-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a private directory for the fuzzed service");
        let control = Arc::new(MemoryControl::default());
        let service = Service::open(
            &dir,
            control,
            ServiceConfig {
                workflow_poll_interval: Duration::from_millis(5),
                ..ServiceConfig::default()
            },
        )
        .expect("the service opens");
        let volume = service
            .create_volume(NewVolume {
                name: "v0".into(),
                project: "default".into(),
                size_bytes: Some(1 << 20),
                ..NewVolume::default()
            })
            .expect("a volume")
            .record
            .uuid;
        let snapshot = service
            .create_snapshot(NewSnapshot {
                name: "s0".into(),
                project: "default".into(),
                source_volume: volume,
                ..NewSnapshot::default()
            })
            .expect("a snapshot")
            .uuid;
        let auth = Authenticator::open(
            &dir,
            AuthConfig {
                disabled: true,
                password_cost: PasswordCost {
                    memory_kib: 64,
                    iterations: 1,
                },
                ..AuthConfig::default()
            },
        )
        .expect("the authenticator opens");
        let state = AppState {
            service: Arc::new(service),
            auth: Arc::new(auth),
            api_endpoint: "127.0.0.1:443".into(),
            body_limit_bytes: crate::server::BODY_LIMIT_DEFAULT_BYTES,
            rest_metrics: Default::default(),
            cinder_noauth: false,
            dms: Arc::new(crate::dms::Dms::new(dir.clone(), None)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        RestFuzzer {
            runtime,
            router: router(state.clone()),
            kumoscale: crate::kumoscale::router(state.clone()),
            pvc: crate::pvc::router(state),
            dir,
            volume,
            snapshot,
        }
    }

    /// Sends one request: `input`'s first bytes pick the method, route,
    /// identifiers and query; the rest is the body. Returns the status.
    /// Panics on a 500 (a request the API failed to judge).
    pub fn request(&self, input: &[u8]) -> StatusCode {
        let pick = |i: usize| input.get(i).copied().unwrap_or(0);
        let body = input.get(4..).unwrap_or_default().to_vec();
        let method = METHODS[usize::from(pick(0)) % METHODS.len()].clone();
        let template = ROUTES[usize::from(pick(1)) % ROUTES.len()];
        let uuid = match pick(2) % 4 {
            0 => self.volume.to_string(),
            1 => self.snapshot.to_string(),
            2 => Uuid::nil().to_string(),
            _ => "not-a-uuid".to_owned(),
        };
        let project = if pick(2) & 0x10 == 0 {
            "default"
        } else {
            "no-such"
        };
        let (template, router, content_type) = if let Some(rest) = template.strip_prefix("ks:") {
            (rest, &self.kumoscale, "application/json")
        } else if let Some(rest) = template.strip_prefix("pvc:") {
            (rest, &self.pvc, "application/x-www-form-urlencoded")
        } else {
            (template, &self.router, "application/json")
        };
        let router = router.clone();
        let path = template
            .replace("{UUID}", &uuid)
            .replace("{projectName}", project)
            .replace("{workflowId}", &uuid)
            .replace("{id}", "x");
        let uri = format!("{path}{}", QUERIES[usize::from(pick(3)) % QUERIES.len()]);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.clone()))
            .expect("a well-formed request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let status = self.runtime.block_on(async move {
            match router.oneshot(request).await {
                Ok(response) => response.status(),
                Err(never) => match never {},
            }
        });
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri} with body {:?} answered 500",
            String::from_utf8_lossy(&body)
        );
        status
    }
}

impl Drop for RestFuzzer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
