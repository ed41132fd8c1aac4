//! PVC's authentication over Keel's tokens: a `token` value on any request
//! (or PVC's `X-Api-Key` header), or a session opened with
//! `POST /api/v1/auth/login` and carried in the `session` cookie. A session
//! holds the token it was opened with and checks it on every request, so it
//! ends when the token expires, whatever the cookie says. With Keel's
//! authentication disabled every caller is the administrator and login and
//! logout say so, as PVC's do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use parking_lot::Mutex;

use super::reply::{done, PvcError, PvcResult};
use super::values::Values;
use super::PvcState;
use crate::auth::Principal;

/// The cookie that carries a session id.
const COOKIE: &str = "session";
/// Most sessions held at once; opening one more ends the oldest.
pub const SESSIONS_MAX: usize = 4096;
/// What PVC answers login and logout with when authentication is off
/// (its spelling).
const AUTH_DISABLED: &str = "Authentiation is disabled";

#[derive(Debug)]
struct Session {
    token: String,
    opened: Instant,
}

/// The open sessions, by id.
#[derive(Debug)]
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    /// How long a session may live (the token lifetime).
    ttl: Duration,
}

impl Sessions {
    /// An empty table whose sessions last at most `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            table: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Opens a session for `token`; returns its id.
    fn open(&self, token: String) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut table = self.table.lock();
        let ttl = self.ttl;
        table.retain(|_, s| s.opened.elapsed() < ttl);
        if table.len() >= SESSIONS_MAX {
            let oldest = table
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        table.insert(
            id.clone(),
            Session {
                token,
                opened: Instant::now(),
            },
        );
        id
    }

    /// The token of the live session `id`.
    fn token(&self, id: &str) -> Option<String> {
        let table = self.table.lock();
        table
            .get(id)
            .filter(|s| s.opened.elapsed() < self.ttl)
            .map(|s| s.token.clone())
    }

    /// Ends the session `id`.
    fn close(&self, id: &str) {
        self.table.lock().remove(id);
    }

    /// Sessions open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().len()
    }
}

/// The session id the request's cookie names.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// An authenticated PVC request: who asks, and its values.
pub struct PvcRequest {
    /// The caller.
    pub caller: Principal,
    /// Query and form values.
    pub values: Values,
}

impl PvcRequest {
    /// Fails unless the caller may read (`write`: change) `pool`'s project.
    pub fn authorize(&self, pool: &str, write: bool) -> Result<(), PvcError> {
        crate::http::volumes::authorize(&self.caller, pool, write).map_err(PvcError::from)
    }

    /// Fails unless the caller administers the cluster (pools, OSDs).
    pub fn require_admin(&self) -> Result<(), PvcError> {
        if self.caller.is_cluster_admin() {
            Ok(())
        } else {
            Err(PvcError {
                status: StatusCode::FORBIDDEN,
                message: format!("{} may not administer the cluster", self.caller.subject),
            })
        }
    }
}

/// The request's body and values, read once.
async fn read_values(req: Request, state: &PvcState) -> Result<(HeaderMap, Values), PvcError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(|e| PvcError {
            status: e.status(),
            message: format!("could not read the request body: {}", e.body_text()),
        })?;
    let values = Values::parse(parts.uri.query(), content_type.as_deref(), &bytes);
    Ok((parts.headers, values))
}

impl FromRequest<PvcState> for PvcRequest {
    type Rejection = PvcError;

    async fn from_request(req: Request, state: &PvcState) -> Result<Self, PvcError> {
        let (headers, values) = read_values(req, state).await?;
        let auth = &state.app.auth;
        if auth.disabled() {
            return Ok(PvcRequest {
                caller: Principal::anonymous_admin(),
                values,
            });
        }
        let session = session_id(&headers).and_then(|id| state.sessions.token(&id));
        if let Some(caller) = session.and_then(|token| auth.verify(&token).ok()) {
            return Ok(PvcRequest { caller, values });
        }
        let token = values.text("token").map(str::to_owned).or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        match token {
            None => Err(PvcError::unauthorized("Authentication required")),
            Some(token) => auth
                .verify(token.trim())
                .map(|caller| PvcRequest { caller, values })
                .map_err(|_| PvcError::unauthorized("Authentication failed")),
        }
    }
}

/// `GET /api/v1/auth/login`: a form that posts a token.
pub(super) async fn login_form(State(state): State<PvcState>) -> Response {
    if state.app.auth.disabled() {
        return done(AUTH_DISABLED);
    }
    Html(
        "<form method=\"post\"><p>Enter your authentication token: \
         <input type=\"text\" name=\"token\" style=\"width:24em\"> \
         <input type=\"submit\" value=\"Login\"></p></form>\n",
    )
    .into_response()
}

/// `POST /api/v1/auth/login`: opens a session for a valid token.
pub(super) async fn login(State(state): State<PvcState>, req: Request) -> PvcResult {
    if state.app.auth.disabled() {
        return Ok(done(AUTH_DISABLED));
    }
    let (_, values) = read_values(req, &state).await?;
    let token = values
        .required("token", "A token must be specified.")?
        .trim()
        .to_owned();
    state
        .app
        .auth
        .verify(&token)
        .map_err(|_| PvcError::unauthorized("Authentication failed"))?;
    let id = state.sessions.open(token);
    let mut response = done("Authentication successful; a session is open.");
    let cookie = format!("{COOKIE}={id}; Path=/api/v1; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `GET|POST /api/v1/auth/logout`: ends the request's session, if any.
pub(super) async fn logout(State(state): State<PvcState>, headers: HeaderMap) -> Response {
    if state.app.auth.disabled() {
        return done(AUTH_DISABLED);
    }
    if let Some(id) = session_id(&headers) {
        state.sessions.close(&id);
    }
    let mut response = done("The session is closed.");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("session=; Path=/api/v1; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_with_their_lifetime_and_the_table_is_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.open("t0".to_owned());
        assert_eq!(sessions.token(&first).as_deref(), Some("t0"));
        for i in 1..=SESSIONS_MAX {
            sessions.open(format!("t{i}"));
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
        assert_eq!(sessions.token(&first), None, "the oldest session made room");
        let expired = Sessions::new(Duration::ZERO);
        let id = expired.open("t".to_owned());
        assert_eq!(expired.token(&id), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=abc ; b=2"),
        );
        assert_eq!(session_id(&headers).as_deref(), Some("abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
