//! What the dashboard reads besides the jobs API: every queue with its counts, the job totals
//! over the last hour (sampled by [`crate::upkeep`]), and each claim pool with the changes of
//! its claims per owner as this server saw them (its rebalance history).
//!
//! | Route                                  | Answer                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | `GET /api/v1/queues?after=&limit=`     | a [`QueueList`]: each queue's counts and whether it is paused, by name |
//! | `GET /api/v1/stats`                    | a [`Stats`]: job totals every [`SAMPLE_INTERVAL`] over the last hour |
//! | `GET /api/v1/pools`                    | each configured claim pool's [`PoolReport`]     |
//! | `GET /api/v1/tasks`                    | each [`TaskView`] recorded in this host's task directory (`[tasks] dir`) |
//! | `GET /api/v1/tasks/{id}/log`           | the last [`LOG_TAIL_BYTES`] of a task's log, as text |

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use baton_core::{Backend, PoolName, QueueCounts, QueueName, Timestamp};
use baton_sync::PoolStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiPath, ApiQuery};
use crate::tasks::{StoredTask, stored_task, tasks_in};
use crate::wire::ErrorKind;

/// How much of the end of a task's log `GET /api/v1/tasks/{id}/log` returns.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// How often job totals are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// How many samples are kept: an hour's worth.
pub const SAMPLES_KEPT: usize = 360;

/// How many claim changes are kept per pool.
pub const CHANGES_KEPT: usize = 100;

/// The most queues [`Observed::sample`] adds up, and the most one page of `GET /api/v1/queues`
/// holds.
pub const MAX_QUEUES: usize = baton_core::MAX_QUEUE_LIST;

/// What the server has observed over time, shared between the upkeep loop and the API.
#[derive(Debug, Default)]
pub struct Observed {
    samples: Mutex<VecDeque<Sample>>,
    pools: Mutex<BTreeMap<PoolName, PoolReport>>,
}

/// Job totals over every queue at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    /// When, by this server's clock.
    #[schema(value_type = i64)]
    pub at: Timestamp,
    /// Jobs waiting.
    pub pending: u64,
    /// Jobs running.
    pub running: u64,
    /// Jobs succeeded and not yet purged.
    pub succeeded: u64,
    /// Jobs failed and not yet purged.
    pub failed: u64,
    /// Jobs canceled and not yet purged.
    pub canceled: u64,
}

/// The answer of `GET /api/v1/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// The samples, oldest first. Throughput is the rise of `succeeded + failed` from one to the
    /// next (a purge of finished jobs can make it fall: read a fall as no data).
    pub samples: Vec<Sample>,
}

/// A claim pool as `GET /api/v1/pools` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolReport {
    /// How the pool stands now.
    #[schema(value_type = Object)]
    pub status: PoolStatus,
    /// The changes of its claims per owner, oldest first, the last [`CHANGES_KEPT`].
    pub history: Vec<ClaimChange>,
}

/// The accounts per owner of a pool changed between two looks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimChange {
    /// When it was seen, by this server's clock.
    #[schema(value_type = i64)]
    pub at: Timestamp,
    /// Each owner whose count changed: its accounts before and after.
    pub owners: Vec<OwnerChange>,
}

/// One owner's accounts before and after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OwnerChange {
    /// The owner (a sync process's identity).
    pub owner: String,
    /// Accounts it held before.
    pub before: usize,
    /// Accounts it holds now.
    pub after: usize,
}

impl Observed {
    /// Records job totals at this moment, dropping samples older than an hour.
    pub fn push_sample(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().copied().collect()
    }

    /// Records how `status`'s pool stands now, adding a change to its history if its accounts
    /// per owner differ from the last look.
    pub fn push_pool(&self, status: PoolStatus) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let after = held(&status);
        let report = pools
            .entry(status.pool.clone())
            .or_insert_with(|| PoolReport {
                status: status.clone(),
                history: Vec::new(),
            });
        let before = held(&report.status);
        let owners: Vec<OwnerChange> = before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|owner| {
                let (was, is) = (
                    before.get(owner).copied().unwrap_or(0),
                    after.get(owner).copied().unwrap_or(0),
                );
                (was != is).then(|| OwnerChange {
                    owner: owner.clone(),
                    before: was,
                    after: is,
                })
            })
            .collect();
        if !owners.is_empty() {
            if report.history.len() == CHANGES_KEPT {
                report.history.remove(0);
            }
            report.history.push(ClaimChange { at: now(), owners });
        }
        report.status = status;
    }

    /// Every pool seen, by name.
    pub fn pools(&self) -> Vec<PoolReport> {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.values().cloned().collect()
    }

    /// Adds up the counts of every queue (the first [`MAX_QUEUES`]) into a sample and keeps it.
    /// A queue whose counts cannot be read is left out of this sample.
    pub async fn sample(&self, backend: &dyn Backend) {
        let queues = match backend.queues(None, MAX_QUEUES).await {
            Ok(queues) => queues,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the queues");
                return;
            }
        };
        let mut total = QueueCounts::default();
        for queue in &queues {
            if let Ok(counts) = backend.counts(queue).await {
                total.pending += counts.pending;
                total.running += counts.running;
                total.succeeded += counts.succeeded;
                total.failed += counts.failed;
                total.canceled += counts.canceled;
            }
        }
        self.push_sample(Sample {
            at: now(),
            pending: total.pending,
            running: total.running,
            succeeded: total.succeeded,
            failed: total.failed,
            canceled: total.canceled,
        });
    }
}

