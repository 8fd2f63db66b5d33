//! [`ApiError`]: every error answer of the API, and the mapping from [`baton_core::Error`].

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::wire::{ErrorBody, ErrorKind};

/// An error answer: a status code and an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error answer with the given parts.
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: message.into(),
                kind,
            },
        }
    }

    /// A `400` for input refused before anything changed.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidInput, message)
    }

    /// The `404` for a path no route matches.
    pub fn no_such_route(method: &Method, uri: &Uri) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            format!("no such route: {method} {}", uri.path()),
        )
    }

    /// The `405` for a route that exists but not with this method.
    pub fn method_not_allowed(method: &Method, uri: &Uri) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidInput,
            format!("method {method} is not allowed on {}", uri.path()),
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl From<baton_core::Error> for ApiError {
    fn from(err: baton_core::Error) -> Self {
        use baton_core::Error;
        let (status, kind) = match &err {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, ErrorKind::InvalidInput),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            Error::Conflict(_) => (StatusCode::CONFLICT, ErrorKind::Conflict),
            Error::LeaseLost { .. } => (StatusCode::CONFLICT, ErrorKind::LeaseLost),
            Error::Backend { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Backend),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Backend),
        };
        if status.is_server_error() {
            tracing::error!(error = %err, "backend failed a request");
        }
        Self::new(status, kind, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
