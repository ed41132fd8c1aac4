//! The authenticator: persisted users and service credentials, the token secret,
//! login and bearer-token verification.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::gate::{FailureTable, HashMeter, HashPool, HashStats, Refusal};
use super::principal::{Principal, Role, SYSTEM_PROJECT};
use super::token::{self, Claims, ISSUER};
use crate::domain::store::{create_new_durably, JsonStore, StoreError};

/// File (in the data dir) holding the generated first admin password.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
/// Name of the first admin user.
pub const ADMIN_USER: &str = "admin";
const SECRET_FILE: &str = "token-secret";
const SECRET_LEN: usize = 32;
const GENERATED_PASSWORD_LEN: usize = 24;

/// Argon2id cost of new password hashes (stored hashes carry their own cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        // The argon2 crate's recommended defaults (OWASP: m=19 MiB, t=2).
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accept every request as a cluster admin. For tests and development only.
    pub disabled: bool,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Cost of new password hashes.
    pub password_cost: PasswordCost,
    /// Most password hashes running at once (each holds its memory cost).
    pub password_hashes_max: usize,
    /// Most logins waiting for a hash slot; more answer 503 at once.
    pub login_queue_max: usize,
}

/// Most password hashes at once by default: one per core, at most this many,
/// so a burst of logins holds at most 4 × 19 MiB.
const PASSWORD_HASHES_MAX_DEFAULT: usize = 4;
/// Logins that may wait for a hash slot by default (a waiting login holds no
/// hash memory, only its request).
const LOGIN_QUEUE_MAX_DEFAULT: usize = 64;

impl Default for AuthConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            disabled: false,
            token_ttl: Duration::from_secs(3600),
            password_cost: PasswordCost::default(),
            password_hashes_max: cores.clamp(1, PASSWORD_HASHES_MAX_DEFAULT),
            login_queue_max: LOGIN_QUEUE_MAX_DEFAULT,
        }
    }
}

/// Why authentication or an auth-administration call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No or malformed credentials, unknown user, wrong password, bad token.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// An argument (user name, role, key) is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The user or credential already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The user or credential does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Persisting users failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or creating a secret file failed.
    #[error("auth file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Hashing or signing failed.
    #[error("internal auth error: {0}")]
    Internal(String),
    /// This client failed to log in too often in a row; it may retry later.
    #[error(
        "resource exhausted: too many failed logins from this client; retry in {retry_after_s} s"
    )]
    LockedOut {
        /// Seconds until the lockout ends.
        retry_after_s: u64,
    },
    /// Too many logins are waiting for a password check; retry later.
    #[error("too many logins are in progress; retry shortly")]
    Overloaded,
}

impl From<Refusal> for AuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::LockedOut { retry_after } => AuthError::LockedOut {
                // Rounded up, so a client that waits as told is let in.
                retry_after_s: retry_after
                    .as_secs()
                    .saturating_add(u64::from(retry_after.subsec_nanos() > 0)),
            },
            Refusal::Overloaded => AuthError::Overloaded,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    password_hash: String,
    role: Role,
}

/// A registered public key of another service (the documents' attach flow).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CredentialRecord {
    id: String,
    project: String,
    kind: String,
    public_key_pem: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AuthFile {
    users: Vec<UserRecord>,
    credentials: Vec<CredentialRecord>,
}

/// What the API reports about a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// Key id (the JWT `kid` its tokens carry).
    pub id: String,
    /// Project whose role the credential grants (`system` = cluster admin).
    pub project: String,
    /// Key type (`rsa256pubkey` or `ec256pubkey`).
    pub kind: String,
}

/// Verifies logins and tokens; administers users and credentials.
pub struct Authenticator {
    config: AuthConfig,
    secret: Vec<u8>,
    file: Mutex<AuthFile>,
    store: JsonStore,
    hashers: HashPool,
    failures: FailureTable,
    meter: HashMeter,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("disabled", &self.config.disabled)
            .finish_non_exhaustive()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..GENERATED_PASSWORD_LEN)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

