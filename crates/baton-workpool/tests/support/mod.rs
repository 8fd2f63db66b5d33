//! What the work-pool tests share: backends by kind, each test on fresh tables (or a fresh
//! file), and bounded waits.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_core::Backend;
pub use baton_testservers::Kind;

/// Where a fresh backend of `kind` lives: a URL and a table prefix no other test uses.
#[derive(Clone, Debug)]
pub struct Location {
    pub kind: Kind,
    pub url: String,
    pub prefix: String,
}

impl Location {
    pub fn fresh(kind: Kind) -> Self {
        let prefix = baton_testservers::fresh_prefix("twp");
        let url = kind.url(&format!("baton-workpool-{prefix}"));
        Self { kind, url, prefix }
    }

    /// Opens the backend (a new, empty one for memory).
    pub async fn connect(&self) -> Arc<dyn Backend> {
        baton_testservers::connect(&self.url, &self.prefix).await
    }

    /// Removes the SQLite file or drops the tables with this prefix, giving up (and leaving
    /// the tables) after 20 s: a table another session still uses is not worth a hung test.
    pub async fn clean_up(&self) {
        let drop = baton_testservers::drop_prefixed(&self.url, &self.prefix);
        if tokio::time::timeout(Duration::from_secs(20), drop)
            .await
            .is_err()
        {
            eprintln!(
                "left the tables of prefix {} in place: dropping them took too long",
                self.prefix
            );
        }
    }
}

/// Sends this test's logs to the test output, filtered by `RUST_LOG` (warnings by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits until `check` returns `Some`, looking every 10 ms, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
