//! Reads every request body in full, within the body limit, before routing.
//!
//! Why: an answer given before the body was read (a 401 from the token check, a
//! 405, a malformed path) leaves the body's bytes unread on the connection. hyper
//! then closes a keep-alive connection it has already answered as reusable, and
//! the client's next request on it fails with a reset instead of an HTTP answer.
//! Reading first keeps every connection in step; the body limit bounds the cost.
//! A body that cannot be read whole (past the limit, or cut short) is answered
//! with `Connection: close`, since the rest of it stays unread.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Middleware (state: the body limit in bytes, for messages): buffers the body,
/// then passes the request on with the buffered body. The `DefaultBodyLimit`
/// layer must wrap this one; it is what enforces the limit.
pub async fn read_body_first(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let probe = Request::from_parts(parts.clone(), body);
    let error = match Bytes::from_request(probe, &()).await {
        Ok(bytes) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(limit)
        }
        Err(rejection) => ApiError::BadRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        )),
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