impl Authenticator {
    /// Opens the auth state in `data_dir`. On first start it creates the token
    /// secret and an `admin` user with a random password written to
    /// `<data_dir>/admin-password` (mode 0600), and logs that path.
    pub fn open(data_dir: &Path, config: AuthConfig) -> Result<Self, AuthError> {
        let secret_path = data_dir.join(SECRET_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthError::Io { path, source }
        };
        let mut fresh = [0u8; SECRET_LEN];
        rand::rngs::OsRng.fill(&mut fresh);
        create_new_durably(&secret_path, &fresh, 0o600).map_err(io(&secret_path))?;
        let secret = std::fs::read(&secret_path).map_err(io(&secret_path))?;
        if secret.len() != SECRET_LEN {
            return Err(AuthError::Internal(format!(
                "{} has an unexpected length",
                secret_path.display()
            )));
        }
        let store = JsonStore::new(data_dir.join("users.json"));
        let auth = Self {
            hashers: HashPool::new(config.password_hashes_max, config.login_queue_max).map_err(
                |e| AuthError::Internal(format!("cannot start the password threads: {e}")),
            )?,
            failures: FailureTable::default(),
            meter: HashMeter::default(),
            config,
            secret,
            file: Mutex::new(AuthFile::default()),
            store,
        };
        match auth.store.load::<AuthFile>()? {
            Some(file) => *auth.file.lock() = file,
            None => {
                let password = random_password();
                let password_path = data_dir.join(ADMIN_PASSWORD_FILE);
                let hash = auth.hash(&password)?;
                let file = AuthFile {
                    users: vec![UserRecord {
                        name: ADMIN_USER.to_owned(),
                        password_hash: hash,
                        role: Role::ClusterAdmin,
                    }],
                    credentials: Vec::new(),
                };
                // Write the password before the users file, so a crash in between
                // regenerates both instead of leaving an unknown password.
                let _ = std::fs::remove_file(&password_path);
                create_new_durably(&password_path, format!("{password}\n").as_bytes(), 0o600)
                    .map_err(io(&password_path))?;
                auth.store.save(&file)?;
                *auth.file.lock() = file;
                tracing::info!(path = %password_path.display(), user = ADMIN_USER, "generated the first admin password");
            }
        }
        Ok(auth)
    }

    /// Whether authentication is disabled.
    pub fn disabled(&self) -> bool {
        self.config.disabled
    }

    /// Lifetime of issued tokens.
    pub fn token_ttl(&self) -> Duration {
        self.config.token_ttl
    }

    fn hash(&self, password: &str) -> Result<String, AuthError> {
        let _running = self.meter.enter();
        super::password::hash(password, self.config.password_cost).map_err(AuthError::Internal)
    }

    /// Password hashes running now, at most at once, and in all.
    pub fn hash_stats(&self) -> HashStats {
        self.meter.stats()
    }

