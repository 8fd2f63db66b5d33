//! Cases for [`Claim`]: a pool whose every item is unclaimed or held by exactly one owner.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, Claim, ClaimLease, Error, Heartbeat, ItemId, Owner, PoolName};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, Rng, SHORT_TTL, ensure, expect_lease_lost, items, join_all,
    owner, pool,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "adding items is idempotent and counts only the new ones",
            add_idempotent
        ),
        case!(
            "items lists every item ordered by item with its holder",
            items_listed
        ),
        case!(
            "claim returns none when every item is held",
            claim_none_when_held
        ),
        case!(
            "concurrent claimers never claim the same item",
            concurrent_claimers
        ),
        case!(
            "claim hands out the longest-unclaimed item and a released item goes to the back",
            claim_order
        ),
        case!(
            "release_all returns only that owner's items",
            release_all_only_owner
        ),
        case!(
            "reap_dead returns the items of an owner whose heartbeat expired and keeps live owners' items",
            reap_dead_owner
        ),
        case!(
            "reap_dead returns items whose claim expired",
            reap_expired_claims
        ),
        case!(
            "removing a claimed item drops it and its holder's lease",
            remove_claimed
        ),
        case!(
            "an expired claim is taken over by another owner",
            expired_claim_taken_over
        ),
        case!(
            "renewing a claim before expiry keeps it past its first ttl",
            renew_extends
        ),
        case!(
            "no item is lost or duplicated over a long random run of claims, releases and reaps",
            random_run_keeps_items
        ),
    ]
}

/// Claims one item, failing the case if none is free.
pub(super) async fn claim_some<B: Claim>(
    backend: &B,
    pool: &PoolName,
    who: &Owner,
    ttl: Duration,
) -> Result<ClaimLease, String> {
    backend
        .claim(pool, who, ttl)
        .await
        .ctx("claim")?
        .ctx(&format!("claim by {who} with free items"))
}

/// The pool's items, as names.
async fn item_names<B: Claim>(backend: &B, pool: &PoolName) -> Result<Vec<String>, String> {
    Ok(backend
        .items(pool)
        .await
        .ctx("items")?
        .into_iter()
        .map(|status| status.item.as_str().to_owned())
        .collect())
}

async fn add_idempotent<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let added = h
        .backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    ensure!(added == 2, "adding two new items added {added}");
    let added = h
        .backend
        .add(&accounts, &items(&["b", "c"])?)
        .await
        .ctx("add")?;
    ensure!(
        added == 1,
        "adding one new and one existing item added {added}"
    );
    let added = h
        .backend
        .add(&accounts, &items(&["a", "b", "c"])?)
        .await
        .ctx("add")?;
    ensure!(added == 0, "adding only existing items added {added}");
    let held = claim_some(&h.backend, &accounts, &owner("w")?, LONG_TTL).await?;
    let added = h
        .backend
        .add(&accounts, std::slice::from_ref(&held.item))
        .await
        .ctx("add")?;
    ensure!(added == 0, "adding a claimed item added {added}");
    h.backend
        .renew_claim(&held, LONG_TTL)
        .await
        .ctx("renew after re-adding a held item")?;
    let names = item_names(&h.backend, &accounts).await?;
    ensure!(names == ["a", "b", "c"], "items are {names:?}");
    Ok(())
}

async fn items_listed<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let other_pool = pool("shards")?;
    h.backend
        .add(&accounts, &items(&["k", "c", "x"])?)
        .await
        .ctx("add")?;
    h.backend
        .add(&other_pool, &items(&["s1"])?)
        .await
        .ctx("add")?;
    let who = owner("w")?;
    let held = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    let listed = h.backend.items(&accounts).await.ctx("items")?;
    let names: Vec<&str> = listed.iter().map(|s| s.item.as_str()).collect();
    ensure!(names == ["c", "k", "x"], "items listed as {names:?}");
    for status in &listed {
        if status.item == held.item {
            ensure!(
                status.holder.as_ref() == Some(&held.lease),
                "{} listed with holder {:?}, granted {:?}",
                status.item,
                status.holder,
                held.lease
            );
        } else {
            ensure!(
                status.holder.is_none(),
                "unclaimed {} listed as held",
                status.item
            );
        }
    }
    ensure!(held.pool == accounts, "claim names pool {}", held.pool);
    let shards = item_names(&h.backend, &other_pool).await?;
    ensure!(shards == ["s1"], "the other pool holds {shards:?}");
    let empty = item_names(&h.backend, &pool("empty")?).await?;
    ensure!(empty.is_empty(), "an unknown pool holds {empty:?}");
    Ok(())
}

