//! Vacuuming the jobs table after heavy reservation.
//!
//! Reservation walks a queue's pending jobs in order from the head of the pending index. A
//! reserved job's entry stays there, dead, until a vacuum removes it, and every later
//! reservation of the queue steps over it. Autovacuum comes at most once a minute (its default
//! `autovacuum_naptime`), and on a busy queue a minute of reservations is hundreds of thousands
//! of dead entries to step over: with 1,000,000 jobs queued, reservations slowed by a sixth
//! between two autovacuums. So the backend vacuums the table itself once this process has
//! reserved [`crate::PostgresConfig::vacuum_after`] jobs since its last vacuum, one at a time and
//! at most once every [`MIN_INTERVAL`], on a connection of its own, cost-limited as autovacuum
//! is but with five times its budget (most of a vacuum's work is reading the indexes, and at
//! autovacuum's pace a table of 6,000,000 jobs takes 11 s, while reservations pile up dead
//! entries again). It does so only as the table's owner; otherwise autovacuum alone keeps the
//! table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The least time from the start of one vacuum to the start of the next.
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// How long the vacuum's connection sleeps each time it has done [`COST_LIMIT`] worth of work
/// (`vacuum_cost_delay`): autovacuum's default, so that the vacuum leaves the server's cores to
/// the jobs between its rounds.
const COST_DELAY: &str = "2ms";
/// The work between two sleeps (`vacuum_cost_limit`): five times autovacuum's default.
const COST_LIMIT: &str = "1000";

/// Jobs reserved since the last vacuum, and the signal that enough were.
#[derive(Debug)]
pub(crate) struct Reserved {
    count: AtomicU64,
    after: u64,
    due: Notify,
}

impl Reserved {
    /// Counts `n` more reserved jobs; signals the vacuum task once they reach the threshold.
    pub(crate) fn add(&self, n: usize) {
        let n = n as u64;
        if n == 0 || self.after == 0 {
            return;
        }
        let before = self.count.fetch_add(n, Ordering::Relaxed);
        if before < self.after && before + n >= self.after {
            self.due.notify_one();
        }
    }

    /// Waits until at least the threshold of jobs was reserved, then starts counting afresh.
    async fn wait(&self) {
        loop {
            let notified = self.due.notified();
            if self.count.load(Ordering::Relaxed) >= self.after {
                self.count.store(0, Ordering::Relaxed);
                return;
            }
            notified.await;
        }
    }
}

/// The counter for the batching tasks, and the vacuum task if `after` is not zero.
pub(crate) fn spawn(
    pool: &PgPool,
    table: String,
    after: u64,
) -> (Arc<Reserved>, Option<JoinHandle<()>>) {
    let reserved = Arc::new(Reserved {
        count: AtomicU64::new(0),
        after,
        due: Notify::new(),
    });
    if after == 0 {
        return (reserved, None);
    }
    let options = pool.connect_options().as_ref().clone().options([
        ("vacuum_cost_delay", COST_DELAY),
        ("vacuum_cost_limit", COST_LIMIT),
    ]);
    let task = tokio::spawn(run(options, table, reserved.clone()));
    (reserved, Some(task))
}

/// Vacuums `table` each time enough jobs were reserved, spaced as the module documentation says.
/// Whether this role may vacuum it is asked once, before the first vacuum.
async fn run(options: PgConnectOptions, table: String, reserved: Arc<Reserved>) {
    let mut next = Instant::now();
    let mut may_vacuum = false;
    loop {
        reserved.wait().await;
        tokio::time::sleep_until(next.into()).await;
        let started = Instant::now();
        match vacuum(&options, &table, !may_vacuum).await {
            Ok(true) => may_vacuum = true,
            Ok(false) => {
                tracing::info!(
                    table,
                    "this role does not own the jobs table: leaving its vacuum to autovacuum"
                );
                return;
            }
            Err(error) => tracing::warn!(table, %error, "vacuuming the jobs table failed"),
        }
        next = started + MIN_INTERVAL;
        tracing::debug!(table, took = ?started.elapsed(), "vacuumed the jobs table");
    }
}

/// Vacuums `table` on a connection of its own, unless another vacuum of it is running. With
/// `check_owner`, first asks whether this role may: `false` if not, and nothing is done.
async fn vacuum(options: &PgConnectOptions, table: &str, check_owner: bool) -> sqlx::Result<bool> {
    let mut connection = PgConnection::connect_with(options).await?;
    let owner = !check_owner
        || sqlx::query(
            "SELECT pg_has_role(current_user, relowner, 'MEMBER') AS owner
             FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_optional(&mut connection)
        .await?
        .map(|row| row.try_get::<bool, _>("owner"))
        .transpose()?
        .unwrap_or(false);
    if owner {
        // VACUUM cannot run in a transaction, so not as a prepared statement either.
        let text = format!("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) {table}");
        sqlx::raw_sql(AssertSqlSafe(text))
            .execute(&mut connection)
            .await?;
    }
    connection.close().await?;
    Ok(owner)
}
