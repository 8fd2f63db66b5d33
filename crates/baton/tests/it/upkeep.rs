//! What `baton serve` looks after besides requests, seen from outside: the accounts of a dead
//! sync process return to their pool with no sync process running, and `/metrics` reports
//! claims per owner and each master's leader.

use std::time::Duration;

use baton_core::{ItemId, Owner, PoolName};
use tokio::time::Instant;

use crate::cli::{Scratch, lead, serve_in, terminate};
use crate::support::temp_dir;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn serve_reaps_a_dead_owner_s_accounts_and_reports_claims_and_leaders() {
    let dir = Scratch(temp_dir("upkeep"));
    let url = format!("sqlite://{}", dir.0.join("baton.db").display());
    let backend = baton::backend::connect(&url, "baton_").await.unwrap();
    let pool = PoolName::new("accounts").unwrap();
    let accounts: Vec<ItemId> = (0..3)
        .map(|n| ItemId::new(format!("account-{n}")).unwrap())
        .collect();
    backend.add(&pool, &accounts).await.unwrap();
    // `live` beats for long and holds two accounts; `dead` held one under a long claim, but its
    // heartbeat has lapsed: it crashed.
    let live = Owner::new("live-host").unwrap();
    let dead = Owner::new("dead-host").unwrap();
    backend.beat(&live, Duration::from_secs(600)).await.unwrap();
    backend.beat(&dead, Duration::from_millis(1)).await.unwrap();
    let long = Duration::from_secs(600);
    let orphan = backend.claim(&pool, &dead, long).await.unwrap().unwrap();
    for _ in 0..2 {
        backend.claim(&pool, &live, long).await.unwrap().unwrap();
    }
    lead(backend.as_ref(), "nightly", "live-host").await;
    let (serve, server) = serve_in(&dir.0, &url, &[]).await;

    // The reaper returns the dead host's account; the live host keeps its two.
    let deadline = Instant::now() + WAIT;
    loop {
        let items = backend.items(&pool).await.unwrap();
        let holder = |item: &ItemId| {
            items
                .iter()
                .find(|status| &status.item == item)
                .and_then(|status| status.holder.as_ref().map(|lease| lease.owner().clone()))
        };
        if holder(&orphan.item).is_none() {
            let held = items
                .iter()
                .filter(|status| status.holder.is_some())
                .count();
            assert_eq!(held, 2, "the live host's accounts stay claimed: {items:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orphan was never reaped: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Claims per owner and the master's leader reach /metrics (read every few seconds).
    let wanted = [
        "baton_claims{pool=\"accounts\",owner=\"live-host\"} 2",
        "baton_claims_unclaimed{pool=\"accounts\"} 1",
        "baton_master_leader{master=\"nightly\",owner=\"live-host\"} 1",
        "baton_master_leader_changes_total{master=\"nightly\"} 0",
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let text = reqwest::get(format!("{server}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|line| !text.lines().any(|l| l == **line))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let serve = terminate(serve).await;
    assert!(serve.status.success(), "{serve:?}");
}
