//! Completion records: each names a job whose completion callback must run once it has ended.
//!
//! A record is stored before anything can end a job (by the member about to end it, or by the
//! canceller), so a job never ends without one. A crash between storing the record and ending
//! the job leaves an extra record; so does a job that was retried after such a crash. Every
//! record of a job therefore runs the callback only under the job's completion lock and only if
//! the job's `done` item is absent, and adds that item before the record is completed: one
//! call is recorded per job however many records it has.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Acquire, ItemId, LockLease, LockRequest, Reserved, Retry};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::guard::{Deadline, Guarded, local_deadline};
use crate::handler::Completion;
use crate::names::{CompletionPayload, WorkPayload};
use crate::pool::{Shared, outcome_of, read, wait_for_wake};
use crate::stats::Event;

const DONE: &str = "done";

/// Runs completion records as they come due.
pub(crate) async fn run_completions(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let config = &shared.config;
    let mut wake = shared.completion_wake.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        wake.borrow_and_update();
        let sent = Instant::now();
        let reserved = shared
            .backend
            .reserve(
                std::slice::from_ref(&shared.names.completions),
                &config.owner,
                config.lease_ttl,
                1,
            )
            .await;
        match reserved {
            Ok(mut records) if !records.is_empty() => {
                let record = records.swap_remove(0);
                if let Err(e) = run_record(&shared, record, sent).await {
                    tracing::warn!(pool = %config.name, "completion record left for a retry: {e}");
                }
            }
            Ok(_) => wait_for_wake(&mut wake, &mut stop, config.poll_interval).await,
            Err(e) => {
                tracing::warn!(pool = %config.name, "cannot reserve completion records: {e}");
                wait_for_wake(&mut wake, &mut stop, config.poll_interval).await;
            }
        }
    }
}

