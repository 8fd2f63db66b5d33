//! `GET /api/monitoring`: how a sync pool stands, for an autoscaler deciding how many sync
//! processes to run.
//!
//! | Route                                  | Answer                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | `GET /api/monitoring?pool=NAME`        | the [`PoolStatus`] of pool `NAME` (`accounts` if omitted): accounts, unclaimed accounts, and per process identity its accounts and whether it is alive |

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use baton_core::{Backend, PoolName};
use baton_sync::{PoolStatus, pool_status};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::wire::ErrorBody;

/// The pool `GET /api/monitoring` reports when no `pool` is given.
pub const DEFAULT_POOL: &str = "accounts";

/// The query of `GET /api/monitoring`.
#[derive(Debug, Deserialize)]
pub struct MonitoringQuery {
    /// The pool to report; [`DEFAULT_POOL`] if omitted.
    pub pool: Option<String>,
}

/// The monitoring routes over `backend`.
pub fn routes(backend: Arc<dyn Backend>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(monitoring))
        .with_state(backend)
}

/// `GET /api/monitoring`: the pool's status; `400` for an invalid pool name.
#[utoipa::path(get, path = "/api/monitoring", tag = "claims",
    params(("pool" = Option<String>, Query, description = "The pool to report; `accounts` if omitted")),
    responses(
        (status = 200, description = "The pool's accounts, unclaimed accounts, and each process identity's accounts and liveness", body = Object),
        (status = 400, description = "An invalid pool name", body = ErrorBody),
    ))]
async fn monitoring(
    State(backend): State<Arc<dyn Backend>>,
    Query(query): Query<MonitoringQuery>,
) -> Result<Json<PoolStatus>, ApiError> {
    let pool = PoolName::new(query.pool.as_deref().unwrap_or(DEFAULT_POOL))?;
    Ok(Json(pool_status(&*backend, &*backend, &pool).await?))
}
