//! `GET /api/monitoring`: a sync pool's accounts per process, as an autoscaler reads them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{ItemId, PoolName};
use baton_sync::{PoolStatus, StaticAccounts, SyncConfig, SyncManager, WorkerContext};
use reqwest::StatusCode;
use tokio::sync::oneshot;

use crate::support::TestServer;

#[tokio::test]
async fn monitoring_reports_each_sync_process_its_accounts_and_the_unclaimed_count() {
    let server = TestServer::start().await;
    let accounts: Vec<ItemId> = (0..5)
        .map(|n| ItemId::new(format!("account-{n}")).unwrap())
        .collect();
    let mut config =
        SyncConfig::new(PoolName::new("mail").unwrap()).with_heartbeat_ttl(Duration::from_secs(2));
    config.maintenance_interval = Duration::from_millis(100);
    config.source_interval = Duration::from_millis(100);
    config.claim_spacing = Duration::from_millis(1);
    let identity = config.identity.clone();
    let worker = |context: WorkerContext| async move {
        context.cancelled().await;
    };
    let manager = SyncManager::new(
        config,
        Arc::new(server.backend.clone()),
        StaticAccounts::new(accounts),
        worker,
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(manager.run(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let url = format!("{}/api/monitoring?pool=mail", server.url);
    let started = Instant::now();
    let status = loop {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let status: PoolStatus = response.json().await.unwrap();
        if status.accounts == 5 && status.unclaimed == 0 {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.identities.len(), 1);
    assert_eq!(status.identities[0].identity, identity);
    assert_eq!(status.identities[0].accounts, 5);
    assert!(status.identities[0].alive);

    // After a clean shutdown every account is unclaimed and the process is gone.
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let status: PoolStatus = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!((status.accounts, status.unclaimed), (5, 5));
    assert!(status.identities.is_empty(), "{status:?}");

    // The default pool is `accounts`; a bad pool name is refused.
    let status: PoolStatus = http
        .get(format!("{}/api/monitoring", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.pool.as_str(), "accounts");
    let response = http
        .get(format!("{}/api/monitoring?pool=%20padded", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.shutdown().await;
}
