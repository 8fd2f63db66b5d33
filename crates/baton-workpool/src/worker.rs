//! Slot workers: each holds one parallelism slot while it runs jobs.
//!
//! Worker `i` of every member competes for the lock `workpool:<pool>:slot:<i>`; only workers
//! below the current limit run, and a worker reserves a job only while it holds its slot with
//! at least half a lease left. See the crate documentation for why this bounds the jobs
//! running across the cluster.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{
    Acquire, Error, Job, JobId, JobLease, JobState, LockLease, LockName, LockRequest, Reserved,
    Retry,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::guard::{Deadline, Guarded, local_deadline};
use crate::handler::{CancelSignal, HandlerError, JobContext};
use crate::names::WorkPayload;
use crate::pool::{Shared, cancel_job, read, record_completion, wait_for_wake};
use crate::stats::Event;

/// A held slot and the instant (on this host's clock) before which its lease cannot expire.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    lease: LockLease,
    valid_until: Instant,
    /// This member's permit to hold a slot, when its concurrency is capped.
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

/// Keeps one worker task per slot below the current limit.
pub(crate) async fn supervise_slots(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut limit = shared.limit.subscribe();
    let mut workers: JoinSet<usize> = JoinSet::new();
    let mut running: Vec<bool> = Vec::new();
    loop {
        let wanted = *limit.borrow_and_update();
        if !*stop.borrow() {
            if running.len() < wanted {
                running.resize(wanted, false);
            }
            for (index, is_running) in running.iter_mut().enumerate().take(wanted) {
                if !*is_running {
                    *is_running = true;
                    workers.spawn(slot_worker(shared.clone(), index, stop.clone()));
                }
            }
        }
        tokio::select! {
            _ = limit.changed() => {}
            _ = stop.changed() => {}
            Some(ended) = workers.join_next() => {
                if let Ok(index) = ended {
                    running[index] = false;
                }
            }
        }
        if *stop.borrow() {
            while workers.join_next().await.is_some() {}
            return;
        }
    }
}