async fn run_record(
    shared: &Arc<Shared>,
    record: Reserved,
    sent: Instant,
) -> baton_core::Result<()> {
    let config = &shared.config;
    let backend = &shared.backend;
    let Reserved {
        job: record_job,
        lease: record_lease,
    } = record;
    let payload: CompletionPayload = match serde_json::from_value(record_job.payload.clone()) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(pool = %config.name, record = %record_job.id, "unreadable completion record: {e}");
            backend
                .fail(&record_lease, &format!("unreadable: {e}"), Retry::Never)
                .await?;
            return Ok(());
        }
    };
    let Some(job) = backend.get(payload.job).await? else {
        tracing::warn!(pool = %config.name, job = %payload.job, "job gone before its completion callback ran");
        backend
            .complete(&record_lease, json!({"skipped": "job gone"}))
            .await?;
        return Ok(());
    };
    if !job.state.is_terminal() {
        // Stored just before the job ends, or by an attempt that then died: look again later.
        let exponent = record_job.attempts.saturating_sub(1).min(10);
        let wait = (Duration::from_millis(20) * 2u32.pow(exponent)).min(config.lease_ttl);
        backend
            .fail(
                &record_lease,
                "waiting for the job to end",
                Retry::After(wait),
            )
            .await?;
        return Ok(());
    }
    let work: Option<WorkPayload> = serde_json::from_value(job.payload.clone()).ok();
    let Some(on_complete) = work.as_ref().and_then(|w| w.on_complete.clone()) else {
        backend
            .complete(&record_lease, json!({"skipped": "no callback"}))
            .await?;
        return Ok(());
    };
    let lock_name = shared.names.completion_lock(job.id)?;
    let request = LockRequest::new([lock_name], config.owner.clone(), config.lease_ttl)?
        .with_reason(format!("completion callback of job {}", job.id))?;
    let lock_sent = Instant::now();
    let lock = match backend.acquire(&request).await? {
        Acquire::Granted(lock) => lock,
        Acquire::Busy(_) => {
            backend
                .fail(
                    &record_lease,
                    "another record of this job is running",
                    Retry::After(config.lease_ttl / 2),
                )
                .await?;
            return Ok(());
        }
    };
    let result = run_locked(
        shared,
        &job,
        work.as_ref().and_then(|w| w.name.clone()),
        on_complete,
        &record_lease,
        &lock,
        local_deadline(sent, config.lease_ttl).min(local_deadline(lock_sent, config.lease_ttl)),
    )
    .await;
    if let Err(e) = backend.release_lock(&lock).await
        && !e.is_lease_lost()
    {
        tracing::warn!(pool = %config.name, job = %job.id, "cannot release the completion lock: {e}");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_locked(
    shared: &Arc<Shared>,
    job: &baton_core::Job,
    name: Option<String>,
    on_complete: crate::config::OnComplete,
    record_lease: &baton_core::JobLease,
    lock: &LockLease,
    deadline: Instant,
) -> baton_core::Result<()> {
    let config = &shared.config;
    let backend = &shared.backend;
    let done_pool = shared.names.completion_record(job.id)?;
    let done = ItemId::new(DONE)?;
    let items = backend.items(&done_pool).await?;
    if items.iter().any(|item| item.item == done) {
        backend
            .complete(record_lease, json!({"skipped": "already called"}))
            .await?;
        return Ok(());
    }
    let handler = read(&shared.completions).get(&on_complete.handler).cloned();
    let Some(handler) = handler else {
        tracing::error!(
            pool = %config.name,
            job = %job.id,
            "no completion handler named {:?} in member {}",
            on_complete.handler,
            config.owner
        );
        backend
            .fail(
                record_lease,
                "no such completion handler here",
                Retry::After(config.poll_interval),
            )
            .await?;
        return Ok(());
    };
    let completion = Completion {
        job: job.id,
        name,
        outcome: outcome_of(job),
        attempts: job.attempts,
        context: on_complete.context,
        token: record_lease.lease.token(),
    };
    let deadline = Deadline::new(deadline);
    let leases = Arc::new(Mutex::new((lock.clone(), record_lease.clone())));
    let renewal = tokio::spawn(renew(shared.clone(), leases.clone(), deadline.clone()));
    let called = Guarded::new(handler(completion), deadline).await;
    renewal.abort();
    let (_, record_lease) = leases.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let outcome = match called {
        Err(_) => {
            tracing::warn!(
                pool = %config.name,
                job = %job.id,
                "stopped a completion callback whose lease could not be renewed; it runs again"
            );
            return Ok(());
        }
        Ok(Ok(())) => Value::from("called"),
        Ok(Err(e)) => {
            tracing::error!(pool = %config.name, job = %job.id, "completion callback failed: {e}");
            json!({"callback_error": e.message()})
        }
    };
    backend.add(&done_pool, &[done]).await?;
    shared.counters.record(Event::Callback);
    backend.complete(&record_lease, outcome).await?;
    tracing::debug!(pool = %config.name, job = %job.id, "completion callback recorded");
    Ok(())
}

/// Keeps the completion lock and the record's lease alive while the callback runs.
async fn renew(
    shared: Arc<Shared>,
    leases: Arc<Mutex<(LockLease, baton_core::JobLease)>>,
    deadline: Deadline,
) {
    let ttl = shared.config.lease_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let (lock, record) = leases.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sent = Instant::now();
        let lock = shared.backend.renew_lock(&lock, ttl).await;
        let record = shared.backend.touch(&record, ttl).await;
        match (lock, record) {
            (Ok(lock), Ok(record)) => {
                *leases.lock().unwrap_or_else(|p| p.into_inner()) = (lock, record);
                deadline.set(local_deadline(sent, ttl));
            }
            (Err(e), _) | (_, Err(e)) if e.is_lease_lost() => {
                deadline.cut(Instant::now());
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(pool = %shared.config.name, "cannot renew a completion lease: {e}");
            }
        }
    }
}
