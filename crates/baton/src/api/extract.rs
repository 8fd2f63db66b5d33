//! Extractors that answer bad requests with an [`ApiError`] instead of axum's plain-text
//! rejections, so every error of the API has the same JSON shape.

use std::error::Error as _;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES};
use crate::wire::ErrorKind;

/// [`axum::Json`], with its rejections turned into [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// [`axum::extract::Path`], with its rejections turned into [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

/// [`axum::extract::Query`], with its rejections turned into [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid_input(format!(
                "bad query: {}",
                rejection
                    .source()
                    .map_or_else(|| rejection.body_text(), |source| source.to_string())
            ))),
        }
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let cause = rejection
        .source()
        .map_or_else(String::new, |source| source.to_string());
    match rejection {
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::invalid_input(format!("request body is not valid json: {cause}"))
        }
        JsonRejection::JsonDataError(_) => {
            ApiError::invalid_input(format!("request body has the wrong shape: {cause}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::InvalidInput,
            "request needs the header content-type: application/json",
        ),
        rejection if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidInput,
            format!("request body is larger than the {MAX_BODY_BYTES} bytes allowed"),
        ),
        _ => ApiError::invalid_input(format!("cannot read request body: {cause}")),
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    let cause = rejection
        .source()
        .map_or_else(|| rejection.body_text(), |source| source.to_string());
    ApiError::invalid_input(format!("bad path: {cause}"))
}
