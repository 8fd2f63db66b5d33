//! Several managers in one process on one memory backend, on tokio's paused clock (which the
//! backend's clock follows): balance, takeover, joining, shutdown, the source, lost claims, the
//! claim period and monitoring.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use baton_core::{Claim, Heartbeat, ItemId};
use baton_memory::MemoryBackend;
use baton_sync::{StopReason, pool_status};
use baton_testkit::faulty::{Faulty, Mode, Op};
use support::{Cluster, account, config, identity, pool, wait_for};

/// The heartbeat TTL of [`support::config`].
const TTL: Duration = Duration::from_secs(1);
/// Its maintenance interval.
const MAINTENANCE: Duration = Duration::from_millis(500);

#[tokio::test(start_paused = true)]
async fn three_managers_share_a_hundred_accounts_each_held_by_exactly_one() {
    let mut cluster = Cluster::new(100);
    for who in 0..3 {
        cluster.start(who);
    }
    cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts().values().all(|&held| held >= 32)
        })
        .await;
    // Every manager holds at most its share (34) plus the slack (1), and keeps it so.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(cluster.settled().await);
    let counts = cluster.counts();
    assert_eq!(counts.values().sum::<usize>(), 100);
    assert!(
        counts.values().all(|&held| (32..=35).contains(&held)),
        "{counts:?}"
    );
    // Nothing moved once settled: every account ran exactly once.
    assert_eq!(cluster.log.lock().unwrap().runs.len(), 100);
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn claims_are_spaced_so_that_one_manager_does_not_take_everything_at_once() {
    let mut cluster = Cluster::new(100);
    let mut slow = config(0);
    slow.claim_spacing = Duration::from_millis(100);
    let handle = cluster.start_with(0, slow);
    // The first claim comes after the start-up delay (200 ms), then one every 100 ms.
    tokio::time::sleep(Duration::from_millis(1_250)).await;
    let held = handle.running().len();
    assert!((9..=12).contains(&held), "{held} accounts after 1.25 s");
    // A second manager joining now finds most accounts free and gets half of them.
    cluster.start(1);
    cluster
        .wait_settled(Duration::from_secs(30), |cluster| {
            cluster.counts().values().all(|&held| held == 50)
        })
        .await;
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn a_crashed_managers_accounts_are_taken_over_within_ttl_plus_the_maintenance_interval() {
    let mut cluster = Cluster::new(100);
    for who in 0..3 {
        cluster.start(who);
    }
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    let orphaned = cluster.counts()[&2];
    cluster.crash(2).await;
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts().values().sum::<usize>() == 100
        })
        .await;
    // The heartbeat expires within its TTL, the next maintenance reaps, then the survivors
    // claim the orphans 10 ms apart, two at a time.
    let bound = TTL + MAINTENANCE + Duration::from_millis(10) * orphaned as u32;
    assert!(took <= bound, "takeover took {took:?}, more than {bound:?}");
    let counts = cluster.counts();
    assert!(counts.values().all(|&held| held == 50), "{counts:?}");
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn a_fourth_manager_gets_its_share_within_a_bounded_time_moving_only_the_excess() {
    let mut cluster = Cluster::new(100);
    for who in 0..3 {
        cluster.start(who);
    }
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    let runs_before = cluster.log.lock().unwrap().runs.len();
    cluster.start(3);
    // Within two maintenance rounds the others see it and hand back their excess; it claims
    // the 25 accounts 10 ms apart.
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts().get(&3).is_some_and(|&held| held >= 25)
        })
        .await;
    let bound = MAINTENANCE * 2 + Duration::from_millis(200) + Duration::from_millis(10) * 25;
    assert!(took <= bound, "joining took {took:?}, more than {bound:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = cluster.counts();
    assert!(counts.values().all(|&held| held == 25), "{counts:?}");
    // Exactly the 25 accounts the newcomer needed moved, once each.
    assert_eq!(cluster.log.lock().unwrap().runs.len(), runs_before + 25);
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_worker_and_returns_every_claim() {
    let mut cluster = Cluster::new(30);
    cluster.start(0);
    cluster.start(1);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    cluster.stop(0).await.unwrap();
    let items = cluster.backend.items(&pool()).await.unwrap();
    assert!(
        items.iter().all(|status| status
            .holder
            .as_ref()
            .is_none_or(|lease| *lease.owner() != identity(0))),
        "manager 0 still holds accounts after shutdown"
    );
    assert!(!cluster.backend.alive(&identity(0)).await.unwrap());
    assert!(
        !cluster
            .backend
            .dead_owners()
            .await
            .unwrap()
            .contains(&identity(0))
    );
    {
        let log = cluster.log.lock().unwrap();
        let stopped: Vec<_> = log.runs.iter().filter(|run| run.who == 0).collect();
        assert!(!stopped.is_empty());
        assert!(
            stopped
                .iter()
                .all(|run| run.reason == Some(StopReason::Shutdown))
        );
    }
    // The survivor takes them all at once, without waiting for any expiry.
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts()[&1] == 30
        })
        .await;
    assert!(took <= MAINTENANCE + Duration::from_millis(400), "{took:?}");
    cluster.stop(1).await.unwrap();
    let items = cluster.backend.items(&pool()).await.unwrap();
    assert!(items.iter().all(|status| status.holder.is_none()));
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn accounts_added_to_and_removed_from_the_source_show_up_and_leave() {
    let mut cluster = Cluster::new(20);
    cluster.start(0);
    cluster.start(1);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    for n in 20..30 {
        cluster.source.insert(account(n));
    }
    for n in 0..5 {
        cluster.source.remove(&account(n));
    }
    // Within a source interval (500 ms) the pool matches and the new accounts run.
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.running().len() == 25
        })
        .await;
    assert!(took <= Duration::from_secs(2), "{took:?}");
    {
        let log = cluster.log.lock().unwrap();
        for n in 0..5 {
            let runs: Vec<_> = log
                .runs
                .iter()
                .filter(|run| run.account == account(n))
                .collect();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].reason, Some(StopReason::AccountRemoved));
        }
    }
    let items = cluster.backend.items(&pool()).await.unwrap();
    assert_eq!(items.len(), 25);
    assert!(!items.iter().any(|status| status.item == account(3)));
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn a_manager_whose_heartbeat_fails_drops_its_workers_before_anyone_takes_over() {
    let mut cluster = Cluster::new(20);
    let faulty = Arc::new(Faulty::new(cluster.backend.clone()));
    let control = faulty.control();
    cluster.start_on(0, config(0), faulty);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    cluster.start(1);
    cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts()[&1] == 10
        })
        .await;
    let held: Vec<_> = {
        let log = cluster.log.lock().unwrap();
        log.contexts
            .iter()
            .filter(|((who, _), _)| *who == 0)
            .map(|(_, context)| context.clone())
            .collect()
    };
    assert_eq!(held.len(), 10);
    // Manager 0's heartbeats now fail; every other call still works.
    control.only([Op::Beat]);
    control.set_mode(Mode::Fail);
    let failed_at = tokio::time::Instant::now();
    wait_for("manager 0 drops its workers", TTL, || {
        held.iter()
            .all(|context| context.stop_reason() == Some(StopReason::ClaimLost))
    })
    .await;
    assert!(held.iter().all(|context| !context.is_current()));
    // Manager 1 takes the accounts over, but only once manager 0's heartbeat has expired in
    // the backend, after every worker of manager 0 stopped.
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts()[&1] == 20
        })
        .await;
    assert!(
        failed_at.elapsed() >= TTL - Duration::from_millis(200),
        "{took:?}"
    );
    cluster.assert_no_overlap();
    // The old tokens are refused by the backend.
    for context in &held {
        let error = cluster
            .backend
            .renew_claim(context.claim(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
        assert!(context.confirm().await.unwrap_err().is_lease_lost());
        let error = cluster
            .backend
            .release_claim(context.claim())
            .await
            .unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
    }
    // Once its heartbeat works again, manager 0 comes back and gets its share.
    control.heal();
    cluster
        .wait_settled(Duration::from_secs(10), |cluster| {
            cluster.counts()[&0] == 10
        })
        .await;
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_ends_on_its_own_returns_its_account_to_the_pool() {
    let mut cluster = Cluster::new(4);
    cluster
        .log
        .lock()
        .unwrap()
        .end_on_own
        .insert(account(2), Duration::from_secs(2));
    let handle = cluster.start(0);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    wait_for("the worker ends on its own", Duration::from_secs(5), || {
        handle.metrics().workers_ended_on_their_own == 1
    })
    .await;
    // The account went back to the pool and was claimed again, under a new token.
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    let log = cluster.log.lock().unwrap();
    let runs: Vec<_> = log
        .runs
        .iter()
        .filter(|run| run.account == account(2))
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].reason, None);
    assert!(runs[1].token > runs[0].token);
    drop(log);
    assert_eq!(handle.metrics().claims_released, 1);
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn claims_end_after_their_period_and_go_to_the_back_of_the_pool() {
    let mut cluster = Cluster::new(6);
    let mut first = config(0);
    first.claim_period = Duration::from_secs(5);
    let handle = cluster.start_with(0, first);
    let mut second = config(1);
    second.claim_period = Duration::from_secs(5);
    cluster.start_with(1, second);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    let tokens_before: Vec<_> = handle
        .running()
        .into_iter()
        .map(|running| running.token)
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    assert!(
        handle.metrics().periods_ended >= 3,
        "{:?}",
        handle.metrics()
    );
    let log = cluster.log.lock().unwrap();
    assert!(
        log.runs
            .iter()
            .any(|run| run.reason == Some(StopReason::PeriodEnded))
    );
    // Every claim ended before its lease could expire: none was lost.
    assert!(
        log.runs
            .iter()
            .all(|run| run.reason != Some(StopReason::ClaimLost))
    );
    drop(log);
    assert!(
        handle
            .running()
            .iter()
            .all(|running| !tokens_before.contains(&running.token))
    );
    cluster.assert_no_overlap();
}

#[tokio::test(start_paused = true)]
async fn monitoring_reports_accounts_per_identity_the_unclaimed_count_and_heartbeats() {
    let mut cluster = Cluster::new(10);
    let first = cluster.start(0);
    cluster.start(1);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    cluster
        .backend
        .add(&pool(), &[ItemId::new("not-in-source").unwrap()])
        .await
        .unwrap();
    let status = pool_status(&cluster.backend, &cluster.backend, &pool())
        .await
        .unwrap();
    assert_eq!(status.accounts, 11);
    assert_eq!(status.identities.len(), 2);
    assert!(
        status
            .identities
            .iter()
            .all(|identity| identity.alive && identity.accounts == 5)
    );
    assert!(status.unclaimed <= 1);
    // Every manager's last beat is on record, by the backend's clock, whichever manager asks.
    let own = first.status().await.unwrap();
    assert_eq!(own.identities, status.identities);
    for identity in &status.identities {
        let (Some(at), Some(expires)) = (identity.last_heartbeat, identity.heartbeat_expires_at)
        else {
            panic!("no heartbeat on record for {identity:?}");
        };
        assert!(at < expires, "{identity:?}");
    }
    let metrics = first.metrics();
    assert_eq!(metrics.running, 5);
    assert_eq!(metrics.live_managers, 2);
    assert!(metrics.beats >= 1 && metrics.last_heartbeat.is_some());
    // A crashed manager shows up as not alive until its accounts are reaped.
    cluster.crash(1).await;
    tokio::time::sleep(TTL).await;
    let status = pool_status(&cluster.backend, &cluster.backend, &pool())
        .await
        .unwrap();
    let dead = status
        .identities
        .iter()
        .find(|status| status.identity == identity(1));
    assert!(dead.is_none_or(|dead| !dead.alive));
    // The survivor kept beating after the crash; a crashed manager still listed shows its
    // last beat from before it.
    let survivor = status
        .identities
        .iter()
        .find(|status| status.identity == identity(0))
        .unwrap();
    assert!(survivor.alive);
    if let Some(dead) = dead {
        assert!(dead.last_heartbeat < survivor.last_heartbeat, "{status:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_manager_restarted_with_the_same_identity_returns_what_it_held_before() {
    let backend = MemoryBackend::with_clock(support::TokioClock::new());
    let mut cluster = Cluster::new(8);
    cluster.backend = backend;
    cluster.start(0);
    cluster
        .wait_settled(Duration::from_secs(10), |_| true)
        .await;
    cluster.crash(0).await;
    // Restarted at once, before its old heartbeat expired: it returns its old claims and
    // claims them anew instead of waiting for them to be reaped.
    let handle = cluster.start(0);
    let took = cluster
        .wait_settled(Duration::from_secs(10), |cluster| cluster.counts()[&0] == 8)
        .await;
    assert!(took < TTL, "{took:?}");
    assert_eq!(handle.metrics().claims_released, 8);
    cluster.assert_no_overlap();
}