    /// Runs `work` (which may hash a password) on a password thread
    /// (`auth::gate::HashPool`); refuses at once if too many already wait.
    pub async fn with_hash_slot<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Authenticator) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let auth = Arc::clone(self);
        self.hashers.run(move || work(&auth)).await?
    }

    /// Logs in from `client` (its address, if known) within the bounds of
    /// `auth::gate`: a locked-out client is refused without a hash, others wait
    /// for a hash slot; the outcome feeds the client's failure count.
    pub async fn login_from(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        user: String,
        password: String,
    ) -> Result<String, AuthError> {
        if let Some(ip) = client {
            self.failures.check(ip, Instant::now())?;
        }
        let result = self
            .with_hash_slot(move |auth| {
                // Checked again: a burst from one client queues before its
                // failures lock it out.
                if let Some(ip) = client {
                    auth.failures.check(ip, Instant::now())?;
                }
                auth.login(&user, &password)
            })
            .await;
        if let Some(ip) = client {
            match &result {
                Ok(_) => self.failures.succeeded(ip),
                Err(AuthError::Unauthenticated(_)) => self.failures.failed(ip, Instant::now()),
                Err(_) => {}
            }
        }
        result
    }

    /// Checks a user's password and issues a token. Unbounded: network callers
    /// go through [`Authenticator::login_from`].
    pub fn login(&self, user: &str, password: &str) -> Result<String, AuthError> {
        let record = self
            .file
            .lock()
            .users
            .iter()
            .find(|u| u.name == user)
            .cloned();
        let failed = || AuthError::Unauthenticated("wrong user name or password".to_owned());
        let Some(record) = record else {
            // Spend the same work on unknown users so timing does not reveal which
            // user names exist.
            let _ = self.hash(password);
            return Err(failed());
        };
        let matches = {
            let _running = self.meter.enter();
            super::password::verify(password, &record.password_hash).map_err(AuthError::Internal)?
        };
        if !matches {
            return Err(failed());
        }
        self.issue(&record.name, &record.role)
    }

    /// Issues a token for `subject` with `role`.
    pub fn issue(&self, subject: &str, role: &Role) -> Result<String, AuthError> {
        let iat = now_s();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: ISSUER.to_owned(),
            iat,
            exp: iat.saturating_add(self.config.token_ttl.as_secs()),
            roles: vec![role.claim()],
        };
        token::sign(&self.secret, &claims).map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Verifies a bearer token: ours (HS256) or one signed by a registered
    /// credential (its `kid`), whose role is the credential's.
    pub fn verify(&self, bearer: &str) -> Result<Principal, AuthError> {
        let bad = |e: jsonwebtoken::errors::Error| {
            AuthError::Unauthenticated(format!("invalid token: {e}"))
        };
        let header = jsonwebtoken::decode_header(bearer).map_err(bad)?;
        if header.alg == Algorithm::HS256 {
            let claims = token::verify_local(&self.secret, bearer).map_err(bad)?;
            let role = claims
                .roles
                .iter()
                .find_map(|r| Role::from_claim(r))
                .ok_or_else(|| {
                    AuthError::Unauthenticated("the token carries no known role".to_owned())
                })?;
            return Ok(Principal {
                subject: claims.sub,
                role,
            });
        }
        let kid = header.kid.ok_or_else(|| {
            AuthError::Unauthenticated("a foreign token must name its key (kid)".to_owned())
        })?;
        let credential = self
            .file
            .lock()
            .credentials
            .iter()
            .find(|c| c.id == kid)
            .cloned()
            .ok_or_else(|| AuthError::Unauthenticated(format!("unknown key id {kid:?}")))?;
        let (key, alg) = decoding_key(&credential.kind, &credential.public_key_pem)?;
        if alg != header.alg {
            return Err(AuthError::Unauthenticated(
                "token algorithm does not match the registered key".to_owned(),
            ));
        }
        let claims = token::verify_foreign(&key, alg, bearer).map_err(bad)?;
        let role = if credential.project == SYSTEM_PROJECT {
            Role::ClusterAdmin
        } else {
            Role::ProjectAdmin(credential.project.clone())
        };
        Ok(Principal {
            subject: format!("{}:{}", credential.id, claims.sub),
            role,
        })
    }

    /// Adds a user.
    pub fn create_user(&self, name: &str, password: &str, role: Role) -> Result<(), AuthError> {
        crate::domain::rules::check_name("name", name).map_err(AuthError::InvalidArgument)?;
        if password.len() < 8 || password.len() > 1024 {
            return Err(AuthError::InvalidArgument(
                "password must be 8-1024 bytes".to_owned(),
            ));
        }
        let hash = self.hash(password)?;
        let mut file = self.file.lock();
        if file.users.iter().any(|u| u.name == name) {
            return Err(AuthError::AlreadyExists(format!("user {name:?}")));
        }
        let mut next = file.clone();
        next.users.push(UserRecord {
            name: name.to_owned(),
            password_hash: hash,
            role,
        });
        self.store.save(&next)?;
        *file = next;
        Ok(())
    }

    /// Registers another service's public key; tokens it signs with `kid = id`
    /// are accepted with a role in `project` (`system` = cluster admin).
    pub fn create_credential(
        &self,
        id: &str,
        project: &str,
        kind: &str,
        key: &str,
    ) -> Result<CredentialInfo, AuthError> {
        crate::domain::rules::check_name("id", id).map_err(AuthError::InvalidArgument)?;
        crate::domain::rules::check_name("projectName", project)
            .map_err(AuthError::InvalidArgument)?;
        let pem = if key.trim_start().starts_with("-----BEGIN") {
            key.to_owned()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| {
                    AuthError::InvalidArgument(
                        "key must be a PEM public key or its base64 encoding".to_owned(),
                    )
                })?;
            String::from_utf8(bytes)
                .map_err(|_| AuthError::InvalidArgument("decoded key is not PEM text".to_owned()))?
        };
        decoding_key(kind, &pem)?;
        let mut file = self.file.lock();
        if file.credentials.iter().any(|c| c.id == id) {
            return Err(AuthError::AlreadyExists(format!("credential {id:?}")));
        }
        let mut next = file.clone();
        let record = CredentialRecord {
            id: id.to_owned(),
            project: project.to_owned(),
            kind: kind.to_owned(),
            public_key_pem: pem,
        };
        next.credentials.push(record);
        self.store.save(&next)?;
        *file = next;
        Ok(CredentialInfo {
            id: id.to_owned(),
            project: project.to_owned(),
            kind: kind.to_owned(),
        })
    }

    /// Every registered credential.
    pub fn credentials(&self) -> Vec<CredentialInfo> {
        self.file
            .lock()
            .credentials
            .iter()
            .map(|c| CredentialInfo {
                id: c.id.clone(),
                project: c.project.clone(),
                kind: c.kind.clone(),
            })
            .collect()
    }

    /// Removes a credential.
    pub fn delete_credential(&self, id: &str) -> Result<(), AuthError> {
        let mut file = self.file.lock();
        if !file.credentials.iter().any(|c| c.id == id) {
            return Err(AuthError::NotFound(format!("credential {id:?}")));
        }
        let mut next = file.clone();
        next.credentials.retain(|c| c.id != id);
        self.store.save(&next)?;
        *file = next;
        Ok(())
    }
}

