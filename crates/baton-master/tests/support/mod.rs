//! What the master tests share: a job that records every `start` and `stop`, and settings
//! short enough for tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::FencingToken;
use baton_master::{Leadership, MasterJob, MasterSettings, StopCause};
use tokio::sync::mpsc;

/// A call the executor made to a [`Recorder`].
#[derive(Debug, Clone)]
pub enum Call {
    /// `start` on instance `who`.
    Start { who: usize, token: FencingToken },
    /// `stop` on instance `who`; `still_current` is whether the leadership handed to `start`
    /// still said it was current when `stop` ran (it must not).
    Stop {
        who: usize,
        token: FencingToken,
        cause: StopCause,
        still_current: bool,
    },
}

/// A master job that reports its calls on a channel.
pub struct Recorder {
    who: usize,
    calls: mpsc::UnboundedSender<Call>,
    leadership: Arc<Mutex<Option<Leadership>>>,
}

impl Recorder {
    /// A recorder for instance `who`.
    pub fn new(who: usize, calls: mpsc::UnboundedSender<Call>) -> Self {
        Self {
            who,
            calls,
            leadership: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl MasterJob for Recorder {
    async fn start(&self, leadership: Leadership) {
        let token = leadership.token();
        *self.leadership.lock().unwrap() = Some(leadership);
        let _ = self.calls.send(Call::Start {
            who: self.who,
            token,
        });
    }

    async fn stop(&self, token: FencingToken, cause: StopCause) {
        let still_current = self
            .leadership
            .lock()
            .unwrap()
            .take()
            .is_some_and(|leadership| leadership.is_current());
        let _ = self.calls.send(Call::Stop {
            who: self.who,
            token,
            cause,
            still_current,
        });
    }
}

/// Tight timings: no initial delay, a `lease_ms` lease renewed every `heartbeat_ms`.
pub fn tight(lease_ms: u64, heartbeat_ms: u64) -> MasterSettings {
    MasterSettings {
        init_delay: Duration::ZERO,
        check_master_interval: Duration::from_secs(30),
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        max_heartbeat_retry_count: 3,
        lease: Some(Duration::from_millis(lease_ms)),
    }
}

/// The next call, failing the test if none comes within `within`.
pub async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>, within: Duration) -> Call {
    tokio::time::timeout(within, calls.recv())
        .await
        .unwrap_or_else(|_| panic!("no start or stop within {within:?}"))
        .expect("the recorders are gone")
}
