//! Helpers shared by the test modules.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton::api::auth::Access;
use baton::client::Client;
use baton_memory::MemoryBackend;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An API server running in this process on a memory backend.
pub struct TestServer {
    /// The backend, shared with the server, for arranging states the API cannot reach.
    pub backend: MemoryBackend,
    /// A client of the server.
    pub client: Client,
    /// The server's base URL.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a free port, open to every caller.
    pub async fn start() -> Self {
        Self::start_with(Access::default()).await
    }

    /// Starts a server as [`Self::start`] does, with `access` as its rule; its client sends no
    /// token.
    pub async fn start_with(access: Access) -> Self {
        let backend = MemoryBackend::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(baton::serve::serve_with_access(
            listener,
            Arc::new(backend.clone()),
            Duration::from_secs(3600),
            access,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = Client::new(&url).unwrap();
        Self {
            backend,
            client,
            url,
            stop: Some(stop),
            task,
        }
    }

    /// The JSON body of `GET <url><path>`, whatever its status.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Shuts the server down gracefully and waits, bounded, for it to stop.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops within 10s of shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Polls `/healthz` until it answers, for at most `limit`.
pub async fn wait_until_healthy(client: &Client, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match client.health().await {
            Ok(()) => return,
            Err(err) if Instant::now() >= deadline => {
                panic!("server not healthy after {limit:?}: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(purpose: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "baton-test-{purpose}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A task waiting in the line of a held lock through [`baton_tasklocks::FairLocks`].
pub struct LineWaiter {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<baton_core::Result<baton_tasklocks::Acquired>>,
}

impl LineWaiter {
    /// Starts `owner` waiting for `lock` with `reason`, and returns once it stands in line (it
    /// reported that it waits) or panics after 10 s.
    pub async fn start<B: baton_core::Lock + ?Sized + 'static>(
        backend: Arc<B>,
        lock: &str,
        owner: &str,
        reason: &str,
    ) -> Self {
        use baton_tasklocks::{FairLocks, LockSettings, Wait};
        let owner = baton_core::Owner::new(owner).unwrap();
        let locks = FairLocks::new(backend, owner, LockSettings::default()).unwrap();
        let names = [baton_core::LockName::new(lock).unwrap()];
        let reason = reason.to_owned();
        let in_line = Arc::new(tokio::sync::Notify::new());
        let (stop, mut cancel) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let in_line = in_line.clone();
            async move {
                let mut on_wait = |_: &_| in_line.notify_one();
                locks
                    .acquire(&names, &reason, Wait::Forever, &mut on_wait, &mut cancel)
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(10), in_line.notified())
            .await
            .expect("the waiter stands in line within 10 s");
        Self { stop, task }
    }

    /// Waits at most 10 s for the waiter to end and returns how its wait ended.
    pub async fn outcome(self) -> baton_tasklocks::Acquired {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the waiter ends within 10 s")
            .unwrap()
            .unwrap()
    }

    /// Gives up the wait and waits for the waiter to leave the line.
    pub async fn cancel(self) {
        let _ = self.stop.send(true);
        let outcome = self.outcome().await;
        assert!(
            matches!(outcome, baton_tasklocks::Acquired::Cancelled),
            "{outcome:?}"
        );
    }
}
