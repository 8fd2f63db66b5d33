//! Cases for [`Lock`]: exclusive, all-or-nothing, expiring named leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use baton_core::{Acquire, Backend, Lock, LockLease, LockName, LockRequest, Owner};
use tokio::task::JoinSet;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, Rng, SHORT_TTL, ensure, job, join_all, let_others_run, lock,
    locks, owner, queue, within,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "a free lock is granted and listed with its owner and reason",
            free_lock_granted
        ),
        case!(
            "a held lock is busy for another owner, naming the holder and its reason",
            busy_names_holder
        ),
        case!(
            "locks are not re-entrant for their own owner",
            not_reentrant
        ),
        case!(
            "a multi-name acquire takes nothing when one name is busy",
            all_or_nothing
        ),
        case!(
            "releasing a lease frees every name in it",
            release_frees_all
        ),
        case!(
            "holders lists live holders ordered by name and omits expired ones",
            holders_ordered_and_live
        ),
        case!(
            "an expired lock is free for another owner",
            expired_lock_taken_over
        ),
        case!(
            "renewing a lock before expiry keeps it past its first ttl",
            renew_extends
        ),
        case!(
            "an acquire that waits is granted when the holder releases",
            wait_granted_on_release
        ),
        case!(
            "an acquire that waits is granted when the holder's lease expires",
            wait_granted_on_expiry
        ),
        case!(
            "an acquire that waits gives up busy when the lock is never freed",
            wait_gives_up
        ),
        case!(
            "lock calls dropped mid-flight leave the backend answering and losing no write",
            dropped_calls
        ),
        case!(
            "many concurrent contenders never hold the same lock at once",
            mutual_exclusion
        ),
        case!(
            "owners asking for overlapping sets in opposite order never deadlock",
            no_deadlock
        ),
    ]
}

/// A request by `holder` for `names`, held for `ttl`, not waiting.
pub(super) fn request(
    names: &[&str],
    holder: &Owner,
    ttl: Duration,
) -> Result<LockRequest, String> {
    LockRequest::new(locks(names)?, holder.clone(), ttl).ctx("lock request")
}

/// The lease of a granted acquire, or a case error naming the holders.
pub(super) fn expect_granted(outcome: Acquire, what: &str) -> Result<LockLease, String> {
    match outcome {
        Acquire::Granted(lease) => Ok(lease),
        Acquire::Busy(holders) => Err(format!("{what}: expected a grant, got busy {holders:?}")),
    }
}

/// Acquires `names` for `holder`, failing the case if they are busy.
pub(super) async fn acquire<B: Lock>(
    backend: &B,
    names: &[&str],
    holder: &Owner,
    ttl: Duration,
) -> Result<LockLease, String> {
    let outcome = backend
        .acquire(&request(names, holder, ttl)?)
        .await
        .ctx("acquire")?;
    expect_granted(outcome, &format!("acquire {names:?} for {holder}"))
}

/// Checks that `outcome` is busy and returns the holders.
fn expect_busy(outcome: Acquire, what: &str) -> Result<Vec<baton_core::LockHolder>, String> {
    match outcome {
        Acquire::Busy(holders) => Ok(holders),
        Acquire::Granted(lease) => Err(format!("{what}: expected busy, got a grant {lease:?}")),
    }
}

async fn free_lock_granted<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let req = request(&["app:42"], &holder, LONG_TTL)?
        .with_reason("backup of app 42")
        .ctx("reason")?;
    let lease = expect_granted(h.backend.acquire(&req).await.ctx("acquire")?, "acquire")?;
    ensure!(
        lease.names == locks(&["app:42"])?,
        "lease names {:?}",
        lease.names
    );
    ensure!(
        lease.lease.owner() == &holder,
        "lease owner {}",
        lease.lease.owner()
    );
    ensure!(
        lease.reason == "backup of app 42",
        "lease reason {:?}",
        lease.reason
    );
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(holders.len() == 1, "holders: {holders:?}");
    let listed = &holders[0];
    ensure!(
        listed.name == lock("app:42")? && listed.lease == lease.lease,
        "holder listed as {listed:?}, granted {lease:?}"
    );
    ensure!(
        listed.reason == "backup of app 42",
        "listed reason {:?}",
        listed.reason
    );
    ensure!(
        listed.since <= lease.lease.expires_at(),
        "granted since {} after it expires {}",
        listed.since,
        lease.lease.expires_at()
    );
    Ok(())
}

