//! Request extractors that turn every malformed input into an [`ApiError`] with a
//! JSON body: the caller's identity, path and query parameters, and the body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::auth::{AuthError, Principal};

/// The authenticated caller (401 if the bearer token is missing or invalid).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.auth.disabled() {
            return Ok(Self(Principal::anonymous_admin()));
        }
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            AuthError::Unauthenticated("missing Authorization: Bearer <token> header".to_owned())
        })?;
        let value = value.to_str().map_err(|_| {
            AuthError::Unauthenticated("the Authorization header is not ASCII".to_owned())
        })?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(AuthError::Unauthenticated(
                    "expected Authorization: Bearer <token>".to_owned(),
                )
                .into())
            }
        };
        Ok(Self(state.auth.verify(token)?))
    }
}

/// The address of the client's end of the connection, where the server
/// records it (`ApiServer` does; a router driven without a listener does not).
/// Login failures are counted per address (`auth::gate`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// Path parameters by name (400 on undecodable segments).
#[derive(Debug, Clone)]
pub struct PathParams(pub HashMap<String, String>);

impl FromRequestParts<AppState> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(m)| Self(m))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))
    }
}

impl PathParams {
    /// The project a project-scoped route (`/api/v2/projects/{projectName}/...`)
    /// names; `None` on the seed's unscoped routes.
    pub fn project(&self) -> Option<String> {
        self.0.get("projectName").cloned()
    }

    /// A path parameter (routes guarantee its presence; absence is a 400).
    pub fn get(&self, name: &str) -> Result<&str, ApiError> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::BadRequest(format!("missing path parameter {name}")))
    }
}

/// Query parameters by name; the last occurrence wins.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl FromRequestParts<AppState> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v.into_iter().collect()))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

impl QueryParams {
    /// A parameter's value if present and non-empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The first of several spellings present (`name` / `Name`).
    pub fn any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.text(n))
    }

    /// A resource name given under the first present of `names` (`name` /
    /// `Name`); 400 unless it follows the name rule, since no resource can
    /// carry a name that breaks it.
    pub fn name(&self, names: &[&str]) -> Result<Option<String>, ApiError> {
        let Some(name) = self.any(names) else {
            return Ok(None);
        };
        crate::domain::rules::check_name(names.first().copied().unwrap_or("name"), name)
            .map_err(ApiError::BadRequest)?;
        Ok(Some(name.to_owned()))
    }

    /// A UUID parameter (400 if malformed).
    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.text(name).map(|s| parse_uuid(name, s)).transpose()
    }

    /// A boolean parameter (400 if malformed).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Some(true)),
            Some(s) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(Some(false)),
            Some(s) => Err(ApiError::BadRequest(format!(
                "{name}={s:?} is not true or false"
            ))),
        }
    }

    /// A non-negative integer parameter (400 if malformed).
    pub fn count(&self, name: &str) -> Result<Option<usize>, ApiError> {
        self.text(name)
            .map(|s| {
                s.parse::<usize>().map_err(|_| {
                    ApiError::BadRequest(format!("{name}={s:?} is not a non-negative integer"))
                })
            })
            .transpose()
    }
}

/// Parses a UUID argument with a clear message.
pub fn parse_uuid(what: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::BadRequest(format!("{what} {:?} is not a valid UUID", truncate(text)))
    })
}

/// Shortens user input quoted in messages.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// The raw body, size-limited (413 past the limit).
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.body_limit_bytes;
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {e}"))
                }
            })
    }
}

impl Body {
    /// Decodes a mandatory JSON body, which must be an object: serde would
    /// also fill a struct from an array of its fields in order, a shape no
    /// client of this API sends on purpose. Errors name the offending field's
    /// path (`dst.size: ...`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        match self.0.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Err(ApiError::BadRequest(
                "the request body is empty; a JSON object is expected".to_owned(),
            )),
            Some(b'{') => {
                let mut de = serde_json::Deserializer::from_slice(&self.0);
                let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let path = e.path().to_string();
                    let cause = e.into_inner();
                    ApiError::BadRequest(if path == "." {
                        format!("invalid JSON body: {cause}")
                    } else {
                        format!("invalid JSON body: {path}: {cause}")
                    })
                })?;
                de.end()
                    .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
                Ok(value)
            }
            Some(_) => Err(ApiError::BadRequest(
                "the request body must be a JSON object".to_owned(),
            )),
        }
    }

    /// Decodes an optional JSON body (empty means `T::default()`).
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            Ok(T::default())
        } else {
            self.json()
        }
    }
}

/// The `If-Match` header, if any.
pub fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("If-Match is not ASCII".to_owned()))
        })
        .transpose()
}

/// The ETag an update expects: the `If-Match` header or the body's `ETag`
/// field (an empty one counts as absent); both given and different is a 400.
pub fn expected_etag(
    headers: &HeaderMap,
    body_etag: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let body = body_etag.filter(|e| !e.is_empty()).map(str::to_owned);
    match (if_match(headers)?, body) {
        (Some(h), Some(b)) if h.trim_matches('"') != b.trim_matches('"') => Err(
            ApiError::BadRequest("If-Match and the body's ETag disagree".to_owned()),
        ),
        (Some(h), _) => Ok(Some(h)),
        (None, b) => Ok(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::dto::ThickCloneRequest;

    fn message(body: &str) -> String {
        match Body(Bytes::from(body.to_owned())).json::<ThickCloneRequest>() {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field_and_only_objects_are_bodies() {
        let ok = r#"{"src": {"snapId": "x"}, "dst": {"name": "d"}}"#;
        assert!(Body(Bytes::from(ok)).json::<ThickCloneRequest>().is_ok());
        assert!(
            message(r#"{"src": {"snapId": "x"}, "dst": {"name": "d", "size": [1]}}"#)
                .contains("dst.size: ")
        );
        let unknown = message(r#"{"src": {"snapId": "x", "bogus": 1}, "dst": {"name": "d"}}"#);
        assert!(
            unknown.contains("src.bogus: unknown field `bogus`"),
            "{unknown}"
        );
        assert!(message(&format!("{ok} {{}}")).contains("trailing"));
        for not_an_object in ["[]", r#"[{"snapId": "x"}, {"name": "d"}]"#, "null", "7"] {
            assert!(message(not_an_object).contains("must be a JSON object"));
        }
        assert!(message("  ").contains("empty"));
    }
}