async fn claim_none_when_held<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    let first = owner("first")?;
    let second = owner("second")?;
    let one = claim_some(&h.backend, &accounts, &first, LONG_TTL).await?;
    let two = claim_some(&h.backend, &accounts, &second, LONG_TTL).await?;
    ensure!(one.item != two.item, "both claims got {}", one.item);
    let third = h
        .backend
        .claim(&accounts, &first, LONG_TTL)
        .await
        .ctx("claim")?;
    ensure!(third.is_none(), "claimed {third:?} from a fully held pool");
    let none = h
        .backend
        .claim(&pool("empty")?, &first, LONG_TTL)
        .await
        .ctx("claim from an empty pool")?;
    ensure!(none.is_none(), "claimed {none:?} from an empty pool");
    Ok(())
}

async fn concurrent_claimers<B: Claim + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let names: Vec<String> = (0..40).map(|i| format!("account-{i:02}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    h.backend.add(&accounts, &items(&all)?).await.ctx("add")?;
    let claimed = Arc::new(Mutex::new(Vec::<ItemId>::new()));
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let backend = h.backend.clone();
        let accounts = accounts.clone();
        let claimed = claimed.clone();
        let me = owner(&format!("claimer-{task}"))?;
        tasks.spawn(async move {
            while let Some(lease) = backend.claim(&accounts, &me, LONG_TTL).await.ctx("claim")? {
                claimed.lock().await.push(lease.item);
                tokio::task::yield_now().await;
            }
            Ok(())
        });
    }
    join_all(tasks).await?;
    let claimed = claimed.lock().await.clone();
    let distinct: BTreeSet<&str> = claimed.iter().map(ItemId::as_str).collect();
    ensure!(
        distinct.len() == claimed.len(),
        "{} claims but only {} distinct items: an item was claimed twice",
        claimed.len(),
        distinct.len()
    );
    ensure!(
        distinct == all.iter().copied().collect(),
        "claimed {} of {} items",
        distinct.len(),
        all.len()
    );
    Ok(())
}

async fn claim_order<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let who = owner("w")?;
    h.backend
        .add(&accounts, &items(&["item-1", "item-2", "item-3"])?)
        .await
        .ctx("add")?;
    let first = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    ensure!(
        first.item.as_str() == "item-1",
        "first claim got {}",
        first.item
    );
    h.backend.release_claim(&first).await.ctx("release")?;
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(
            claim_some(&h.backend, &accounts, &who, LONG_TTL)
                .await?
                .item,
        );
    }
    let order: Vec<&str> = order.iter().map(ItemId::as_str).collect();
    ensure!(
        order == ["item-2", "item-3", "item-1"],
        "after releasing item-1, claims came in the order {order:?}"
    );
    Ok(())
}

async fn release_all_only_owner<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let leaving = owner("leaving")?;
    let staying = owner("staying")?;
    h.backend
        .add(&accounts, &items(&["a", "b", "c", "d"])?)
        .await
        .ctx("add")?;
    let a = claim_some(&h.backend, &accounts, &leaving, LONG_TTL).await?;
    let b = claim_some(&h.backend, &accounts, &staying, LONG_TTL).await?;
    let c = claim_some(&h.backend, &accounts, &leaving, LONG_TTL).await?;
    let released = h
        .backend
        .release_all(&accounts, &leaving)
        .await
        .ctx("release_all")?;
    ensure!(
        released == 2,
        "release_all returned {released}, the owner held 2"
    );
    expect_lease_lost(
        h.backend.renew_claim(&a, LONG_TTL).await,
        "renew a released claim",
    )?;
    expect_lease_lost(
        h.backend.release_claim(&c).await,
        "release a released claim",
    )?;
    h.backend
        .renew_claim(&b, LONG_TTL)
        .await
        .ctx("renew the other owner's claim")?;
    let listed = h.backend.items(&accounts).await.ctx("items")?;
    for status in listed {
        let expected_held = status.item == b.item;
        ensure!(
            status.holder.is_some() == expected_held,
            "{} holder is {:?} after release_all",
            status.item,
            status.holder
        );
    }
    let none = h
        .backend
        .release_all(&accounts, &leaving)
        .await
        .ctx("release_all")?;
    ensure!(none == 0, "a second release_all returned {none}");
    Ok(())
}