async fn busy_names_holder<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let waiter = owner("waiter")?;
    let req = request(&["app:42"], &holder, LONG_TTL)?
        .with_reason("backup of app 42 to finish")
        .ctx("reason")?;
    let lease = expect_granted(h.backend.acquire(&req).await.ctx("acquire")?, "acquire")?;
    let outcome = h
        .backend
        .acquire(&request(&["app:42", "app:43"], &waiter, LONG_TTL)?)
        .await
        .ctx("contending acquire")?;
    let holders = expect_busy(outcome, "contending acquire")?;
    let app_42 = lock("app:42")?;
    let blocking = holders
        .iter()
        .find(|holder| holder.name == app_42)
        .ctx("busy holders naming app:42")?;
    ensure!(
        blocking.lease.owner() == &holder,
        "busy names owner {}, expected {holder}",
        blocking.lease.owner()
    );
    ensure!(
        blocking.reason == "backup of app 42 to finish",
        "busy gives reason {:?}",
        blocking.reason
    );
    ensure!(
        blocking.lease.token() == lease.lease.token(),
        "busy names token {}, the holder has {}",
        blocking.lease.token(),
        lease.lease.token()
    );
    Ok(())
}

async fn not_reentrant<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let first = acquire(&h.backend, &["update"], &holder, LONG_TTL).await?;
    let again = h
        .backend
        .acquire(&request(&["update"], &holder, LONG_TTL)?)
        .await
        .ctx("second acquire")?;
    let holders = expect_busy(again, "the same owner acquiring a lock it holds")?;
    ensure!(
        holders.iter().any(|h| h.lease == first.lease),
        "busy does not name the first grant: {holders:?}"
    );
    h.backend.release_lock(&first).await.ctx("release")?;
    Ok(())
}

async fn all_or_nothing<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let greedy = owner("greedy")?;
    acquire(&h.backend, &["b"], &holder, LONG_TTL).await?;
    let outcome = h
        .backend
        .acquire(&request(&["a", "b", "c"], &greedy, LONG_TTL)?)
        .await
        .ctx("multi-name acquire")?;
    expect_busy(outcome, "multi-name acquire with one busy name")?;
    let holders = h.backend.holders().await.ctx("holders")?;
    let names: Vec<&str> = holders.iter().map(|h| h.name.as_str()).collect();
    ensure!(
        names == ["b"],
        "after a refused multi-name acquire, held names are {names:?}, expected only b"
    );
    let other = owner("other")?;
    acquire(&h.backend, &["a"], &other, LONG_TTL).await?;
    acquire(&h.backend, &["c"], &other, LONG_TTL).await?;
    Ok(())
}

async fn release_frees_all<B: Lock>(h: Harness<B>) -> CaseResult {
    let first = owner("first")?;
    let second = owner("second")?;
    let lease = acquire(&h.backend, &["a", "b", "c"], &first, LONG_TTL).await?;
    h.backend.release_lock(&lease).await.ctx("release")?;
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(holders.is_empty(), "holders after release: {holders:?}");
    acquire(&h.backend, &["a"], &second, LONG_TTL).await?;
    acquire(&h.backend, &["c"], &second, LONG_TTL).await?;
    acquire(&h.backend, &["b"], &second, LONG_TTL).await?;
    Ok(())
}

async fn holders_ordered_and_live<B: Lock>(h: Harness<B>) -> CaseResult {
    let long = owner("long")?;
    let short = owner("short")?;
    acquire(&h.backend, &["m", "c"], &long, LONG_TTL).await?;
    acquire(&h.backend, &["a", "x"], &short, SHORT_TTL).await?;
    let holders = h.backend.holders().await.ctx("holders")?;
    let names: Vec<&str> = holders.iter().map(|h| h.name.as_str()).collect();
    ensure!(
        names == ["a", "c", "m", "x"],
        "holders ordered as {names:?}"
    );
    for holder in &holders {
        let expected = if ["a", "x"].contains(&holder.name.as_str()) {
            &short
        } else {
            &long
        };
        ensure!(
            holder.lease.owner() == expected,
            "{} held by {}, expected {expected}",
            holder.name,
            holder.lease.owner()
        );
    }
    h.time.pass(PAST_SHORT_TTL).await;
    let holders = h.backend.holders().await.ctx("holders")?;
    let names: Vec<&str> = holders.iter().map(|h| h.name.as_str()).collect();
    ensure!(
        names == ["c", "m"],
        "after the short lease expired holders are {names:?}, expected [c, m]"
    );
    Ok(())
}

