//! The DMS service key: an ECDSA P-256 key pair made on first use and kept
//! in the data directory. A managed cluster imports the public key as a
//! credential of the `system` project (type `ec256pubkey`, id the key's
//! id); the DMS then calls it with short-lived ES256 tokens naming that id.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::domain::store::write_durably;

/// The private key's file in the data directory.
const KEY_FILE: &str = "dms-service-key.pem";
/// How long a token the DMS signs stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// The credential type a cluster imports the public key as.
pub const KEY_TYPE: &str = "ec256pubkey";

/// Why the key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("DMS service key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key could not be made or parsed, or a token signed.
    #[error("DMS service key: {0}")]
    Crypto(String),
}

/// The key pair and its id.
pub struct ServiceKey {
    id: String,
    public_pem: String,
    signing: EncodingKey,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ServiceKey {
    /// Reads the key in `dir`, making it first if there is none.
    pub fn load_or_create(dir: &Path) -> Result<ServiceKey, KeyError> {
        let path = dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair =
                    rcgen::KeyPair::generate().map_err(|e| KeyError::Crypto(e.to_string()))?;
                let pem = pair.serialize_pem();
                write_durably(&path, pem.as_bytes(), 0o600).map_err(io)?;
                tracing::info!(path = %path.display(), "made the DMS service key");
                pem
            }
            Err(e) => return Err(io(e)),
        };
        let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &pair.public_key_der());
        let signing = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(ServiceKey {
            id: format!("dms-{}", &hex(digest.as_ref())[..16]),
            public_pem: pair.public_key_pem(),
            signing,
        })
    }

    /// The key's id: the credential id a cluster imports it under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key as the document hands it out: PEM, base64-encoded.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_pem.as_bytes())
    }

    /// A token for calling a managed cluster, valid for [`TOKEN_TTL`].
    pub fn token(&self) -> Result<String, KeyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = crate::auth::Claims {
            sub: "dms".to_owned(),
            iss: "keel-dms".to_owned(),
            iat: now,
            exp: now + TOKEN_TTL.as_secs(),
            roles: Vec::new(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.id.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_its_tokens_verify_as_a_system_credential() {
        let dir = tempfile::tempdir().expect("dir");
        let key = ServiceKey::load_or_create(dir.path()).expect("made");
        let again = ServiceKey::load_or_create(dir.path()).expect("read");
        assert_eq!(key.id(), again.id());
        assert_eq!(key.public_key_base64(), again.public_key_base64());
        let auth_dir = tempfile::tempdir().expect("dir");
        let auth = crate::auth::Authenticator::open(
            auth_dir.path(),
            crate::auth::AuthConfig {
                password_cost: crate::auth::PasswordCost {
                    memory_kib: 64,
                    iterations: 1,
                },
                ..crate::auth::AuthConfig::default()
            },
        )
        .expect("auth");
        let token = key.token().expect("token");
        assert!(auth.verify(&token).is_err(), "an unknown key is refused");
        auth.create_credential(key.id(), "system", KEY_TYPE, &key.public_key_base64())
            .expect("imported");
        let principal = auth.verify(&token).expect("verified");
        assert!(principal.is_cluster_admin());
    }
}
