//! Calls cut short by their callers: [`drop_lock_call`] abandons a lock acquisition at a
//! point that moves later with each round, so that a backend's test can check what each drop
//! left behind.

use std::time::Duration;

use baton_core::{Lock, LockName, LockRequest, Owner};

/// How many rounds a test of dropped calls runs: enough for the abandonment point to sweep
/// from before the call reaches the server to after it answers.
pub const ROUNDS: u32 = 500;

/// Round `round` of a test of dropped calls: a lock acquisition on `backend`, abandoned after
/// `12 × round` turns of the scheduler unless it has answered by then (so that, over the rounds,
/// calls are dropped before they reach the server, mid-statement, while committing, or not at
/// all); one that answers is released. Each round takes a lock of its own, since a call dropped
/// while committing may have taken its lock. Returns whether the call was dropped.
///
/// # Panics
///
/// If an acquisition that answers fails or finds its lock taken, or a release fails.
pub async fn drop_lock_call<B: Lock>(backend: &B, round: u32) -> bool {
    let owner = Owner::new("dropper").expect("a valid owner");
    let name = LockName::new(format!("dropped-{round}")).expect("a valid name");
    let request =
        LockRequest::new([name], owner, Duration::from_secs(30)).expect("a valid request");
    let acquired = tokio::select! {
        biased;
        acquired = backend.acquire(&request) => acquired.expect("acquire"),
        () = yield_times(12 * round) => return true,
    };
    let lease = acquired.granted().expect("the lock is free");
    backend.release_lock(&lease).await.expect("release");
    false
}

async fn yield_times(turns: u32) {
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
}
