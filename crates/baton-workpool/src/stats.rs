//! Counters: what a member did since it started, and the periodic report.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of a member's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Attempts started.
    pub started: u64,
    /// Attempts running now.
    pub running: u64,
    /// Jobs this member ended (succeeded, failed or canceled).
    pub completed: u64,
    /// Jobs this member ended as succeeded.
    pub succeeded: u64,
    /// Jobs this member ended as failed.
    pub failed: u64,
    /// Failed attempts this member scheduled for a retry.
    pub retries: u64,
    /// Jobs this member canceled.
    pub canceled: u64,
    /// Completion callbacks this member ran and recorded.
    pub callbacks: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    running: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    canceled: AtomicU64,
    callbacks: AtomicU64,
}

/// Which counter an event bumps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Started,
    Succeeded,
    Failed,
    Retried,
    Canceled,
    Callback,
}

impl Counters {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::Started => {
                self.running.fetch_add(1, Ordering::Relaxed);
                &self.started
            }
            Event::Succeeded => &self.succeeded,
            Event::Failed => &self.failed,
            Event::Retried => &self.retries,
            Event::Canceled => &self.canceled,
            Event::Callback => &self.callbacks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempt_ended(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PoolStats {
        let succeeded = self.succeeded.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let canceled = self.canceled.load(Ordering::Relaxed);
        PoolStats {
            started: self.started.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            completed: succeeded + failed + canceled,
            succeeded,
            failed,
            retries: self.retries.load(Ordering::Relaxed),
            canceled,
            callbacks: self.callbacks.load(Ordering::Relaxed),
        }
    }
}

impl PoolStats {
    /// What happened between `earlier` and this snapshot (`running` is this snapshot's).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            started: self.started.saturating_sub(earlier.started),
            running: self.running,
            completed: self.completed.saturating_sub(earlier.completed),
            succeeded: self.succeeded.saturating_sub(earlier.succeeded),
            failed: self.failed.saturating_sub(earlier.failed),
            retries: self.retries.saturating_sub(earlier.retries),
            canceled: self.canceled.saturating_sub(earlier.canceled),
            callbacks: self.callbacks.saturating_sub(earlier.callbacks),
        }
    }
}
