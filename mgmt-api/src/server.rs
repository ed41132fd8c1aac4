//! The entry point: [`ApiServer::bind`] opens the domain service and the
//! authenticator in the data dir, sets up TLS, binds the listener and serves on
//! the caller's tokio runtime until [`ApiServer::shutdown`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use tokio::task::JoinHandle;

use crate::auth::{AuthConfig, AuthError, Authenticator};
use crate::control::Control;
use crate::domain::catalog_store::CatalogStore;
use crate::domain::{OpenError, Service, ServiceConfig};
use crate::http::{router, AppState};
use crate::tls::{self, TlsError};

/// Default largest request body (1 MiB); larger bodies get 413.
pub const BODY_LIMIT_DEFAULT_BYTES: usize = 1 << 20;
/// How long shutdown waits for in-flight requests.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(5);

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// HTTPS with a self-signed certificate made on first start in the data dir
    /// (`tls-cert.pem`, `tls-key.pem`). The default.
    SelfSigned {
        /// DNS names and IP addresses the certificate names.
        subject_alt_names: Vec<String>,
    },
    /// HTTPS with a configured certificate chain and private key (PEM files).
    Files {
        /// Certificate chain.
        cert_pem: PathBuf,
        /// Private key.
        key_pem: PathBuf,
    },
    /// Plain HTTP. Only on explicit configuration: tokens travel in the clear.
    PlainHttp,
}

impl Default for TlsMode {
    fn default() -> Self {
        Self::SelfSigned {
            subject_alt_names: vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ],
        }
    }
}

/// Everything the API server needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address to listen on (use port 0 for an ephemeral port).
    pub listen: SocketAddr,
    /// Directory for the catalog, users, token secret, admin password and TLS files.
    pub data_dir: PathBuf,
    /// TLS mode (self-signed HTTPS by default).
    pub tls: TlsMode,
    /// Authentication settings (`auth.disabled` only for tests and development).
    pub auth: AuthConfig,
    /// Domain-service tunables (max replicas, max running workflows).
    pub service: ServiceConfig,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// `host:port` reported as the API endpoint (default: the bound address).
    pub advertised_endpoint: Option<String>,
    /// Where to serve the KumoScale Provisioner dialect (its paths sit at
    /// the root, so it has a listener of its own); `None`: not served.
    pub kumoscale_listen: Option<SocketAddr>,
    /// Where to serve the PVC storage dialect (its `/api/v1` paths would
    /// collide with DMS's on the main listener); `None`: not served.
    pub pvc_listen: Option<SocketAddr>,
    /// Let the Cinder dialect take `X-Auth-Token: user:project` (Cinder's
    /// noauth mode: every such caller is an administrator).
    pub cinder_noauth: bool,
    /// What copies data for thick clones between clusters (this node as an
    /// NVMe/TCP host); `None`: such clones are refused.
    pub block_copier: Option<Arc<dyn crate::dms::copy::BlockCopier>>,
    /// Where the domain catalog lives: `None` is `catalog.json` in
    /// `data_dir`; a cluster passes the store every node's API shares.
    pub catalog_store: Option<Arc<dyn CatalogStore>>,
}

impl ApiConfig {
    /// Defaults: HTTPS with a self-signed certificate, auth on, 1 MiB bodies.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            tls: TlsMode::default(),
            auth: AuthConfig::default(),
            service: ServiceConfig::default(),
            body_limit_bytes: BODY_LIMIT_DEFAULT_BYTES,
            advertised_endpoint: None,
            kumoscale_listen: None,
            pvc_listen: None,
            cinder_noauth: false,
            block_copier: None,
            catalog_store: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir could not be created.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The domain service could not open.
    #[error(transparent)]
    Service(#[from] OpenError),
    /// The authenticator could not open.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the listener failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A startup task panicked.
    #[error("startup task failed: {0}")]
    Task(String),
}

/// A dialect served on a listener of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    KumoScale,
    Pvc,
}

