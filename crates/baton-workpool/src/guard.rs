//! The lease guard: a future that stops polling the handler it wraps once the leases it runs
//! under may have expired, judged on this host's monotonic clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// The instant after which a running handler must no longer be polled, shared between the
/// renewal task that moves it and the guard that enforces it.
#[derive(Clone, Debug)]
pub(crate) struct Deadline(Arc<DeadlineInner>);

#[derive(Debug)]
struct DeadlineInner {
    at: Mutex<Instant>,
    waker: AtomicWaker,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Self {
        Self(Arc::new(DeadlineInner {
            at: Mutex::new(at),
            waker: AtomicWaker::new(),
        }))
    }

    pub(crate) fn get(&self) -> Instant {
        *self.0.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, at: Instant) {
        *self.0.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
        self.0.waker.wake();
    }

    /// Moves the deadline earlier, never later.
    pub(crate) fn cut(&self, at: Instant) {
        {
            let mut current = self.0.at.lock().unwrap_or_else(|p| p.into_inner());
            if at >= *current {
                return;
            }
            *current = at;
        }
        self.0.waker.wake();
    }
}

/// How long before a lease's expiry (as this host reckons it) work under it stops: a margin
/// for clocks that run at slightly different rates.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(5))
}

/// The local deadline for a lease of `ttl` granted by a request sent at `sent`: the backend
/// started the lease no earlier than `sent`, so it cannot expire before `sent + ttl`.
pub(crate) fn local_deadline(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl.saturating_sub(safety_margin(ttl))
}

/// Ran out: the guard dropped the work because its leases may have expired.
#[derive(Debug)]
pub(crate) struct LeaseExpired;

/// Polls `inner` only while the deadline has not passed, checking the clock on every poll
/// before polling `inner`; a process resumed after a long pause therefore drops the work
/// without running another step of it.
pub(crate) struct Guarded<F> {
    inner: Pin<Box<F>>,
    deadline: Deadline,
    timer: Pin<Box<Sleep>>,
}

impl<F> Guarded<F> {
    pub(crate) fn new(inner: F, deadline: Deadline) -> Self {
        let at = deadline.get();
        Self {
            inner: Box::pin(inner),
            deadline,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, LeaseExpired>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.deadline.0.waker.register(cx.waker());
        loop {
            let at = self.deadline.get();
            if Instant::now() >= at {
                return Poll::Ready(Err(LeaseExpired));
            }
            if self.timer.deadline() != at {
                self.timer.as_mut().reset(at);
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                // The timer fired for an old deadline or just now: look again.
                continue;
            }
            break;
        }
        self.inner.as_mut().poll(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_past_its_deadline_is_dropped() {
        let deadline = Deadline::new(Instant::now() + Duration::from_millis(100));
        let started = Instant::now();
        let outcome = Guarded::new(std::future::pending::<()>(), deadline).await;
        assert!(outcome.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_deadline_lets_the_work_finish() {
        let deadline = Deadline::new(Instant::now() + Duration::from_millis(100));
        let renewer = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            renewer.set(Instant::now() + Duration::from_millis(500));
        });
        let work = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        };
        assert_eq!(Guarded::new(work, deadline).await.ok(), Some("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn cutting_the_deadline_stops_the_work_at_once() {
        let deadline = Deadline::new(Instant::now() + Duration::from_secs(3600));
        let cutter = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cutter.cut(Instant::now());
        });
        let started = Instant::now();
        assert!(
            Guarded::new(std::future::pending::<()>(), deadline)
                .await
                .is_err()
        );
        assert_eq!(started.elapsed(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn work_whose_deadline_passed_is_never_polled_again() {
        let deadline = Deadline::new(Instant::now() + Duration::from_millis(5));
        // As a process resumed after a pause finds it: the deadline long gone.
        tokio::time::advance(Duration::from_secs(10)).await;
        let polled = AtomicBool::new(false);
        let work = std::future::poll_fn(|_| {
            polled.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(())
        });
        assert!(Guarded::new(work, deadline).await.is_err());
        assert!(!polled.load(Ordering::SeqCst));
    }

    #[test]
    fn the_local_deadline_ends_a_margin_before_the_lease() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(local_deadline(sent, ttl), sent + Duration::from_secs(9));
    }
}