async fn expired_lock_taken_over<B: Lock>(h: Harness<B>) -> CaseResult {
    let first = owner("first")?;
    let second = owner("second")?;
    let old = acquire(&h.backend, &["master"], &first, SHORT_TTL).await?;
    let outcome = h
        .backend
        .acquire(&request(&["master"], &second, LONG_TTL)?)
        .await
        .ctx("acquire")?;
    expect_busy(outcome, "acquire before expiry")?;
    h.time.pass(PAST_SHORT_TTL).await;
    let new = acquire(&h.backend, &["master"], &second, LONG_TTL).await?;
    ensure!(
        new.lease.token() > old.lease.token(),
        "takeover token {} not above expired token {}",
        new.lease.token(),
        old.lease.token()
    );
    Ok(())
}

async fn renew_extends<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let rival = owner("rival")?;
    let ttl = SHORT_TTL * 3;
    let lease = acquire(&h.backend, &["a", "b"], &holder, ttl).await?;
    h.time.pass(ttl * 2 / 3).await;
    let renewed = h.backend.renew_lock(&lease, ttl).await.ctx("renew")?;
    ensure!(
        renewed.lease.token() == lease.lease.token(),
        "renew changed the token from {} to {}",
        lease.lease.token(),
        renewed.lease.token()
    );
    ensure!(
        renewed.lease.expires_at() > lease.lease.expires_at(),
        "renew did not move the expiry: {} then {}",
        lease.lease.expires_at(),
        renewed.lease.expires_at()
    );
    h.time.pass(ttl * 2 / 3).await;
    let outcome = h
        .backend
        .acquire(&request(&["b"], &rival, LONG_TTL)?)
        .await
        .ctx("rival acquire")?;
    expect_busy(
        outcome,
        "rival acquire past the first ttl of a renewed lock",
    )?;
    h.backend
        .renew_lock(&renewed, ttl)
        .await
        .ctx("second renew")?;
    h.backend.release_lock(&renewed).await.ctx("release")?;
    Ok(())
}

async fn wait_granted_on_release<B: Lock + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let waiter = owner("waiter")?;
    let held = acquire(&h.backend, &["a", "b"], &holder, LONG_TTL).await?;
    let backend = h.backend.clone();
    let req = request(&["b"], &waiter, LONG_TTL)?.with_wait(Duration::from_secs(20));
    let contender = tokio::spawn(async move { backend.acquire(&req).await });
    let_others_run().await;
    h.backend.release_lock(&held).await.ctx("release")?;
    let outcome = within("waiting acquire after release", contender)
        .await?
        .ctx("join")?
        .ctx("waiting acquire")?;
    let granted = expect_granted(outcome, "waiting acquire after release")?;
    ensure!(
        granted.lease.token() > held.lease.token(),
        "token {} not above the released token {}",
        granted.lease.token(),
        held.lease.token()
    );
    Ok(())
}

async fn wait_granted_on_expiry<B: Lock + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let waiter = owner("waiter")?;
    let held = acquire(&h.backend, &["a"], &holder, SHORT_TTL).await?;
    let backend = h.backend.clone();
    let req = request(&["a"], &waiter, LONG_TTL)?.with_wait(Duration::from_secs(20));
    let contender = tokio::spawn(async move { backend.acquire(&req).await });
    let_others_run().await;
    h.time.pass(PAST_SHORT_TTL).await;
    let outcome = within("waiting acquire after expiry", contender)
        .await?
        .ctx("join")?
        .ctx("waiting acquire")?;
    let granted = expect_granted(outcome, "waiting acquire after the holder expired")?;
    ensure!(
        granted.lease.token() > held.lease.token(),
        "token {} not above the expired token {}",
        granted.lease.token(),
        held.lease.token()
    );
    Ok(())
}

async fn wait_gives_up<B: Lock + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let waiter = owner("waiter")?;
    acquire(&h.backend, &["a"], &holder, LONG_TTL).await?;
    let backend = h.backend.clone();
    let req = request(&["a"], &waiter, LONG_TTL)?.with_wait(SHORT_TTL);
    let contender = tokio::spawn(async move { backend.acquire(&req).await });
    // The wait may be measured by the backend's clock or by real time: move both.
    for _ in 0..10 {
        if contender.is_finished() {
            break;
        }
        h.time.pass(SHORT_TTL / 3).await;
    }
    let outcome = within("waiting acquire that is never freed", contender)
        .await?
        .ctx("join")?
        .ctx("waiting acquire")?;
    let holders = expect_busy(outcome, "waiting acquire that is never freed")?;
    ensure!(
        holders.iter().any(|h| h.lease.owner() == &holder),
        "busy does not name the holder: {holders:?}"
    );
    Ok(())
}

