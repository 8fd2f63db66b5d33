//! [`Member`]: the tasks that run a pool in one process.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pool::{Shared, refresh_settings};
use crate::stats::PoolStats;
use crate::{completion, worker};

/// A running member of a pool: its tasks stop with [`shutdown`](Member::shutdown) (finishing
/// the jobs they run) or at once with [`abort`](Member::abort); dropping it aborts them.
pub struct Member {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Member {
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(listen_for_wakeups(shared.clone(), stop.subscribe()));
        tasks.spawn(poll(shared.clone(), stop.subscribe()));
        tasks.spawn(recover_expired(shared.clone(), stop.subscribe()));
        tasks.spawn(report(shared.clone(), stop.subscribe()));
        tasks.spawn(worker::supervise_slots(shared.clone(), stop.subscribe()));
        for _ in 0..shared.config.completion_concurrency {
            tasks.spawn(completion::run_completions(
                shared.clone(),
                stop.subscribe(),
            ));
        }
        tracing::info!(
            pool = %shared.config.name,
            member = %shared.config.owner,
            max_parallelism = *shared.limit.borrow(),
            "member started"
        );
        Self {
            shared,
            stop,
            tasks,
        }
    }

    /// Stops taking work, lets running jobs and callbacks finish, releases this member's slots
    /// and waits for every task to end.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(pool = %self.shared.config.name, member = %self.shared.config.owner, "member stopped");
    }

    /// Stops every task at once, releasing nothing, as if the process had died: its jobs and
    /// slots are recovered by the other members once their leases expire.
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.tasks.detach_all();
    }

    /// What this member has done since the pool handle was created.
    pub fn stats(&self) -> PoolStats {
        self.shared.counters.snapshot()
    }
}

/// Turns the backend's wake-ups into this member's signals: new work, new completion records,
/// new settings.
async fn listen_for_wakeups(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let names = &shared.names;
    let queues = [
        names.work.clone(),
        names.completions.clone(),
        names.settings.clone(),
        names.cancel_all.clone(),
    ];
    while !*stop.borrow() {
        let mut wakeups = match shared.backend.wakeups(&queues).await {
            Ok(wakeups) => wakeups,
            Err(e) => {
                tracing::warn!(pool = %shared.config.name, "cannot listen for wake-ups, polling: {e}");
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
                }
                continue;
            }
        };
        loop {
            let queue = tokio::select! {
                _ = stop.changed() => return,
                queue = wakeups.next() => queue,
            };
            let Some(queue) = queue else { break };
            if queue == names.work {
                shared.work_wake.send_modify(|n| *n += 1);
            } else if queue == names.completions {
                shared.completion_wake.send_modify(|n| *n += 1);
            } else if let Err(e) = refresh_settings(&shared).await {
                tracing::warn!(pool = %shared.config.name, "cannot read settings: {e}");
            }
        }
    }
}

/// Looks again every poll interval: delayed jobs and retries come due without a wake-up, and
/// settings may have changed while a wake-up was missed.
async fn poll(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = refresh_settings(&shared).await {
            tracing::warn!(pool = %shared.config.name, "cannot read settings: {e}");
        }
        shared.work_wake.send_modify(|n| *n += 1);
        shared.completion_wake.send_modify(|n| *n += 1);
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

/// Hands back work whose member stopped renewing its lease: retried or failed by the job's
/// policy, exactly once, however many members do this at the same time.
async fn recover_expired(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = (shared.config.lease_ttl / 2).max(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match shared.backend.requeue_expired().await {
            Ok(jobs) if !jobs.is_empty() => {
                tracing::info!(pool = %shared.config.name, jobs = jobs.len(), "recovered work whose lease expired");
                shared.work_wake.send_modify(|n| *n += 1);
                shared.completion_wake.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(pool = %shared.config.name, "cannot recover expired work: {e}")
            }
        }
    }
}

/// Logs what this member did in each report interval, as one structured event.
async fn report(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut previous = shared.counters.snapshot();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(shared.config.report_interval) => {}
        }
        let now = shared.counters.snapshot();
        let delta = now.since(&previous);
        previous = now;
        tracing::info!(
            target: "baton_workpool::report",
            pool = %shared.config.name,
            member = %shared.config.owner,
            completed = delta.completed,
            succeeded = delta.succeeded,
            failed = delta.failed,
            retries = delta.retries,
            canceled = delta.canceled,
            running = delta.running,
            max_parallelism = *shared.limit.borrow(),
            "work pool report"
        );
    }
}
