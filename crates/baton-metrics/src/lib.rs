//! Metrics for a Baton backend, in Prometheus text format.
//!
//! Wrap a backend in [`Metered`] and every call through it is timed, counted by outcome and run
//! inside a `tracing` span named `backend` (with the call's name), and the jobs it moves are
//! counted by queue: enqueued, finished by outcome, and how long each successful or failed
//! attempt ran. [`Metrics::render`] reads the current depth of every queue seen so far and
//! returns the whole set as Prometheus text for a `/metrics` route.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `baton_backend_calls_total` | `call`, `outcome` (`ok`, `error`) | backend calls |
//! | `baton_backend_call_seconds` | `call` | how long each call took (histogram) |
//! | `baton_jobs_enqueued_total` | `queue` | jobs enqueued |
//! | `baton_jobs_finished_total` | `queue`, `outcome` (`succeeded`, `failed`, `retried`, `canceled`) | attempts ended and jobs canceled |
//! | `baton_job_run_seconds` | `queue` | how long each ended attempt ran (histogram) |
//! | `baton_jobs` | `queue`, `state` | jobs in each state, read from the backend at each scrape |
//! | `baton_lock_acquires_total` | `outcome` (`granted`, `busy`) | lock acquisitions |
//! | `baton_master_leader` | `master`, `owner` | 1 for each master's current leader ([`Metrics::observe_leaders`]) |
//! | `baton_master_leader_changes_total` | `master` | times a master was seen with a new leader (another owner or a new grant) |
//! | `baton_claims` | `pool`, `owner` | items each owner holds in a claim pool ([`Metrics::set_claims`]) |
//! | `baton_claims_unclaimed` | `pool` | items of a claim pool no one holds |
//!
//! Queue labels are bounded: after [`MAX_QUEUES`] distinct queues, further ones are counted
//! under `queue="_other"`, so that a client inventing queue names cannot grow the set without
//! end.

