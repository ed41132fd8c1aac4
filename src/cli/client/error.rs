//! Why a call to keeld failed: [`ClientError`], with one full sentence per
//! cause, and the sorting of transport failures into refused, TLS, timeout.

use std::path::PathBuf;

use mgmt_api::dto::ErrorBody;
use reqwest::StatusCode;

use super::{Connection, TlsTrust};

/// Why a call to keeld failed. Each message is a full sentence for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The `--cacert` file could not be read.
    #[error("cannot read the CA certificate {path}: {source}")]
    CaCertUnreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `--cacert` file is not a PEM certificate.
    #[error("{path} is not a PEM certificate: {source}")]
    CaCertInvalid {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The admin password file exists but could not be read.
    #[error("cannot read the admin password {path}: {source}")]
    AdminPasswordUnreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// Nothing listens at the endpoint.
    #[error("cannot connect to keeld at {endpoint}: connection refused. Is keeld running, and is --endpoint (KEEL_ENDPOINT) its API address?")]
    Refused {
        /// Base URL.
        endpoint: String,
    },
    /// The TLS handshake failed, usually because the certificate is not trusted.
    #[error("TLS with {endpoint} failed: {detail}. keeld's self-signed certificate is DATA_DIR/api/tls-cert.pem: pass --data-dir (KEEL_DATA_DIR) or --cacert FILE, or --insecure to skip verification{}",
        match .trusted { Some(p) => format!(" (trusted now: {})", p.display()), None => String::new() })]
    Tls {
        /// Base URL.
        endpoint: String,
        /// The TLS library's reason.
        detail: String,
        /// The pinned certificate, if any.
        trusted: Option<PathBuf>,
    },
    /// The request took longer than `--timeout`.
    #[error("keeld at {endpoint} did not answer within {seconds} s (--timeout)")]
    Timeout {
        /// Base URL.
        endpoint: String,
        /// The limit.
        seconds: u64,
    },
    /// An `http://` endpoint reached a server that speaks TLS.
    #[error("keeld at {endpoint} did not answer in plain HTTP: it serves HTTPS unless started with --insecure-http, so use an https:// --endpoint")]
    PlainHttpToTls {
        /// Base URL.
        endpoint: String,
    },
    /// Any other transport failure (DNS, reset connection, ...).
    #[error("cannot reach keeld at {endpoint}: {detail}")]
    Transport {
        /// Base URL.
        endpoint: String,
        /// The chain of causes.
        detail: String,
    },
    /// 401: the credentials or token were refused, or none were given.
    #[error("{status}: {message}\n{hint}")]
    Unauthenticated {
        /// `401 Unauthorized`.
        status: Status,
        /// The server's reason.
        message: String,
        /// What to try, depending on where the credentials came from.
        hint: String,
    },
    /// Any other error answer: the status and the server's message.
    #[error("{status}: {message}")]
    Api {
        /// The HTTP status.
        status: Status,
        /// The server's `message`, or the raw body if it sent no JSON error.
        message: String,
    },
    /// A success answer whose body is not what the API documents.
    #[error("unexpected answer from keeld to {what}: {detail}")]
    Decode {
        /// The request.
        what: String,
        /// The parse error.
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status of an error answer, if this is one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Unauthenticated { status, .. } | ClientError::Api { status, .. } => {
                Some(status.0)
            }
            _ => None,
        }
    }
}

/// An HTTP status shown as `409 Conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub StatusCode);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.canonical_reason() {
            Some(reason) => write!(f, "{} {reason}", self.0.as_u16()),
            None => write!(f, "{}", self.0.as_u16()),
        }
    }
}

/// The server's `message` from a JSON error body; otherwise the body itself
/// (shortened), or the status's reason when the body is empty.
pub fn error_message(status: StatusCode, body: &str) -> String {
    if let Ok(error) = serde_json::from_str::<ErrorBody>(body) {
        return error.message;
    }
    let text = body.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned();
    }
    const SHOWN_CHARS_MAX: usize = 300;
    match text.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Sorts a transport failure into refused, TLS, timeout or other by walking its
/// cause chain.
pub(super) fn classify(connection: &Connection, error: &reqwest::Error) -> ClientError {
    let endpoint = connection.endpoint.to_string();
    if error.is_timeout() {
        return ClientError::Timeout {
            endpoint,
            seconds: connection.timeout.as_secs(),
        };
    }
    let mut causes = Vec::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    // Bounded: cause chains are short, and a cyclic one must not hang the CLI.
    for _ in 0..16 {
        let Some(current) = source else { break };
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        causes.push(current.to_string());
        source = current.source();
    }
    if refused {
        return ClientError::Refused { endpoint };
    }
    let detail = causes.last().cloned().unwrap_or_default();
    let all = causes.join(": ").to_ascii_lowercase();
    if connection.endpoint.scheme() == "http" && all.contains("invalid http version") {
        return ClientError::PlainHttpToTls { endpoint };
    }
    let tls_markers = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "alert",
    ];
    if tls_markers.iter().any(|m| all.contains(m)) {
        let trusted = match &connection.tls {
            TlsTrust::Pinned(p) => Some(p.clone()),
            TlsTrust::WebRoots | TlsTrust::AnyCertificate => None,
        };
        return ClientError::Tls {
            endpoint,
            detail,
            trusted,
        };
    }
    ClientError::Transport {
        endpoint,
        detail: causes.join(": "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_message() {
        let body = r#"{"code":6,"message":"volume \"a\" already exists in project \"default\"","details":[]}"#;
        assert_eq!(
            error_message(StatusCode::CONFLICT, body),
            "volume \"a\" already exists in project \"default\""
        );
    }

    #[test]
    fn other_bodies_are_shown_shortened() {
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, "  "), "Bad Gateway");
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, "proxy down\n"),
            "proxy down"
        );
        let long = "x".repeat(1000);
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, &long).len(), 303);
    }

    #[test]
    fn statuses_show_code_and_reason() {
        assert_eq!(
            Status(StatusCode::NOT_IMPLEMENTED).to_string(),
            "501 Not Implemented"
        );
        assert_eq!(
            Status(StatusCode::from_u16(599).expect("valid")).to_string(),
            "599"
        );
    }
}