/// How many accounts each owner of a pool holds, owners holding none left out.
pub fn held(status: &PoolStatus) -> BTreeMap<String, usize> {
    status
        .identities
        .iter()
        .filter(|identity| identity.accounts > 0)
        .map(|identity| (identity.identity.to_string(), identity.accounts))
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// What the routes read besides the backend.
#[derive(Clone, Debug)]
pub struct Insight {
    /// What the upkeep loop gathered over time.
    pub observed: Arc<Observed>,
    /// The task directory of `baton task run` on this host.
    pub task_dir: PathBuf,
}

impl Insight {
    /// What `observed` holds, and the tasks recorded in `task_dir`.
    pub fn new(observed: Arc<Observed>, task_dir: PathBuf) -> Self {
        Self { observed, task_dir }
    }
}

/// What the routes share.
#[derive(Clone)]
struct InsightState {
    backend: Arc<dyn Backend>,
    insight: Insight,
}

/// The routes of this module over `backend` and `insight`.
pub fn routes(backend: Arc<dyn Backend>, insight: Insight) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(queues))
        .routes(routes!(stats))
        .routes(routes!(pools))
        .routes(routes!(tasks))
        .routes(routes!(task_log))
        .with_state(InsightState { backend, insight })
}

/// The query of `GET /api/v1/queues`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueuesQuery {
    /// Only queues after this name (the `next` of the page before).
    pub after: Option<String>,
    /// The most queues to list, 1 to 1000; 100 if omitted.
    pub limit: Option<usize>,
}

/// One queue in a [`QueueList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueSummary {
    /// The queue's name.
    pub queue: String,
    /// Jobs per state.
    #[schema(value_type = Object)]
    pub counts: QueueCounts,
    /// Whether its jobs are held back from workers.
    pub paused: bool,
}

/// The answer of `GET /api/v1/queues`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// The queues, by name.
    pub queues: Vec<QueueSummary>,
    /// The `after` of the next page, if there may be one.
    pub next: Option<String>,
}

/// `GET /api/v1/queues`: each queue that holds jobs or is paused, with its counts, by name.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues", params(QueuesQuery),
    responses(
        (status = 200, description = "The queues, by name, each with its counts per state and whether it is paused; `next` is the `after` of the next page", body = QueueList),
        (status = 400, description = "An invalid name or limit", body = crate::wire::ErrorBody),
    ))]
async fn queues(
    State(state): State<InsightState>,
    ApiQuery(query): ApiQuery<QueuesQuery>,
) -> Result<Json<QueueList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    let after = query.after.as_deref().map(QueueName::new).transpose()?;
    let names = state.backend.queues(after.as_ref(), limit).await?;
    let paused = state.backend.paused().await?;
    let mut queues = Vec::with_capacity(names.len());
    for queue in &names {
        queues.push(QueueSummary {
            queue: queue.to_string(),
            counts: state.backend.counts(queue).await?,
            paused: paused.contains(queue),
        });
    }
    let next = (names.len() == limit)
        .then(|| names.last().map(ToString::to_string))
        .flatten();
    Ok(Json(QueueList { queues, next }))
}

/// `GET /api/v1/stats`: job totals over every queue, sampled over the last hour.
#[utoipa::path(get, path = "/api/v1/stats", tag = "queues",
    responses((status = 200, description = "Job totals per state every `interval_seconds`, oldest first, over the last hour", body = Stats)))]
async fn stats(State(state): State<InsightState>) -> Json<Stats> {
    Json(Stats {
        interval_seconds: SAMPLE_INTERVAL.as_secs(),
        samples: state.insight.observed.samples(),
    })
}

/// `GET /api/v1/pools`: each claim pool this server looks after, with its recent changes.
#[utoipa::path(get, path = "/api/v1/pools", tag = "claims",
    responses((status = 200, description = "Each pool of `[sync] pools`: accounts, unclaimed accounts, each owner's accounts and liveness, and the changes of accounts per owner this server saw (its rebalance history)", body = Vec<PoolReport>)))]
async fn pools(State(state): State<InsightState>) -> Json<Vec<PoolReport>> {
    Json(state.insight.observed.pools())
}

