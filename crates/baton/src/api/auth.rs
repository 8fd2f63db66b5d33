//! Who may call the HTTP API: a bearer token from the configuration (`api_token`).
//!
//! With a token configured, every call needs `Authorization: Bearer <api_token>` (`401` without
//! it, `403` with a wrong one), except `/healthz` and `/readyz`, which load balancers probe, the
//! dashboard's page and assets (which hold no data: the page asks for the token), and
//! reads (`GET`, `HEAD`) when `api_open_reads` is set. Without a token, the API is open, as
//! suits a server on its own host (the default `listen` is loopback); `baton serve` warns when it
//! listens elsewhere without one. The master controls refuse changes even then, as the system
//! they replace did.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::config::ApiToken;
use crate::wire::ErrorKind;

/// Paths every caller may reach: the liveness and readiness probes.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Paths whose changes need the token even when none is configured (and so are refused): the
/// master controls, as the system they replace refused them.
const ALWAYS_GUARDED: &[&str] = &["/api/mastercontrols/", "/api/v1/masters/"];

/// The API's access rule.
#[derive(Clone, Debug, Default)]
pub struct Access {
    token: Option<ApiToken>,
    open_reads: bool,
}

impl Access {
    /// Calls need `token` when one is given; reads need it too unless `open_reads`.
    #[must_use]
    pub fn new(token: Option<ApiToken>, open_reads: bool) -> Self {
        Self { token, open_reads }
    }

    /// Whether a call of `method` to `path` must present the token.
    fn needs_token(&self, method: &Method, path: &str) -> bool {
        if PUBLIC_PATHS.contains(&path) || crate::dashboard::PUBLIC_PATHS.contains(&path) {
            return false;
        }
        let reading = *method == Method::GET || *method == Method::HEAD;
        if self.token.is_none() {
            return !reading && ALWAYS_GUARDED.iter().any(|prefix| path.starts_with(prefix));
        }
        !(reading && self.open_reads)
    }
}

/// Middleware that answers `401`/`403` to a call that needs the token and lacks it.
pub async fn require(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    if access.needs_token(request.method(), request.uri().path())
        && let Err(error) = check(access.token.as_ref(), request.headers())
    {
        return error.into_response();
    }
    next.run(request).await
}

/// Checks the bearer token of a request against `configured`: `401` when the request has none,
/// `403` when it is wrong or no token is configured.
fn check(configured: Option<&ApiToken>, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "this call needs the api token: send it as \"Authorization: Bearer <token>\"",
        ));
    };
    let Some(configured) = configured else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Unauthorized,
            "no api_token is configured on this server, so calls that change state are refused",
        ));
    };
    if !constant_time_eq(presented.as_bytes(), configured.0.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Unauthorized,
            "wrong api token",
        ));
    }
    Ok(())
}

/// Compares two secrets in time that depends only on their lengths.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        let other = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret-token-123", b"s3cret-token-123"));
        assert!(!constant_time_eq(b"s3cret-token-123", b"s3cret-token-124"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token-123"));
        assert!(!constant_time_eq(b"s3cret-token-123", b""));
    }

    #[test]
    fn the_token_guards_writes_always_and_reads_unless_opened() {
        let token = Some(ApiToken("s3cret-token-123".to_owned()));
        let closed = Access::new(token.clone(), false);
        let open_reads = Access::new(token, true);
        let none = Access::new(None, false);
        for path in ["/api/v1/jobs/1", "/api/mastercontrols", "/api/monitoring"] {
            assert!(closed.needs_token(&Method::GET, path));
            assert!(!open_reads.needs_token(&Method::GET, path));
            assert!(!open_reads.needs_token(&Method::HEAD, path));
            assert!(open_reads.needs_token(&Method::POST, path));
            assert!(open_reads.needs_token(&Method::DELETE, path));
            assert!(!none.needs_token(&Method::POST, path));
        }
        assert!(none.needs_token(&Method::POST, "/api/v1/masters/m/disable"));
        assert!(none.needs_token(&Method::POST, "/api/mastercontrols/enable"));
        assert!(!none.needs_token(&Method::GET, "/api/mastercontrols"));
        for path in PUBLIC_PATHS {
            assert!(!closed.needs_token(&Method::GET, path));
        }
    }
}
