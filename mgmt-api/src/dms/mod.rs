//! The DMS v1 facade (seed 000) over the domain service: the service
//! credentials a managed cluster imports, and attaching, listing,
//! refreshing and detaching the clusters this node's DMS manages. Attach
//! and refresh are workflows (`GET /api/v1/workflows`) whose calls to the
//! other cluster run in the background; the registry lives in the catalog
//! (`Service::attached_clusters`).
//!
//! The service key is ECDSA P-256 (`ec256pubkey` in Keel's credential
//! import), not the document's RSA: Keel clusters take either, and an EC
//! key is made from the crates in the tree. A thick clone naming an
//! attached cluster as its source or destination copies the data over
//! NVMe/TCP (`transfer`, through the `copy::BlockCopier` port).

mod clusters;
pub mod copy;
pub mod key;
pub mod peer;
pub mod transfer;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::routing::{delete, get, post};
use axum::Router;

use crate::http::AppState;
use copy::BlockCopier;
use key::{KeyError, ServiceKey};

/// The DMS's own state: where its key lives, the key once read, and how
/// it copies data between clusters.
#[derive(Debug)]
pub struct Dms {
    dir: PathBuf,
    key: OnceLock<Arc<ServiceKey>>,
    copier: Option<Arc<dyn BlockCopier>>,
}

impl Dms {
    /// A DMS whose key lives in `dir` (made on first use), copying between
    /// clusters through `copier` (`None`: such clones are refused).
    pub fn new(dir: PathBuf, copier: Option<Arc<dyn BlockCopier>>) -> Dms {
        Dms {
            dir,
            key: OnceLock::new(),
            copier,
        }
    }

    /// What copies data between clusters, if anything does here.
    pub fn copier(&self) -> Option<Arc<dyn BlockCopier>> {
        self.copier.clone()
    }

    /// The service key, read or made on first use.
    pub fn key(&self) -> Result<Arc<ServiceKey>, KeyError> {
        if let Some(key) = self.key.get() {
            return Ok(key.clone());
        }
        let key = Arc::new(ServiceKey::load_or_create(&self.dir)?);
        Ok(self.key.get_or_init(|| key).clone())
    }
}

/// The facade's routes, to merge into the main router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/service-credentials", get(clusters::credentials))
        .route(
            "/api/v1/clusters",
            get(clusters::list).post(clusters::attach),
        )
        .route("/api/v1/clusters/refresh", post(clusters::refresh))
        .route("/api/v1/clusters/{cid}", delete(clusters::detach))
}
