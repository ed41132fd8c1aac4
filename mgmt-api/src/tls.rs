//! TLS for the API: a configured certificate, or a self-signed one made on first
//! start and kept in the data dir (`tls-cert.pem`, `tls-key.pem` mode 0600).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::domain::store::{sync_parent, write_durably};

/// File name of the generated certificate in the data dir.
pub const SELF_SIGNED_CERT_FILE: &str = "tls-cert.pem";
/// File name of the generated private key in the data dir.
pub const SELF_SIGNED_KEY_FILE: &str = "tls-key.pem";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("TLS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("TLS file {path} is not a usable PEM {what}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Certificate or key.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(String),
    /// rustls rejected the certificate and key.
    #[error("rustls rejected the certificate: {0}")]
    Rustls(String),
}

/// Returns the paths of the self-signed certificate and key in `data_dir`,
/// generating them for `names` (DNS names or IP addresses) if absent.
pub fn ensure_self_signed(
    data_dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = data_dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = data_dir.join(SELF_SIGNED_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    // The key first: a crash between the two leaves no certificate, so the pair
    // is regenerated rather than mismatched.
    write_durably(
        &key_path,
        generated.key_pair.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(io(&key_path))?;
    let tmp = cert_path.with_extension("tmp");
    // Public, but it lives in the private data dir, whose files are all 0600.
    write_durably(&tmp, generated.cert.pem().as_bytes(), 0o600).map_err(io(&cert_path))?;
    std::fs::rename(&tmp, &cert_path).map_err(io(&cert_path))?;
    sync_parent(&cert_path).map_err(io(&cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// A rustls server configuration from PEM files (ring provider, HTTP/1.1 and h2).
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_path_buf(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_path_buf(),
            what: "certificate",
            detail: "no certificate".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| TlsError::Pem {
        path: key_path.to_path_buf(),
        what: "private key",
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