/// A running API server.
pub struct ApiServer {
    local_addr: SocketAddr,
    scheme: &'static str,
    certificate: Option<PathBuf>,
    handle: Handle,
    task: JoinHandle<std::io::Result<()>>,
    /// The dialects on listeners of their own: which, where, and the server.
    dialects: Vec<(Dialect, SocketAddr, JoinHandle<std::io::Result<()>>)>,
    service: Arc<Service>,
    auth: Arc<Authenticator>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("local_addr", &self.local_addr)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Opens the state in `config.data_dir`, reconciles with `control`, binds and
    /// starts serving on the current tokio runtime (must be called inside one).
    /// Returns once the listener is bound; see [`ApiServer::local_addr`].
    pub async fn bind(config: ApiConfig, control: Arc<dyn Control>) -> Result<Self, StartError> {
        let setup = config.clone();
        let (service, auth, tls) = tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            create_private_dir(&setup.data_dir)?;
            let service = match &setup.catalog_store {
                Some(store) => {
                    Service::open_with_store(store.clone(), control, setup.service.clone())?
                }
                None => Service::open(&setup.data_dir, control, setup.service.clone())?,
            };
            let auth = Authenticator::open(&setup.data_dir, setup.auth.clone())?;
            let tls = match &setup.tls {
                TlsMode::PlainHttp => None,
                TlsMode::SelfSigned { subject_alt_names } => {
                    let (cert, key) = tls::ensure_self_signed(&setup.data_dir, subject_alt_names)?;
                    Some((tls::server_config(&cert, &key)?, cert))
                }
                TlsMode::Files { cert_pem, key_pem } => {
                    Some((tls::server_config(cert_pem, key_pem)?, cert_pem.clone()))
                }
            };
            Ok((Arc::new(service), Arc::new(auth), tls))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
        if config.cinder_noauth {
            tracing::warn!("the Cinder dialect takes noauth tokens (user:project): every such caller is an administrator");
        }
        if auth.disabled() {
            tracing::warn!(
                "API authentication is DISABLED by configuration; every caller is a cluster admin"
            );
        }
        let listener = bind_listener(config.listen)?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let state = AppState {
            service: Arc::clone(&service),
            auth: Arc::clone(&auth),
            api_endpoint: config
                .advertised_endpoint
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            body_limit_bytes: config.body_limit_bytes,
            rest_metrics: Default::default(),
            cinder_noauth: config.cinder_noauth,
            dms: Arc::new(crate::dms::Dms::new(
                config.data_dir.clone(),
                config.block_copier.clone(),
            )),
        };
        let rustls = tls
            .as_ref()
            .map(|(server_config, _)| RustlsConfig::from_config(server_config.clone()));
        let certificate = tls.map(|(_, cert)| cert);
        let scheme = if rustls.is_some() { "https" } else { "http" };
        if rustls.is_none() {
            tracing::warn!(%local_addr, "serving the API over plain HTTP by configuration");
        }
        let handle = Handle::new();
        let task = spawn_server(listener, router(state.clone()), rustls.clone(), &handle);
        let mut dialects = Vec::new();
        for (dialect, addr) in [
            (Dialect::KumoScale, config.kumoscale_listen),
            (Dialect::Pvc, config.pvc_listen),
        ] {
            let Some(addr) = addr else { continue };
            let listener = bind_listener(addr)?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            tracing::info!(local_addr = %local, scheme, dialect = ?dialect, "dialect API listening");
            let routes = match dialect {
                Dialect::KumoScale => crate::kumoscale::router(state.clone()),
                Dialect::Pvc => crate::pvc::router(state.clone()),
            };
            let task = spawn_server(listener, routes, rustls.clone(), &handle);
            dialects.push((dialect, local, task));
        }
        tracing::info!(%local_addr, scheme, "management API listening");
        Ok(Self {
            local_addr,
            scheme,
            certificate,
            handle,
            task,
            dialects,
            service,
            auth,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The KumoScale dialect's bound address, when served.
    pub fn kumoscale_addr(&self) -> Option<SocketAddr> {
        self.dialect_addr(Dialect::KumoScale)
    }

    /// The PVC dialect's bound address, when served.
    pub fn pvc_addr(&self) -> Option<SocketAddr> {
        self.dialect_addr(Dialect::Pvc)
    }

    fn dialect_addr(&self, which: Dialect) -> Option<SocketAddr> {
        self.dialects
            .iter()
            .find(|(d, _, _)| *d == which)
            .map(|(_, addr, _)| *addr)
    }

    /// `https://ip:port` (or `http://` in plain mode).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// The certificate file clients may pin (None in plain HTTP mode).
    pub fn certificate_path(&self) -> Option<&std::path::Path> {
        self.certificate.as_deref()
    }

    /// The domain service (for in-process callers and tests).
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The authenticator (for in-process callers and tests: `hash_stats`).
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Stops accepting, lets in-flight requests finish (5 s at most), stops the
    /// background worker, and returns.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
        let tasks = std::iter::once(self.task).chain(self.dialects.into_iter().map(|(_, _, t)| t));
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "API server ended with an error"),
                Err(e) => tracing::error!(error = %e, "API server task failed"),
            }
        }
        let service = self.service;
        let _ = tokio::task::spawn_blocking(move || service.shutdown()).await;
    }
}

/// Binds a non-blocking listener for the servers.
fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StartError::Bind { addr, source })
}

/// Serves `app` on `listener` (over TLS when `rustls` is given), stopped
/// through `handle`; the client's address rides along with each request
/// for login throttling.
fn spawn_server(
    listener: std::net::TcpListener,
    app: axum::Router,
    rustls: Option<RustlsConfig>,
    handle: &Handle,
) -> JoinHandle<std::io::Result<()>> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match rustls {
        Some(config) => {
            let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
    }
}

fn create_private_dir(path: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StartError::DataDir {
            path: path.to_path_buf(),
            source,
        })
}
