//! `GET /api/monitoring`: how a sync pool stands, for an autoscaler deciding how many sync
//! processes to run.
//!
//! | Route                                  | Answer                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | `GET /api/monitoring?pool=NAME`        | the [`PoolStatus`] of pool `NAME` (`accounts` if omitted): accounts, unclaimed accounts, and per process identity its accounts and whether it is alive |

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use baton_core::{Backend, PoolName};
use baton_sync::{PoolStatus, pool_status};
use serde::Deserialize;

use crate::api::ApiError;

/// The pool `GET /api/monitoring` reports when no `pool` is given.
pub const DEFAULT_POOL: &str = "accounts";

/// The query of `GET /api/monitoring`.
#[derive(Debug, Deserialize)]
pub struct MonitoringQuery {
    /// The pool to report; [`DEFAULT_POOL`] if omitted.
    pub pool: Option<String>,
}

/// The monitoring routes over `backend`.
pub fn routes(backend: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/api/monitoring", get(monitoring))
        .with_state(backend)
}

/// `GET /api/monitoring`: the pool's status; `400` for an invalid pool name.
async fn monitoring(
    State(backend): State<Arc<dyn Backend>>,
    Query(query): Query<MonitoringQuery>,
) -> Result<Json<PoolStatus>, ApiError> {
    let pool = PoolName::new(query.pool.as_deref().unwrap_or(DEFAULT_POOL))?;
    Ok(Json(pool_status(&*backend, &*backend, &pool).await?))
}
