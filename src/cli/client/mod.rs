//! The HTTP side of keelctl: one blocking client per run that trusts keeld's
//! certificate, logs in once (HTTP Basic on `POST /login`) and sends the bearer
//! token on every call, and turns every failure into a [`ClientError`] whose
//! message says what happened and what to try.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::Duration;

mod error;

pub use error::{error_message, ClientError, Status};

use mgmt_api::dto::LoginResponse;
use reqwest::blocking::{Client as HttpClient, RequestBuilder};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Which server certificates the client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The built-in web roots only (no keeld certificate was found).
    WebRoots,
    /// The built-in web roots plus this PEM file, normally keeld's self-signed
    /// `DATA_DIR/api/tls-cert.pem`.
    Pinned(PathBuf),
    /// Any certificate (`--insecure`): the connection is encrypted but the
    /// server is not authenticated.
    AnyCertificate,
}

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A bearer token from `--token` or `keelctl login`.
    Token(String),
    /// A user and password given on the command line or in the environment.
    Password {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// The first admin's password, read from keeld's data directory.
    AdminPasswordFile {
        /// The file it was read from.
        path: PathBuf,
        /// Its content, trimmed.
        password: String,
    },
    /// Nothing: requests go without a token, which only a keeld started with
    /// `--no-auth` accepts. `searched` is where the admin password was looked for.
    Anonymous {
        /// The admin-password path that does not exist.
        searched: PathBuf,
    },
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs or error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Credentials::AdminPasswordFile { path, .. } => {
                write!(f, "AdminPasswordFile {{ path: {path:?}, .. }}")
            }
            Credentials::Anonymous { searched } => {
                write!(f, "Anonymous {{ searched: {searched:?} }}")
            }
        }
    }
}

/// Everything needed to reach keeld.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Base URL, e.g. `https://127.0.0.1:8443`.
    pub endpoint: Url,
    /// Certificates to accept.
    pub tls: TlsTrust,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Limit on each request, connection included.
    pub timeout: Duration,
}

/// A successful answer: its body as sent, decoded on demand.
#[derive(Debug, Clone)]
pub struct Reply {
    /// What was asked, for error messages (`GET /api/v2/cluster`).
    pub what: String,
    /// The success status: some operations tell outcomes apart by it (`POST
    /// /api/v2/cluster/scrub`: 202 started a pass, 200 found one running).
    pub status: StatusCode,
    /// The body exactly as received.
    pub body: String,
}

impl Reply {
    /// Decodes the body into an API type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.body).map_err(|e| ClientError::Decode {
            what: self.what.clone(),
            detail: e.to_string(),
        })
    }
}

/// A request to send: method, path segments (percent-encoded on the way),
/// query pairs, JSON body and `If-Match`.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    method: Method,
    segments: Vec<&'a str>,
    query: Vec<(&'a str, &'a str)>,
    body: Option<serde_json::Value>,
    if_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call to the path made of `segments` (`["api", "v2", "cluster"]`); a
    /// trailing empty segment gives a trailing slash.
    pub fn new(method: Method, segments: &[&'a str]) -> Call<'a> {
        Call {
            method,
            segments: segments.to_vec(),
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: &'a str, value: &'a str) -> Call<'a> {
        self.query.push((key, value));
        self
    }

    /// Sets the JSON body.
    pub fn json(mut self, body: &impl Serialize) -> Call<'a> {
        // DTOs serialize to JSON infallibly (string keys, no non-finite floats).
        self.body = serde_json::to_value(body).ok();
        self
    }

    /// Sets `If-Match`, so the server refuses with 412 if the object changed.
    pub fn if_match(mut self, etag: Option<&'a str>) -> Call<'a> {
        self.if_match = etag;
        self
    }
}

/// A logged-in (lazily) connection to keeld.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    connection: Connection,
    token: OnceCell<Option<String>>,
}