fn decoding_key(kind: &str, pem: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
    let bad = |e: jsonwebtoken::errors::Error| {
        AuthError::InvalidArgument(format!("invalid {kind} key: {e}"))
    };
    match kind {
        "rsa256pubkey" => Ok((
            DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(bad)?,
            Algorithm::RS256,
        )),
        "ec256pubkey" => Ok((
            DecodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?,
            Algorithm::ES256,
        )),
        other => Err(AuthError::InvalidArgument(format!(
            "credential type {other:?} is not rsa256pubkey or ec256pubkey"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> AuthConfig {
        AuthConfig {
            password_cost: PasswordCost {
                memory_kib: 64,
                iterations: 1,
            },
            ..AuthConfig::default()
        }
    }

    #[test]
    fn first_start_writes_admin_password_and_login_works() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::open(dir.path(), cheap()).unwrap();
        let path = dir.path().join(ADMIN_PASSWORD_FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let password = std::fs::read_to_string(&path).unwrap();
        let token = auth.login(ADMIN_USER, password.trim()).unwrap();
        assert_eq!(auth.verify(&token).unwrap().role, Role::ClusterAdmin);
        assert!(matches!(
            auth.login(ADMIN_USER, "wrong"),
            Err(AuthError::Unauthenticated(_))
        ));
        // A second open keeps the users and the secret: old tokens stay valid.
        drop(auth);
        let again = Authenticator::open(dir.path(), cheap()).unwrap();
        assert!(again.verify(&token).is_ok());
    }

    #[test]
    fn tampered_token_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::open(dir.path(), cheap()).unwrap();
        let token = auth.issue("u", &Role::ProjectViewer("p".into())).unwrap();
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(auth.verify(&String::from_utf8(bytes).unwrap()).is_err());
    }
}