mod metered;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use baton_core::{Job, JobState, Queue, QueueName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use metered::Metered;

/// The most distinct queues labelled by name; the rest share `queue="_other"`.
pub const MAX_QUEUES: usize = 1000;

/// The queue label of queues past [`MAX_QUEUES`].
const OTHER_QUEUE: &str = "_other";

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallName {
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueOutcome {
    queue: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MasterLabel {
    master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MasterOwner {
    master: String,
    owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolOwner {
    pool: String,
    owner: String,
}

/// A master's leader as [`Metrics::observe_leaders`] sees it: the owner and the fencing token
/// of its grant, which a new grant to the same owner changes too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leading process.
    pub owner: String,
    /// Its grant's fencing token.
    pub token: u64,
}

/// How a claim pool stands, for [`Metrics::set_claims`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolClaims {
    /// The pool.
    pub pool: String,
    /// How many items no one holds.
    pub unclaimed: u64,
    /// How many items each owner holds.
    pub held: Vec<(String, u64)>,
}

/// Buckets of call and run times: 0.5 ms to about 16 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// One process's metrics; share it (in an `Arc`) among the [`Metered`] backends it counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<CallName, Histogram, fn() -> Histogram>,
    enqueued: Family<QueueLabel, Counter>,
    finished: Family<QueueOutcome, Counter>,
    run_seconds: Family<QueueLabel, Histogram, fn() -> Histogram>,
    jobs: Family<QueueState, Gauge>,
    lock_acquires: Family<Outcome, Counter>,
    leader: Family<MasterOwner, Gauge>,
    leader_changes: Family<MasterLabel, Counter>,
    /// Each master's leader at the last look, `None` while it had none.
    leaders_seen: Mutex<HashMap<String, Option<Leader>>>,
    claims: Family<PoolOwner, Gauge>,
    unclaimed: Family<PoolLabel, Gauge>,
    /// Queues seen so far, labelled by name (at most [`MAX_QUEUES`]).
    queues: Mutex<BTreeSet<QueueName>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty set of metrics, every family registered.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("baton");
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds = Family::<CallName, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram,
        );
        let enqueued = Family::<QueueLabel, Counter>::default();
        let finished = Family::<QueueOutcome, Counter>::default();
        let run_seconds = Family::<QueueLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram,
        );
        let jobs = Family::<QueueState, Gauge>::default();
        let lock_acquires = Family::<Outcome, Counter>::default();
        let leader = Family::<MasterOwner, Gauge>::default();
        let leader_changes = Family::<MasterLabel, Counter>::default();
        let claims = Family::<PoolOwner, Gauge>::default();
        let unclaimed = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "backend_calls",
            "Backend calls, by call and outcome",
            calls.clone(),
        );
        registry.register(
            "backend_call_seconds",
            "How long backend calls took, by call",
            call_seconds.clone(),
        );
        registry.register("jobs_enqueued", "Jobs enqueued, by queue", enqueued.clone());
        registry.register(
            "jobs_finished",
            "Attempts ended and jobs canceled, by queue and outcome",
            finished.clone(),
        );
        registry.register(
            "job_run_seconds",
            "How long ended attempts ran, by queue",
            run_seconds.clone(),
        );
        registry.register(
            "jobs",
            "Jobs in each state, by queue, read from the backend at each scrape",
            jobs.clone(),
        );
        registry.register(
            "lock_acquires",
            "Lock acquisitions, by outcome",
            lock_acquires.clone(),
        );
        registry.register(
            "master_leader",
            "1 for each master's current leader, by master and owner",
            leader.clone(),
        );
        registry.register(
            "master_leader_changes",
            "Times a master was seen with a new leader (another owner or a new grant), by master",
            leader_changes.clone(),
        );
        registry.register(
            "claims",
            "Items each owner holds in a claim pool, by pool and owner",
            claims.clone(),
        );
        registry.register(
            "claims_unclaimed",
            "Items of a claim pool no one holds, by pool",
            unclaimed.clone(),
        );
        Self {
            registry,
            calls,
            call_seconds,
            enqueued,
            finished,
            run_seconds,
            jobs,
            lock_acquires,
            leader,
            leader_changes,
            leaders_seen: Mutex::new(HashMap::new()),
            claims,
            unclaimed,
            queues: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records each master's leader now (`None`: it has none), as read from the backend, and
    /// counts a leadership change for each master whose leader differs from the last look
    /// (another owner, or the same owner under a new grant). The first look at a master sets
    /// where it stands without counting. Masters absent from `leaders` are forgotten.
    pub fn observe_leaders(&self, leaders: impl IntoIterator<Item = (String, Option<Leader>)>) {
        let mut seen = self
            .leaders_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: HashMap<String, Option<Leader>> = leaders.into_iter().collect();
        self.leader.clear();
        for (master, leader) in &now {
            if let Some(leader) = leader {
                let labels = MasterOwner {
                    master: master.clone(),
                    owner: leader.owner.clone(),
                };
                self.leader.get_or_create(&labels).set(1);
            }
            let changed = match seen.get(master) {
                Some(before) => leader.is_some() && before != leader,
                None => false,
            };
            let counter = self.leader_changes.get_or_create(&MasterLabel {
                master: master.clone(),
            });
            if changed {
                counter.inc();
            }
        }
        *seen = now;
    }

    /// Sets how every claim pool stands now, replacing what was set before (so owners that
    /// hold nothing any more disappear).
    pub fn set_claims(&self, pools: &[PoolClaims]) {
        self.claims.clear();
        self.unclaimed.clear();
        for pool in pools {
            let unclaimed = i64::try_from(pool.unclaimed).unwrap_or(i64::MAX);
            self.unclaimed
                .get_or_create(&PoolLabel {
                    pool: pool.pool.clone(),
                })
                .set(unclaimed);
            for (owner, count) in &pool.held {
                let labels = PoolOwner {
                    pool: pool.pool.clone(),
                    owner: owner.clone(),
                };
                self.claims
                    .get_or_create(&labels)
                    .set(i64::try_from(*count).unwrap_or(i64::MAX));
            }
        }
    }

    /// The queues seen so far, for [`Self::render`] to read the depth of.
    #[must_use]
    pub fn queues(&self) -> Vec<QueueName> {
        self.known().iter().cloned().collect()
    }

    /// Reads the depth of every queue seen so far from `backend` and returns every metric as
    /// Prometheus (OpenMetrics) text, served with [`CONTENT_TYPE`]. A queue whose counts cannot
    /// be read keeps its last depth; the failure shows in `baton_backend_calls_total`.
    pub async fn render(&self, backend: &(impl Queue + ?Sized)) -> String {
        for queue in self.queues() {
            if let Ok(counts) = backend.counts(&queue).await {
                for state in JobState::ALL {
                    let labels = QueueState {
                        queue: queue.as_str().to_owned(),
                        state: state.as_str(),
                    };
                    let depth = i64::try_from(counts.get(state)).unwrap_or(i64::MAX);
                    self.jobs.get_or_create(&labels).set(depth);
                }
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<QueueName>> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The label of `queue`: its name while fewer than [`MAX_QUEUES`] are known.
    fn queue_label(&self, queue: &QueueName) -> String {
        let mut known = self.known();
        if known.contains(queue) {
            return queue.as_str().to_owned();
        }
        if known.len() < MAX_QUEUES {
            known.insert(queue.clone());
            return queue.as_str().to_owned();
        }
        OTHER_QUEUE.to_owned()
    }

    /// Counts one call of `call` and how long it took.
    fn call(&self, call: &'static str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.calls
            .get_or_create(&CallLabels { call, outcome })
            .inc();
        self.call_seconds
            .get_or_create(&CallName { call })
            .observe(seconds);
    }

    fn enqueued(&self, queue: &QueueName, jobs: u64) {
        let queue = self.queue_label(queue);
        self.enqueued
            .get_or_create(&QueueLabel { queue })
            .inc_by(jobs);
    }

    /// Counts a job whose attempt ended or that was canceled, as `job` now is.
    fn finished(&self, job: &Job) {
        let outcome = match job.state {
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
            JobState::Pending | JobState::Running => "retried",
        };
        let queue = self.queue_label(&job.queue);
        if job.state != JobState::Canceled
            && let Some(attempt) = job.history.last()
            && let Some(ended) = attempt.finished_at
        {
            let millis = ended
                .as_millis()
                .saturating_sub(attempt.started_at.as_millis());
            #[allow(clippy::cast_precision_loss)] // run times are far below 2^52 ms
            let seconds = millis.max(0) as f64 / 1000.0;
            self.run_seconds
                .get_or_create(&QueueLabel {
                    queue: queue.clone(),
                })
                .observe(seconds);
        }
        self.finished
            .get_or_create(&QueueOutcome { queue, outcome })
            .inc();
    }

    /// Notes a reservation's queues, so that their depth is reported.
    fn seen(&self, queues: &[QueueName]) {
        for queue in queues {
            self.queue_label(queue);
        }
    }

    fn lock_acquired(&self, granted: bool) {
        let outcome = if granted { "granted" } else { "busy" };
        self.lock_acquires.get_or_create(&Outcome { outcome }).inc();
    }
}