/// A task as `GET /api/v1/tasks` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// Its record: id, command, locks, reason, state, process, exit, times, log path, and the
    /// runner's pid and lock owner.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub task: StoredTask,
    /// Whether it has not ended but its runner is gone (the host restarted, or the runner was
    /// killed).
    pub orphaned: bool,
}

/// `GET /api/v1/tasks`: the tasks recorded in this host's task directory, oldest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "locks",
    responses(
        (status = 200, description = "The tasks `baton task run` recorded in `[tasks] dir` on this host, oldest first", body = Vec<TaskView>),
        (status = 500, description = "The task directory cannot be read", body = crate::wire::ErrorBody),
    ))]
async fn tasks(State(state): State<InsightState>) -> Result<Json<Vec<TaskView>>, ApiError> {
    let dir = state.insight.task_dir.clone();
    let tasks = tokio::task::spawn_blocking(move || tasks_in(&dir))
        .await
        .map_err(|e| internal(&e.to_string()))?
        .map_err(|e| internal(&format!("{e:#}")))?;
    Ok(Json(
        tasks
            .into_iter()
            .map(|task| TaskView {
                orphaned: task.orphaned(),
                task,
            })
            .collect(),
    ))
}

/// `GET /api/v1/tasks/{id}/log`: the end of a task's log.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/log", tag = "locks",
    params(("id" = u64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The last 64 KiB of the task's log (its output and error), as text", body = String, content_type = "text/plain"),
        (status = 404, description = "No such task on this host", body = crate::wire::ErrorBody),
    ))]
async fn task_log(
    State(state): State<InsightState>,
    ApiPath(id): ApiPath<u64>,
) -> Result<impl IntoResponse, ApiError> {
    let dir = state.insight.task_dir.clone();
    let text = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let task = stored_task(&dir, id).map_err(|e| {
            ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, format!("{e:#}"))
        })?;
        // `baton task run` writes the log beside the record; its recorded path is relative to
        // where the runner ran, which need not be where this server runs.
        let log = match task.record.log_path.file_name() {
            Some(name) => dir.join(name),
            None => task.record.log_path.clone(),
        };
        Ok(tail(&log, LOG_TAIL_BYTES))
    })
    .await
    .map_err(|e| internal(&e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// The last `bytes` of the file at `path` as text (lossily decoded); empty if it cannot be read
/// (a task that has not written its log yet).
fn tail(path: &std::path::Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(bytes)));
    let mut content = Vec::new();
    let _ = file.take(bytes).read_to_end(&mut content);
    String::from_utf8_lossy(&content).into_owned()
}

fn internal(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Backend,
        message.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use baton_core::Owner;
    use baton_sync::IdentityStatus;

    use super::*;

    fn status(held: &[(&str, usize)]) -> PoolStatus {
        PoolStatus {
            pool: PoolName::new("accounts").unwrap(),
            accounts: 6,
            unclaimed: 6 - held.iter().map(|(_, n)| n).sum::<usize>(),
            identities: held
                .iter()
                .map(|(owner, accounts)| IdentityStatus {
                    identity: Owner::new(*owner).unwrap(),
                    accounts: *accounts,
                    alive: true,
                    last_heartbeat: None,
                    heartbeat_expires_at: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_pool_s_history_records_each_change_of_accounts_per_owner() {
        let observed = Observed::default();
        observed.push_pool(status(&[("a", 6)]));
        observed.push_pool(status(&[("a", 6)]));
        assert!(observed.pools()[0].history.is_empty(), "no change yet");
        // b joins and takes half; then a leaves.
        observed.push_pool(status(&[("a", 3), ("b", 3)]));
        observed.push_pool(status(&[("b", 6)]));
        let history = &observed.pools()[0].history;
        let changes: Vec<Vec<(&str, usize, usize)>> = history
            .iter()
            .map(|change| {
                change
                    .owners
                    .iter()
                    .map(|o| (o.owner.as_str(), o.before, o.after))
                    .collect()
            })
            .collect();
        assert_eq!(
            changes,
            [
                vec![("a", 6, 3), ("b", 0, 3)],
                vec![("a", 3, 0), ("b", 3, 6)]
            ]
        );
    }

    #[test]
    fn history_and_samples_keep_only_their_last_entries() {
        let observed = Observed::default();
        for n in 0..=CHANGES_KEPT {
            observed.push_pool(status(&[("a", n % 2 + 1)]));
        }
        assert_eq!(observed.pools()[0].history.len(), CHANGES_KEPT);
        for n in 0..SAMPLES_KEPT as i64 + 5 {
            observed.push_sample(Sample {
                at: Timestamp::from_millis(n),
                pending: 0,
                running: 0,
                succeeded: 0,
                failed: 0,
                canceled: 0,
            });
        }
        let samples = observed.samples();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(
            samples[0].at,
            Timestamp::from_millis(5),
            "the oldest went first"
        );
    }
}
