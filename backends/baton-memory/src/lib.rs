//! Baton's in-process backend: all five coordination traits in memory, with expiry read from an
//! injectable [`Clock`], for tests, simulations and single-process embedding.
//!
//! Every [`MemoryBackend`] is independent (there is no global state), and clones share one store.
//!
//! ```
//! use std::time::Duration;
//! use baton_core::{NewJob, Owner, Queue, QueueName};
//! use baton_memory::MemoryBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> baton_core::Result<()> {
//! let backend = MemoryBackend::new();
//! let queue = QueueName::new("emails")?;
//! let id = backend.enqueue(&NewJob::new(queue.clone(), serde_json::json!({"to": "a@b.c"}))?).await?;
//! let owner = Owner::new("worker-1")?;
//! let reserved = backend.reserve(&[queue], &owner, Duration::from_secs(30), 1).await?;
//! assert_eq!(reserved[0].job.id, id);
//! backend.complete(&reserved[0].lease, serde_json::json!("sent")).await?;
//! # Ok(())
//! # }
//! ```

mod claim;
mod dispatch;
mod heartbeat;
mod lock;
mod queue;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use baton_core::{Clock, SystemClock, Timestamp};

/// The in-memory backend: a cheap, cloneable handle to one store.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    jobs: Mutex<queue::Jobs>,
    locks: Mutex<lock::Locks>,
    lock_changed: tokio::sync::Notify,
    pools: Mutex<claim::Pools>,
    heartbeats: Mutex<heartbeat::Heartbeats>,
    dispatch: baton_hub::Hub,
}

impl MemoryBackend {
    /// A new, empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A new, empty store whose expiry follows `clock`; pass a
    /// [`ManualClock`](baton_core::ManualClock) to test expiry without sleeping.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                jobs: Mutex::default(),
                locks: Mutex::default(),
                lock_changed: tokio::sync::Notify::new(),
                pools: Mutex::default(),
                heartbeats: Mutex::default(),
                dispatch: baton_hub::Hub::default(),
            }),
        }
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: every critical section leaves the state
/// consistent before it can panic, so a poisoned lock holds no half-done change.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
