//! Cases for [`Heartbeat`]: liveness by beats, judged by the backend's clock.

use baton_core::Backend;

use super::support::{Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, owner};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!("an owner is alive after it beats", alive_after_beat),
        case!(
            "an owner is no longer alive once its heartbeat ttl has passed",
            not_alive_after_ttl
        ),
        case!(
            "an owner that never beat is neither alive nor listed dead",
            never_beaten_owner
        ),
        case!(
            "an expired owner is listed dead until it is forgotten",
            dead_until_forgotten
        ),
        case!(
            "a new beat brings a dead owner back to life and off the dead list",
            beat_revives
        ),
        case!(
            "a beat before expiry keeps an owner alive past its first ttl",
            beat_extends
        ),
        case!(
            "last_beat reports each beat's time and expiry until the owner is forgotten",
            last_beat_reports_beats
        ),
    ]
}

async fn alive_after_beat<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker-1")?;
    let other = owner("worker-2")?;
    h.backend.beat(&worker, LONG_TTL).await.ctx("beat")?;
    ensure!(
        h.backend.alive(&worker).await.ctx("alive")?,
        "owner not alive right after beating"
    );
    ensure!(
        !h.backend.alive(&other).await.ctx("alive")?,
        "another owner is alive though only worker-1 beat"
    );
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        dead.is_empty(),
        "dead_owners lists {dead:?} with one live owner"
    );
    Ok(())
}

async fn not_alive_after_ttl<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker-1")?;
    h.backend.beat(&worker, SHORT_TTL).await.ctx("beat")?;
    h.time.pass(PAST_SHORT_TTL).await;
    ensure!(
        !h.backend.alive(&worker).await.ctx("alive")?,
        "owner still alive after its ttl passed"
    );
    Ok(())
}

async fn never_beaten_owner<B: Backend>(h: Harness<B>) -> CaseResult {
    let stranger = owner("never-beat")?;
    ensure!(
        !h.backend.alive(&stranger).await.ctx("alive")?,
        "an owner that never beat is alive"
    );
    h.time.pass(PAST_SHORT_TTL).await;
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        !dead.contains(&stranger),
        "an owner that never beat is listed dead: {dead:?}"
    );
    Ok(())
}

async fn dead_until_forgotten<B: Backend>(h: Harness<B>) -> CaseResult {
    let dying = owner("dying")?;
    let living = owner("living")?;
    h.backend.beat(&dying, SHORT_TTL).await.ctx("beat")?;
    h.backend.beat(&living, LONG_TTL).await.ctx("beat")?;
    h.time.pass(PAST_SHORT_TTL).await;
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        dead == vec![dying.clone()],
        "dead_owners is {dead:?}, expected only the expired owner"
    );
    let again = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        again == dead,
        "dead_owners changed from {dead:?} to {again:?} by being read"
    );
    h.backend.forget(&dying).await.ctx("forget")?;
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        dead.is_empty(),
        "a forgotten owner is still listed: {dead:?}"
    );
    ensure!(
        !h.backend.alive(&dying).await.ctx("alive")?,
        "a forgotten owner is alive"
    );
    h.backend.forget(&living).await.ctx("forget live owner")?;
    ensure!(
        !h.backend.alive(&living).await.ctx("alive")?,
        "an owner is still alive after it was forgotten"
    );
    Ok(())
}

async fn beat_revives<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker-1")?;
    h.backend.beat(&worker, SHORT_TTL).await.ctx("beat")?;
    h.time.pass(PAST_SHORT_TTL).await;
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        dead.contains(&worker),
        "expired owner not listed dead: {dead:?}"
    );
    h.backend.beat(&worker, LONG_TTL).await.ctx("beat again")?;
    ensure!(
        h.backend.alive(&worker).await.ctx("alive")?,
        "owner not alive after beating again"
    );
    let dead = h.backend.dead_owners().await.ctx("dead_owners")?;
    ensure!(
        !dead.contains(&worker),
        "revived owner still listed dead: {dead:?}"
    );
    Ok(())
}

async fn beat_extends<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker-1")?;
    let ttl = SHORT_TTL * 3;
    h.backend.beat(&worker, ttl).await.ctx("beat")?;
    h.time.pass(ttl * 2 / 3).await;
    h.backend.beat(&worker, ttl).await.ctx("second beat")?;
    h.time.pass(ttl * 2 / 3).await;
    ensure!(
        h.backend.alive(&worker).await.ctx("alive")?,
        "owner dead past its first ttl though it beat again before it ran out"
    );
    Ok(())
}

async fn last_beat_reports_beats<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker-1")?;
    let stranger = owner("never-beat")?;
    let none = h.backend.last_beat(&stranger).await.ctx("last_beat")?;
    ensure!(
        none.is_none(),
        "an owner that never beat has a last beat: {none:?}"
    );

    h.backend.beat(&worker, LONG_TTL).await.ctx("beat")?;
    let first = h.backend.last_beat(&worker).await.ctx("last_beat")?;
    let Some(first) = first else {
        return Err("no last beat right after a beat".into());
    };
    let Some(first_at) = first.at else {
        return Err(format!("a fresh beat has no beat time: {first:?}"));
    };
    ensure!(first.alive, "a fresh beat is reported dead: {first:?}");
    // One statement or script reads the clock for both; allow a millisecond for a clock read
    // twice within it.
    let ttl_ms = first.expires_at.as_millis() - first_at.as_millis();
    ensure!(
        (LONG_TTL.as_millis() as i64..=LONG_TTL.as_millis() as i64 + 1).contains(&ttl_ms),
        "a beat with a {LONG_TTL:?} ttl expires {ttl_ms} ms after it arrived"
    );

    h.time.pass(PAST_SHORT_TTL).await;
    h.backend
        .beat(&worker, SHORT_TTL)
        .await
        .ctx("second beat")?;
    let second = h.backend.last_beat(&worker).await.ctx("last_beat")?;
    let Some(second) = second else {
        return Err("no last beat after a second beat".into());
    };
    let Some(second_at) = second.at else {
        return Err(format!("a second beat has no beat time: {second:?}"));
    };
    ensure!(
        second_at > first_at,
        "a beat {PAST_SHORT_TTL:?} later is reported at {second_at}, not after {first_at}"
    );

    h.time.pass(PAST_SHORT_TTL).await;
    let expired = h.backend.last_beat(&worker).await.ctx("last_beat")?;
    ensure!(
        expired
            == Some(baton_core::Beat {
                alive: false,
                ..second
            }),
        "an expired beat reads {expired:?}, expected {second:?} no longer alive"
    );

    h.backend.forget(&worker).await.ctx("forget")?;
    let forgotten = h.backend.last_beat(&worker).await.ctx("last_beat")?;
    ensure!(
        forgotten.is_none(),
        "a forgotten owner still has a last beat: {forgotten:?}"
    );
    Ok(())
}