async fn reap_dead_owner<B: Claim + Heartbeat>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let dying = owner("dying")?;
    let living = owner("living")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    h.backend.beat(&dying, SHORT_TTL).await.ctx("beat")?;
    h.backend.beat(&living, LONG_TTL).await.ctx("beat")?;
    let lost = claim_some(&h.backend, &accounts, &dying, LONG_TTL).await?;
    let kept = claim_some(&h.backend, &accounts, &living, LONG_TTL).await?;
    let reaped = h.backend.reap_dead(&accounts).await.ctx("reap_dead")?;
    ensure!(
        reaped.is_empty(),
        "reap_dead before any death returned {reaped:?}"
    );
    h.time.pass(PAST_SHORT_TTL).await;
    let reaped = h.backend.reap_dead(&accounts).await.ctx("reap_dead")?;
    ensure!(
        reaped == vec![lost.item.clone()],
        "reap_dead returned {reaped:?}, expected the dead owner's {}",
        lost.item
    );
    expect_lease_lost(
        h.backend.renew_claim(&lost, LONG_TTL).await,
        "renew a reaped claim",
    )?;
    h.backend
        .renew_claim(&kept, LONG_TTL)
        .await
        .ctx("renew the live owner's claim")?;
    let again = claim_some(&h.backend, &accounts, &living, LONG_TTL).await?;
    ensure!(
        again.item == lost.item,
        "claimed {} instead of the reaped item",
        again.item
    );
    Ok(())
}

async fn reap_expired_claims<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let short = owner("short")?;
    let long = owner("long")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    let expiring = claim_some(&h.backend, &accounts, &short, SHORT_TTL).await?;
    let lasting = claim_some(&h.backend, &accounts, &long, LONG_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let reaped = h.backend.reap_dead(&accounts).await.ctx("reap_dead")?;
    ensure!(
        reaped == vec![expiring.item.clone()],
        "reap_dead returned {reaped:?}, expected the expired claim's {}",
        expiring.item
    );
    let listed = h.backend.items(&accounts).await.ctx("items")?;
    for status in listed {
        let expected_held = status.item == lasting.item;
        ensure!(
            status.holder.is_some() == expected_held,
            "{} holder after reaping is {:?}",
            status.item,
            status.holder
        );
    }
    let reaped = h.backend.reap_dead(&accounts).await.ctx("reap_dead")?;
    ensure!(reaped.is_empty(), "a second reap_dead returned {reaped:?}");
    Ok(())
}

async fn remove_claimed<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let who = owner("w")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    let held = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    let removed = h
        .backend
        .remove(
            &accounts,
            &[held.item.clone(), ItemId::new("missing").ctx("item")?],
        )
        .await
        .ctx("remove")?;
    ensure!(
        removed == 1,
        "removing one present and one missing item removed {removed}"
    );
    expect_lease_lost(
        h.backend.renew_claim(&held, LONG_TTL).await,
        "renew a removed item's claim",
    )?;
    expect_lease_lost(
        h.backend.release_claim(&held).await,
        "release a removed item's claim",
    )?;
    let names = item_names(&h.backend, &accounts).await?;
    ensure!(
        !names.iter().any(|n| n == held.item.as_str()) && names.len() == 1,
        "items after remove are {names:?}"
    );
    Ok(())
}

async fn expired_claim_taken_over<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let first = owner("first")?;
    let second = owner("second")?;
    h.backend
        .add(&accounts, &items(&["only"])?)
        .await
        .ctx("add")?;
    let old = claim_some(&h.backend, &accounts, &first, SHORT_TTL).await?;
    let early = h
        .backend
        .claim(&accounts, &second, LONG_TTL)
        .await
        .ctx("claim")?;
    ensure!(
        early.is_none(),
        "claimed {early:?} while the only item was held"
    );
    h.time.pass(PAST_SHORT_TTL).await;
    let new = claim_some(&h.backend, &accounts, &second, LONG_TTL).await?;
    ensure!(
        new.item == old.item,
        "took over {} instead of {}",
        new.item,
        old.item
    );
    ensure!(
        new.lease.token() > old.lease.token(),
        "takeover token {} not above {}",
        new.lease.token(),
        old.lease.token()
    );
    Ok(())
}

async fn renew_extends<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let holder = owner("holder")?;
    let rival = owner("rival")?;
    h.backend
        .add(&accounts, &items(&["only"])?)
        .await
        .ctx("add")?;
    let ttl = SHORT_TTL * 3;
    let held = claim_some(&h.backend, &accounts, &holder, ttl).await?;
    h.time.pass(ttl * 2 / 3).await;
    let renewed = h.backend.renew_claim(&held, ttl).await.ctx("renew")?;
    ensure!(
        renewed.lease.token() == held.lease.token(),
        "renew changed the token from {} to {}",
        held.lease.token(),
        renewed.lease.token()
    );
    h.time.pass(ttl * 2 / 3).await;
    let stolen = h
        .backend
        .claim(&accounts, &rival, LONG_TTL)
        .await
        .ctx("claim")?;
    ensure!(
        stolen.is_none(),
        "a renewed claim was taken past its first ttl: {stolen:?}"
    );
    let reaped = h.backend.reap_dead(&accounts).await.ctx("reap_dead")?;
    ensure!(reaped.is_empty(), "a renewed claim was reaped: {reaped:?}");
    h.backend.release_claim(&renewed).await.ctx("release")?;
    Ok(())
}