impl Client {
    /// Builds the HTTP client; no request is sent yet.
    pub fn new(connection: Connection) -> Result<Client, ClientError> {
        let mut builder = HttpClient::builder()
            .timeout(connection.timeout)
            .connect_timeout(connection.timeout)
            .user_agent(concat!("keelctl/", env!("CARGO_PKG_VERSION")));
        match &connection.tls {
            TlsTrust::WebRoots => {}
            TlsTrust::Pinned(path) => {
                let pem = std::fs::read(path).map_err(|source| ClientError::CaCertUnreadable {
                    path: path.clone(),
                    source,
                })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| {
                    ClientError::CaCertInvalid {
                        path: path.clone(),
                        source,
                    }
                })?;
                builder = builder.add_root_certificate(cert);
            }
            TlsTrust::AnyCertificate => builder = builder.danger_accept_invalid_certs(true),
        }
        let http = builder.build().map_err(ClientError::Setup)?;
        Ok(Client {
            http,
            connection,
            token: OnceCell::new(),
        })
    }

    /// Logs in with the configured user and password and returns the raw answer
    /// (`{tokenType, expiresIn, idToken}`).
    pub fn login(&self) -> Result<Reply, ClientError> {
        let (user, password) = match &self.connection.credentials {
            Credentials::Password { user, password } => (user.as_str(), password.as_str()),
            Credentials::AdminPasswordFile { password, .. } => ("admin", password.as_str()),
            Credentials::Token(_) | Credentials::Anonymous { .. } => {
                return Err(ClientError::Unauthenticated {
                    status: Status(StatusCode::UNAUTHORIZED),
                    message: "logging in needs a user and password".to_owned(),
                    hint: self.hint(),
                })
            }
        };
        let url = self.url(&["login"]);
        let request = self.http.post(url).basic_auth(user, Some(password));
        self.execute("POST /login".to_owned(), request)
    }

    /// Sends `call` with the bearer token (logging in first if needed) and
    /// returns the success body, or the error answer as a [`ClientError`].
    pub fn send(&self, call: Call<'_>) -> Result<Reply, ClientError> {
        let token = self.token()?;
        let mut url = self.url(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter());
        }
        let what = format!("{} {}", call.method, url.path());
        let mut request = self.http.request(call.method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        if let Some(etag) = call.if_match {
            request = request.header(reqwest::header::IF_MATCH, etag);
        }
        self.execute(what, request)
    }

    /// The base URL.
    pub fn endpoint(&self) -> &Url {
        &self.connection.endpoint
    }

    fn token(&self) -> Result<Option<&str>, ClientError> {
        if let Some(token) = self.token.get() {
            return Ok(token.as_deref());
        }
        let token = match &self.connection.credentials {
            Credentials::Token(t) => Some(t.clone()),
            Credentials::Anonymous { .. } => None,
            Credentials::Password { .. } | Credentials::AdminPasswordFile { .. } => {
                let login: LoginResponse = self.login()?.decode()?;
                Some(login.id_token)
            }
        };
        Ok(self.token.get_or_init(|| token).as_deref())
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.connection.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // The endpoint's own path (if any) stays in front.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn execute(&self, what: String, request: RequestBuilder) -> Result<Reply, ClientError> {
        let response = request.send().map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let body = response.text().map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return Ok(Reply { what, status, body });
        }
        let message = error_message(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthenticated {
                status: Status(status),
                message,
                hint: self.hint(),
            });
        }
        Err(ClientError::Api {
            status: Status(status),
            message,
        })
    }

    fn hint(&self) -> String {
        match &self.connection.credentials {
            Credentials::Token(_) => "hint: the --token (KEEL_TOKEN) was refused; it may have expired or come from another keeld. Get a new one with `keelctl login`, or pass --user/--password.".to_owned(),
            Credentials::Password { user, .. } => format!("hint: check the password of user {user:?} (--user/--password, KEEL_USER/KEEL_PASSWORD)."),
            Credentials::AdminPasswordFile { path, .. } => format!("hint: the admin password in {} was refused; is --data-dir the data directory of the keeld at {}? Otherwise pass --user/--password.", path.display(), self.connection.endpoint),
            Credentials::Anonymous { searched } => format!("hint: no credentials were given and {} does not exist. Pass --user/--password (KEEL_USER/KEEL_PASSWORD) or --token, or point --data-dir (KEEL_DATA_DIR) at keeld's data directory so keelctl can read api/admin-password.", searched.display()),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> ClientError {
        error::classify(&self.connection, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::Password {
            user: "admin".into(),
            password: "hunter22".into(),
        };
        assert!(!format!("{c:?}").contains("hunter22"));
        assert!(!format!("{:?}", Credentials::Token("secret-token".into())).contains("secret"));
    }

    #[test]
    fn paths_are_percent_encoded_and_keep_the_endpoint_prefix() {
        let client = Client::new(Connection {
            endpoint: Url::parse("https://127.0.0.1:8443/keel/").expect("url"),
            tls: TlsTrust::AnyCertificate,
            credentials: Credentials::Anonymous {
                searched: PathBuf::from("x"),
            },
            timeout: Duration::from_secs(1),
        })
        .expect("client");
        assert_eq!(
            client
                .url(&["api", "v2", "projects", "a/b c", "volumes", ""])
                .as_str(),
            "https://127.0.0.1:8443/keel/api/v2/projects/a%2Fb%20c/volumes/"
        );
    }
}
