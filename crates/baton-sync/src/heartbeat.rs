//! The manager's heartbeat: beats every fifth of the TTL and, when the beats stop arriving,
//! declares every claim lost before the backend can hand the accounts to anyone else.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_core::{Heartbeat, Owner, Timestamp};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::status::Shared;

/// What the heartbeat task tells the manager and the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BeatState {
    /// Until when, by this process's monotonic clock, the backend surely holds a live
    /// heartbeat for the manager: the time the last successful beat was sent, plus the TTL,
    /// minus the safety margin. `None` before the first beat and after a lapse.
    pub(crate) confirmed_until: Option<Instant>,
    /// How many times the heartbeat lapsed. Workers started under one count are cancelled
    /// when it changes.
    pub(crate) lapses: u64,
}

impl BeatState {
    /// Whether the heartbeat is confirmed at `now`.
    pub(crate) fn confirmed_at(&self, now: Instant) -> bool {
        self.confirmed_until.is_some_and(|until| now < until)
    }
}

/// The heartbeat's timings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BeatTimings {
    pub(crate) ttl: Duration,
    pub(crate) interval: Duration,
    pub(crate) margin: Duration,
}

/// Beats for `owner` for ever, publishing every confirmation and lapse on `state`.
pub(crate) async fn beat_loop(
    heartbeats: Arc<dyn Heartbeat>,
    owner: Owner,
    timings: BeatTimings,
    state: watch::Sender<BeatState>,
    shared: Arc<Shared>,
) {
    let mut deadline: Option<Instant> = None;
    let mut next_beat = Instant::now();
    let lapse = |deadline: &mut Option<Instant>| {
        *deadline = None;
        state.send_modify(|state| {
            state.confirmed_until = None;
            state.lapses += 1;
        });
        shared.counters.heartbeat_lapses.bump();
        tracing::warn!(identity = %owner, "heartbeat lapsed: every claim is considered lost");
    };
    loop {
        // Wait for the next beat, lapsing if the confirmed time runs out first.
        loop {
            match deadline {
                Some(until) if until <= next_beat => {
                    sleep_until(until).await;
                    lapse(&mut deadline);
                }
                _ => {
                    sleep_until(next_beat).await;
                    break;
                }
            }
        }
        let sent = Instant::now();
        if deadline.is_some_and(|until| sent >= until) {
            // The process was paused or starved past its deadline.
            lapse(&mut deadline);
        }
        let call = timeout(timings.ttl, heartbeats.beat(&owner, timings.ttl));
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                biased;
                result = &mut call => break result,
                () = sleep_until(deadline.unwrap_or(sent)), if deadline.is_some() => {
                    lapse(&mut deadline);
                }
            }
        };
        match result {
            Ok(Ok(())) => {
                let until = sent + timings.ttl - timings.margin;
                if Instant::now() < until {
                    deadline = Some(until);
                    state.send_modify(|state| state.confirmed_until = Some(until));
                    shared.counters.beats.bump();
                    shared.set_last_beat(Timestamp::from_system_time(SystemTime::now()));
                } else if deadline.is_some() {
                    lapse(&mut deadline);
                }
            }
            Ok(Err(error)) => {
                shared.counters.beat_failures.bump();
                tracing::warn!(identity = %owner, %error, "heartbeat failed");
            }
            Err(_) => {
                shared.counters.beat_failures.bump();
                tracing::warn!(identity = %owner, "heartbeat timed out");
            }
        }
        next_beat = sent + timings.interval;
    }
}
