//! Calls cut short by their callers: [`drop_lock_calls`] drops lock acquisitions at ever later
//! points, so that a backend's test can check what each drop left behind.

use std::time::Duration;

use baton_core::{Lock, LockName, LockRequest, Owner};

/// How many acquisitions [`drop_lock_calls`] makes.
pub const ROUNDS: u32 = 500;

/// Makes [`ROUNDS`] lock acquisitions on `backend`, the n-th abandoned after `12 × n` turns of
/// the scheduler unless it has answered by then (so that some are dropped before they reach
/// the server, some mid-statement, some while committing, some not at all), releasing those
/// that answer, and awaits `after_each(n)` after each. Each takes a lock of its own, since one
/// dropped while committing may have taken its lock. Returns how many were dropped.
///
/// # Panics
///
/// If an acquisition that answers fails or finds its lock taken, or a release fails.
pub async fn drop_lock_calls<B: Lock>(backend: &B, mut after_each: impl AsyncFnMut(u32)) -> u32 {
    let owner = Owner::new("dropper").expect("a valid owner");
    let mut dropped = 0;
    for round in 0..ROUNDS {
        let name = LockName::new(format!("dropped-{round}")).expect("a valid name");
        let request = LockRequest::new([name], owner.clone(), Duration::from_secs(30))
            .expect("a valid request");
        let acquired = tokio::select! {
            biased;
            acquired = backend.acquire(&request) => Some(acquired.expect("acquire")),
            () = yield_times(12 * round) => None,
        };
        match acquired {
            Some(acquired) => {
                let lease = acquired.granted().expect("the lock is free");
                backend.release_lock(&lease).await.expect("release");
            }
            None => dropped += 1,
        }
        after_each(round).await;
    }
    dropped
}

async fn yield_times(turns: u32) {
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
}
