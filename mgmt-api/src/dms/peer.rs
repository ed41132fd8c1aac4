//! Calls to a managed cluster's API over HTTPS. Keel clusters present
//! self-signed certificates, so the DMS trusts a cluster's certificate on
//! first use, when the cluster is attached, and pins its SHA-256 from then
//! on: a later call that meets another certificate fails.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use uuid::Uuid;

use super::key::hex;
use crate::domain::model::PeerConnection;

/// How long one call to a cluster may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the NVMe/TCP discovery endpoint may take to accept.
const DATA_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a cluster's API says about it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerCluster {
    /// Its identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Its subsystem NQN.
    #[serde(rename = "subsystemNQN")]
    pub subsystem_nqn: String,
    /// Its management endpoints.
    pub api_endpoints: Vec<String>,
    /// Its discovery endpoints.
    pub discovery_endpoints: Vec<String>,
}

/// A call's outcome when it did not answer with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError {
    /// What the failure says about the connection.
    pub connection: PeerConnection,
    /// What went wrong, for people.
    pub message: String,
}

/// Accepts the certificate `pin` names (any, when there is no pin) and
/// remembers the one it saw; signatures are checked as rustls does.
#[derive(Debug)]
struct PinnedCertificate {
    pin: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = hex(ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref()).as_ref());
        *self.seen.lock() = Some(digest.clone());
        match &self.pin {
            Some(pin) if *pin != digest => Err(rustls::Error::General(format!(
                "the cluster's certificate {digest} is not the one pinned when it was attached ({pin})"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTPS client that accepts only the certificate `pin` names (any
/// certificate without one), and the verifier that records the one seen.
fn pinned_client(
    pin: Option<String>,
) -> Result<(reqwest::Client, Arc<PinnedCertificate>), PeerError> {
    let disconnected = |message: String| PeerError {
        connection: PeerConnection::Disconnected,
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        pin,
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| disconnected(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| disconnected(format!("HTTP client setup: {e}")))?;
    Ok((client, verifier))
}

/// An HTTPS client for an attached cluster: its pinned certificate only.
pub fn client(pin: Option<String>) -> Result<reqwest::Client, PeerError> {
    pinned_client(pin).map(|(client, _)| client)
}

/// Reads a cluster's facts from `endpoint` (`host:port`) with `token`;
/// `pin` is the certificate it must present (`None` at attach). Returns
/// the facts and the certificate's SHA-256.
pub async fn read_cluster(
    endpoint: &str,
    token: &str,
    pin: Option<String>,
) -> Result<(PeerCluster, String), PeerError> {
    let disconnected = |message: String| PeerError {
        connection: PeerConnection::Disconnected,
        message,
    };
    let (client, verifier) = pinned_client(pin)?;
    let url = format!("https://{endpoint}/api/v2/cluster");
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| disconnected(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = response.text().await.unwrap_or_default();
        return Err(PeerError {
            connection: PeerConnection::Unauthorized,
            message: format!(
                "{url} refused the DMS token ({status}): import the DMS public key as a system credential first ({})",
                crate::http::extract::truncate(&body)
            ),
        });
    }
    if !status.is_success() {
        return Err(disconnected(format!("{url} answered {status}")));
    }
    let cluster: PeerCluster = response
        .json()
        .await
        .map_err(|e| disconnected(format!("{url}: not a cluster document: {e}")))?;
    if cluster.uuid.parse::<Uuid>().is_err() {
        return Err(disconnected(format!(
            "{url}: the cluster's UUID {:?} is not a UUID",
            cluster.uuid
        )));
    }
    let seen = verifier.seen.lock().clone().unwrap_or_default();
    Ok((cluster, seen))
}

/// Whether the cluster's first discovery endpoint takes a TCP connection.
pub async fn probe_data(discovery_endpoints: &[String]) -> PeerConnection {
    let Some(endpoint) = discovery_endpoints.first() else {
        return PeerConnection::Disconnected;
    };
    match tokio::time::timeout(
        DATA_PROBE_TIMEOUT,
        tokio::net::TcpStream::connect(endpoint.as_str()),
    )
    .await
    {
        Ok(Ok(_)) => PeerConnection::Connected,
        _ => PeerConnection::Disconnected,
    }
}

/// An error with its causes, which reqwest keeps in its source chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