async fn slot_worker(shared: Arc<Shared>, index: usize, mut stop: watch::Receiver<bool>) -> usize {
    let name = match shared.names.slot(index) {
        Ok(name) => name,
        Err(e) => {
            tracing::error!(pool = %shared.config.name, "invalid slot name: {e}");
            return index;
        }
    };
    let config = &shared.config;
    let mut wake = shared.work_wake.subscribe();
    let limit = shared.limit.subscribe();
    let mut slot: Option<Slot> = None;
    loop {
        if *stop.borrow() || index >= *limit.borrow() {
            release(&shared, slot.take()).await;
            return index;
        }
        wake.borrow_and_update();
        let held = match slot.take() {
            Some(held) => keep_fresh(&shared, held).await,
            None => None,
        };
        let held = match held {
            Some(held) => held,
            None => match acquire(&shared, &name).await {
                Ok(Some(held)) => held,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(pool = %config.name, slot = index, "cannot take a slot: {e}");
                    wait_for_wake(&mut wake, &mut stop, config.poll_interval).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let reserved = shared
            .backend
            .reserve(
                std::slice::from_ref(&shared.names.work),
                &config.owner,
                config.lease_ttl,
                1,
            )
            .await;
        match reserved {
            Ok(mut jobs) if !jobs.is_empty() => {
                let job = jobs.swap_remove(0);
                slot = run_attempt(&shared, held, job, sent).await;
            }
            Ok(_) => {
                release(&shared, Some(held)).await;
                wait_for_wake(&mut wake, &mut stop, config.poll_interval).await;
            }
            Err(e) => {
                tracing::warn!(pool = %config.name, "cannot reserve work: {e}");
                release(&shared, Some(held)).await;
                wait_for_wake(&mut wake, &mut stop, config.poll_interval).await;
            }
        }
    }
}

/// Takes slot `name`, waiting up to a poll interval for it.
/// With a capped member, takes a local permit first and gives it back (without waiting for the
/// slot) if the slot is busy, so that this member's other workers may try theirs.
async fn acquire(shared: &Shared, name: &LockName) -> baton_core::Result<Option<Slot>> {
    let config = &shared.config;
    let permit = match &shared.member_permits {
        Some(permits) => {
            let permit =
                tokio::time::timeout(config.poll_interval, permits.clone().acquire_owned()).await;
            match permit {
                Ok(Ok(permit)) => Some(Arc::new(permit)),
                _ => return Ok(None),
            }
        }
        None => None,
    };
    let wait = if permit.is_some() {
        Duration::ZERO
    } else {
        config.poll_interval
    };
    let request = LockRequest::new([name.clone()], config.owner.clone(), config.lease_ttl)?
        .with_reason(format!("running a job of work pool {}", config.name))?
        .with_wait(wait);
    let sent = Instant::now();
    match shared.backend.acquire(&request).await? {
        Acquire::Granted(lease) => Ok(Some(Slot {
            lease,
            valid_until: local_deadline(sent, config.lease_ttl),
            permit,
        })),
        Acquire::Busy(_) => {
            if permit.is_some() {
                drop(permit);
                tokio::time::sleep(config.poll_interval / 4).await;
            }
            Ok(None)
        }
    }
}

/// The slot renewed if less than half its lease is left; `None` if it was lost.
async fn keep_fresh(shared: &Shared, slot: Slot) -> Option<Slot> {
    let ttl = shared.config.lease_ttl;
    if slot.valid_until.saturating_duration_since(Instant::now()) > ttl / 2 {
        return Some(slot);
    }
    let sent = Instant::now();
    match shared.backend.renew_lock(&slot.lease, ttl).await {
        Ok(lease) => Some(Slot {
            lease,
            valid_until: local_deadline(sent, ttl),
            permit: slot.permit,
        }),
        Err(e) => {
            tracing::debug!(pool = %shared.config.name, "slot lost: {e}");
            None
        }
    }
}

async fn release(shared: &Shared, slot: Option<Slot>) {
    if let Some(slot) = slot
        && let Err(e) = shared.backend.release_lock(&slot.lease).await
        && !e.is_lease_lost()
    {
        tracing::warn!(pool = %shared.config.name, "cannot release a slot: {e}");
    }
}

/// What the renewal task shares with the attempt it keeps alive.
struct Renewal {
    slot: Option<Slot>,
    lease: JobLease,
    canceled: bool,
}

/// Runs one reserved job under `slot`; returns the slot if it is still held.
async fn run_attempt(
    shared: &Arc<Shared>,
    slot: Slot,
    reserved: Reserved,
    sent: Instant,
) -> Option<Slot> {
    let Reserved { job, lease } = reserved;
    let config = &shared.config;
    let payload: WorkPayload = match serde_json::from_value(job.payload.clone()) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(pool = %config.name, job = %job.id, "not a work-pool job: {e}");
            let _ = shared
                .backend
                .fail(&lease, &format!("not a work-pool job: {e}"), Retry::Never)
                .await;
            return Some(slot);
        }
    };
    if shared
        .cancel_through
        .borrow()
        .is_some_and(|through| job.id <= through)
    {
        if let Err(e) = cancel_job(shared, &job).await {
            tracing::warn!(pool = %config.name, job = %job.id, "cannot cancel: {e}");
        }
        return Some(slot);
    }
    if job.attempts > payload.max_attempts {
        // Its last allowed attempt's lease expired: it fails without another run.
        let error = job
            .error
            .clone()
            .unwrap_or_else(|| "lease expired".to_owned());
        finish(
            shared,
            &job,
            &payload,
            &lease,
            Err(HandlerError::permanent(error)),
        )
        .await;
        return Some(slot);
    }
    let handler = read(&shared.handlers).get(&payload.handler).cloned();
    let Some(handler) = handler else {
        let error = format!(
            "no handler named {:?} in member {}",
            payload.handler, config.owner
        );
        tracing::error!(pool = %config.name, job = %job.id, "{error}");
        end_attempt(
            shared,
            &job,
            &payload,
            &lease,
            Err(HandlerError::retryable(error)),
        )
        .await;
        return Some(slot);
    };

    let deadline = Deadline::new(slot.valid_until.min(local_deadline(sent, config.lease_ttl)));
    let (cancel_sender, cancel) = CancelSignal::new();
    let state = Arc::new(Mutex::new(Renewal {
        slot: Some(slot),
        lease: lease.clone(),
        canceled: false,
    }));
    let renewal = AbortOnDrop(tokio::spawn(renew(
        shared.clone(),
        job.id,
        state.clone(),
        deadline.clone(),
        cancel_sender,
    )));
    let context = JobContext {
        job: job.id,
        name: payload.name.clone(),
        attempt: job.attempts,
        token: lease.lease.token(),
        cancel,
    };
    shared.counters.record(Event::Started);
    tracing::debug!(
        pool = %config.name,
        job = %job.id,
        name = payload.name.as_deref(),
        handler = %payload.handler,
        attempt = job.attempts,
        "started"
    );
    let span = baton_trace::execution_span(
        &job.id.to_string(),
        job.queue.as_str(),
        job.attempts,
        job.trace_parent.as_ref(),
    );
    span.record("otel.name", format!("run {}", payload.handler));
    let output = Guarded::new(
        handler(context, payload.args.clone()).instrument(span.clone()),
        deadline,
    )
    .await;
    if !matches!(output, Ok(Ok(_))) {
        span.record("otel.status_code", "ERROR");
    }
    drop(renewal);
    shared.counters.attempt_ended();
    let Renewal {
        slot,
        lease,
        canceled,
    } = std::mem::replace(
        &mut *state.lock().unwrap_or_else(|p| p.into_inner()),
        Renewal {
            slot: None,
            lease: lease.clone(),
            canceled: false,
        },
    );
    let slot = slot.filter(|slot| slot.valid_until > Instant::now());
    match output {
        _ if canceled => {
            tracing::debug!(pool = %config.name, job = %job.id, "canceled while running");
        }
        Err(_) => {
            tracing::warn!(
                pool = %config.name,
                job = %job.id,
                "stopped a handler whose lease could not be renewed; the job is recovered when it expires"
            );
        }
        Ok(result) => end_attempt(shared, &job, &payload, &lease, result).await,
    }
    slot
}