async fn random_run_keeps_items<B: Claim>(h: Harness<B>) -> CaseResult {
    const SEED: u64 = 0xc1a1_3000;
    let accounts = pool("accounts")?;
    let names: Vec<String> = (0..12).map(|i| format!("item-{i:02}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let added: Vec<ItemId> = items(&all)?;
    h.backend.add(&accounts, &added).await.ctx("add")?;
    let owners: Vec<Owner> = (0..3)
        .map(|i| owner(&format!("owner-{i}")))
        .collect::<Result<_, _>>()?;
    let mut held: Vec<ClaimLease> = Vec::new();
    let mut rng = Rng::new(SEED);
    for step in 0..300 {
        let at = |what: &str| format!("seed {SEED:#x} step {step}: {what}");
        let who = &owners[rng.below(owners.len())];
        match rng.below(100) {
            0..40 => {
                let ttl = if rng.below(5) == 0 {
                    SHORT_TTL / 4
                } else {
                    LONG_TTL
                };
                if let Some(lease) = h
                    .backend
                    .claim(&accounts, who, ttl)
                    .await
                    .ctx(&at("claim"))?
                {
                    ensure!(
                        added.contains(&lease.item),
                        "{}",
                        at(&format!("claimed unknown {}", lease.item))
                    );
                    if let Some(index) = held.iter().position(|l| l.item == lease.item) {
                        let old = held.swap_remove(index);
                        ensure!(
                            lease.lease.token() > old.lease.token(),
                            "{}",
                            at(&format!(
                                "claim of {} has token {} not above {}",
                                lease.item,
                                lease.lease.token(),
                                old.lease.token()
                            ))
                        );
                        expect_lease_lost(
                            h.backend.renew_claim(&old, LONG_TTL).await,
                            &at("renew a claim taken over"),
                        )?;
                    }
                    held.push(lease);
                }
            }
            40..60 if !held.is_empty() => {
                let lease = held.swap_remove(rng.below(held.len()));
                match h.backend.release_claim(&lease).await {
                    Ok(()) | Err(Error::LeaseLost { .. }) => {}
                    Err(other) => return Err(at(&format!("release: {other}"))),
                }
            }
            60..70 if !held.is_empty() => {
                let index = rng.below(held.len());
                match h.backend.renew_claim(&held[index], LONG_TTL).await {
                    Ok(renewed) => held[index] = renewed,
                    Err(Error::LeaseLost { .. }) => {
                        held.swap_remove(index);
                    }
                    Err(other) => return Err(at(&format!("renew: {other}"))),
                }
            }
            70..75 => {
                let count = h
                    .backend
                    .release_all(&accounts, who)
                    .await
                    .ctx(&at("release_all"))?;
                ensure!(
                    count <= added.len() as u64,
                    "{}",
                    at(&format!(
                        "release_all returned {count}, more than the pool holds"
                    ))
                );
                held.retain(|l| l.lease.owner() != who);
            }
            75..82 => {
                let reaped = h.backend.reap_dead(&accounts).await.ctx(&at("reap_dead"))?;
                for item in reaped {
                    if let Some(index) = held.iter().position(|l| l.item == item) {
                        let old = held.swap_remove(index);
                        expect_lease_lost(
                            h.backend.renew_claim(&old, LONG_TTL).await,
                            &at("renew a reaped claim"),
                        )?;
                    }
                }
            }
            82..86 => h.time.pass(SHORT_TTL / 2).await,
            _ => {}
        }
        let listed = h.backend.items(&accounts).await.ctx(&at("items"))?;
        let listed: Vec<&ItemId> = listed.iter().map(|s| &s.item).collect();
        ensure!(
            listed == added.iter().collect::<Vec<_>>(),
            "{}",
            at(&format!(
                "items are {listed:?}, expected the {} added",
                added.len()
            ))
        );
    }
    for who in &owners {
        h.backend
            .release_all(&accounts, who)
            .await
            .ctx("release_all")?;
    }
    let mut claimed = BTreeSet::new();
    while let Some(lease) = h
        .backend
        .claim(&accounts, &owners[0], LONG_TTL)
        .await
        .ctx("final claim")?
    {
        ensure!(
            claimed.insert(lease.item.clone()),
            "{} claimed twice at the end",
            lease.item
        );
    }
    ensure!(
        claimed.len() == added.len(),
        "only {} of {} items could be claimed at the end",
        claimed.len(),
        added.len()
    );
    Ok(())
}