async fn mutual_exclusion<B: Lock + Clone + 'static>(h: Harness<B>) -> CaseResult {
    const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];
    const TASKS: u64 = 16;
    const ROUNDS: usize = 25;
    let inside: Arc<Vec<AtomicUsize>> =
        Arc::new(NAMES.iter().map(|_| AtomicUsize::new(0)).collect());
    let grants = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let backend = h.backend.clone();
        let inside = inside.clone();
        let grants = grants.clone();
        let me = owner(&format!("contender-{task}"))?;
        tasks.spawn(async move {
            let mut rng = Rng::new(0x5eed_0000 + task);
            for round in 0..ROUNDS {
                let picked: Vec<usize> = (0..NAMES.len()).filter(|_| rng.below(2) == 0).collect();
                let picked = if picked.is_empty() {
                    vec![rng.below(NAMES.len())]
                } else {
                    picked
                };
                let names: Vec<LockName> = picked
                    .iter()
                    .map(|&i| lock(NAMES[i]))
                    .collect::<Result<_, _>>()?;
                let wait = if task % 2 == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(10)
                };
                let req = LockRequest::new(names, me.clone(), LONG_TTL)
                    .ctx("request")?
                    .with_wait(wait);
                let outcome = backend.acquire(&req).await.ctx("acquire")?;
                let Acquire::Granted(lease) = outcome else {
                    tokio::task::yield_now().await;
                    continue;
                };
                grants.fetch_add(1, Ordering::SeqCst);
                for &i in &picked {
                    let before = inside[i].fetch_add(1, Ordering::SeqCst);
                    ensure!(
                        before == 0,
                        "{me} was granted {} in round {round} while another owner held it",
                        NAMES[i]
                    );
                }
                tokio::task::yield_now().await;
                for &i in &picked {
                    inside[i].fetch_sub(1, Ordering::SeqCst);
                }
                backend.release_lock(&lease).await.ctx("release")?;
            }
            Ok(())
        });
    }
    join_all(tasks).await?;
    let granted = grants.load(Ordering::SeqCst);
    ensure!(
        granted >= ROUNDS as u64,
        "only {granted} grants in all: contenders starved"
    );
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(
        holders.is_empty(),
        "locks still held after every contender released: {holders:?}"
    );
    Ok(())
}

async fn no_deadlock<B: Lock + Clone + 'static>(h: Harness<B>) -> CaseResult {
    const ROUNDS: usize = 40;
    let mut tasks = JoinSet::new();
    for (index, names) in [["left", "right"], ["right", "left"]]
        .into_iter()
        .enumerate()
    {
        let backend = h.backend.clone();
        let me = owner(&format!("owner-{index}"))?;
        tasks.spawn(async move {
            for _ in 0..ROUNDS {
                let req = request(&names, &me, LONG_TTL)?.with_wait(Duration::from_secs(10));
                let outcome = backend.acquire(&req).await.ctx("acquire")?;
                let lease =
                    expect_granted(outcome, "acquire of an overlapping set with a long wait")?;
                tokio::task::yield_now().await;
                backend.release_lock(&lease).await.ctx("release")?;
            }
            Ok(())
        });
    }
    tokio::time::timeout(Duration::from_secs(20), join_all(tasks))
        .await
        .map_err(|_| {
            "two owners with overlapping sets did not finish within 20s: deadlock".to_owned()
        })??;
    Ok(())
}

/// A backend whose calls never wait (the memory backend) has none dropped; the SQL backends'
/// own tests check that theirs are.
async fn dropped_calls<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("after-drops")?;
    for round in 0..crate::dropping::ROUNDS {
        crate::drop_lock_call(&h.backend, round).await;
        let new = job(&jobs, serde_json::json!(round))?;
        let id = within("an enqueue after a dropped call", h.backend.enqueue(&new))
            .await?
            .ctx("enqueue after a dropped call")?;
        let found = within("a read after a dropped call", h.backend.get(id))
            .await?
            .ctx("get after a dropped call")?;
        ensure!(
            found.is_some(),
            "job {id}, enqueued after round {round}, is gone"
        );
    }
    Ok(())
}