/// Keeps the slot and the job's lease alive while the handler runs, moves the deadline, and
/// sets the cancellation signal when the job is canceled.
async fn renew(
    shared: Arc<Shared>,
    job: JobId,
    state: Arc<Mutex<Renewal>>,
    deadline: Deadline,
    cancel: watch::Sender<bool>,
) {
    let config = &shared.config;
    let ttl = config.lease_ttl;
    let mut events = shared.backend.subscribe(job).await.ok();
    let mut cancel_through = shared.cancel_through.subscribe();
    let mut slot_until = deadline.get();
    let mut job_until = deadline.get();
    let mut canceled = false;
    loop {
        let event = tokio::select! {
            () = tokio::time::sleep(ttl / 3) => None,
            event = async {
                match events.as_mut() {
                    Some(events) => events.next().await,
                    None => std::future::pending().await,
                }
            } => {
                if event.is_none() {
                    events = None;
                }
                event
            }
            _ = cancel_through.changed() => None,
        };
        if !canceled {
            let through = *cancel_through.borrow_and_update();
            let by_cancel_all = through.is_some_and(|through| job <= through);
            let by_event = event
                .as_ref()
                .is_some_and(|e| e.state == JobState::Canceled);
            if by_cancel_all {
                match shared.backend.get(job).await {
                    Ok(Some(current)) => {
                        if let Err(e) = cancel_job(&shared, &current).await {
                            tracing::warn!(pool = %config.name, job = %job, "cannot cancel: {e}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(pool = %config.name, job = %job, "cannot read: {e}"),
                }
            }
            if by_event || by_cancel_all {
                canceled = is_canceled(&shared, job).await;
                if canceled {
                    mark_canceled(&state, &deadline, &cancel, config.cancel_grace);
                }
            }
        }
        let (slot, lease) = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            (state.slot.clone(), state.lease.clone())
        };
        let Some(slot) = slot else { return };
        let sent = Instant::now();
        if slot.valid_until.saturating_duration_since(sent) < ttl * 2 / 3 || event.is_none() {
            match shared.backend.renew_lock(&slot.lease, ttl).await {
                Ok(renewed) => {
                    slot_until = local_deadline(sent, ttl);
                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                    let permit = state.slot.as_ref().and_then(|s| s.permit.clone());
                    state.slot = Some(Slot {
                        lease: renewed,
                        valid_until: slot_until,
                        permit,
                    });
                }
                Err(e) if e.is_lease_lost() => {
                    tracing::warn!(pool = %config.name, job = %job, "lost the parallelism slot");
                    state.lock().unwrap_or_else(|p| p.into_inner()).slot = None;
                    deadline.cut(Instant::now());
                    return;
                }
                Err(e) => {
                    tracing::warn!(pool = %config.name, job = %job, "cannot renew the slot: {e}")
                }
            }
            if !canceled {
                match shared.backend.touch(&lease, ttl).await {
                    Ok(touched) => {
                        job_until = local_deadline(sent, ttl);
                        state.lock().unwrap_or_else(|p| p.into_inner()).lease = touched;
                    }
                    Err(e) if e.is_lease_lost() => {
                        canceled = is_canceled(&shared, job).await;
                        if canceled {
                            mark_canceled(&state, &deadline, &cancel, config.cancel_grace);
                        } else {
                            tracing::warn!(pool = %config.name, job = %job, "lost the job's lease");
                            deadline.cut(Instant::now());
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pool = %config.name, job = %job, "cannot renew the job's lease: {e}")
                    }
                }
            }
        }
        let until = if canceled {
            slot_until.min(deadline.get())
        } else {
            slot_until.min(job_until)
        };
        deadline.set(until);
    }
}

fn mark_canceled(
    state: &Mutex<Renewal>,
    deadline: &Deadline,
    cancel: &watch::Sender<bool>,
    grace: Duration,
) {
    state.lock().unwrap_or_else(|p| p.into_inner()).canceled = true;
    cancel.send_replace(true);
    deadline.cut(Instant::now() + grace);
}

async fn is_canceled(shared: &Shared, job: JobId) -> bool {
    matches!(
        shared.backend.get(job).await,
        Ok(Some(Job {
            state: JobState::Canceled,
            ..
        }))
    )
}

/// Records how an attempt ended: a retry, or the job's end.
async fn end_attempt(
    shared: &Shared,
    job: &Job,
    payload: &WorkPayload,
    lease: &JobLease,
    result: Result<Value, HandlerError>,
) {
    let config = &shared.config;
    match result {
        Err(error) if !error.is_permanent() && job.attempts < payload.max_attempts => {
            match shared
                .backend
                .fail(lease, error.message(), Retry::ByPolicy)
                .await
            {
                Ok(updated) => {
                    shared.counters.record(Event::Retried);
                    tracing::debug!(
                        pool = %config.name,
                        job = %job.id,
                        name = payload.name.as_deref(),
                        attempt = job.attempts,
                        retry_at = %updated.run_at,
                        error = error.message(),
                        "retrying"
                    );
                }
                Err(e) => lost(shared, job.id, e).await,
            }
        }
        result => finish(shared, job, payload, lease, result).await,
    }
}

/// Ends the job: records its completion callback first (if it has one), then its outcome.
async fn finish(
    shared: &Shared,
    job: &Job,
    payload: &WorkPayload,
    lease: &JobLease,
    result: Result<Value, HandlerError>,
) {
    let config = &shared.config;
    if payload.on_complete.is_some() {
        let mut recorded = record_completion(shared, job.id).await;
        for pause in [10, 100, 1000] {
            if recorded.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
            recorded = record_completion(shared, job.id).await;
        }
        if let Err(e) = recorded {
            tracing::error!(
                pool = %config.name,
                job = %job.id,
                "cannot record the completion callback; the job is recovered when its lease expires: {e}"
            );
            return;
        }
    }
    let ended = match &result {
        Ok(value) => shared
            .backend
            .complete(lease, value.clone())
            .await
            .map(|_| Event::Succeeded),
        Err(error) => shared
            .backend
            .fail(lease, error.message(), Retry::Never)
            .await
            .map(|_| Event::Failed),
    };
    match ended {
        Ok(event) => {
            shared.counters.record(event);
            tracing::debug!(
                pool = %config.name,
                job = %job.id,
                name = payload.name.as_deref(),
                attempts = job.attempts,
                status = if matches!(event, Event::Succeeded) { "succeeded" } else { "failed" },
                "completed"
            );
        }
        Err(e) => lost(shared, job.id, e).await,
    }
}

async fn lost(shared: &Shared, job: JobId, error: Error) {
    if error.is_lease_lost() && is_canceled(shared, job).await {
        tracing::debug!(pool = %shared.config.name, job = %job, "canceled before its attempt was recorded");
    } else {
        tracing::warn!(
            pool = %shared.config.name,
            job = %job,
            "cannot record the attempt; the job is recovered when its lease expires: {error}"
        );
    }
}

/// Aborts the task when dropped, so that aborting a member stops its renewals too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
