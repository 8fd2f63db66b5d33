//! [`Lock`] on Redis: a hash per name, a set of held names, one token counter (see
//! `lua/locks.lua`).

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, FencingToken, Lease, Lock, LockHolder, LockLease, LockName, LockRequest, Owner,
    Result, Timestamp, validate_ttl,
};
use redis::Value;

use crate::{RedisBackend, from_redis, millis, unexpected, value};

/// How often a waiting `acquire` looks again even if no release was heard: a holder may expire.
const RECHECK_INTERVAL: Duration = Duration::from_millis(25);

/// A holder as `live_holder` returns it: `{name, owner, token, expires, reason, since}`.
fn holder(reply: Value) -> Result<LockHolder> {
    let mut parts = value::array(reply)?.into_iter().map(value::opt_text);
    let mut next = || -> Result<String> {
        parts
            .next()
            .ok_or_else(|| unexpected("lock holder reply"))?
            .map(Option::unwrap_or_default)
    };
    let (name, owner, token, expires) = (next()?, next()?, next()?, next()?);
    let (reason, since) = (next()?, next()?);
    let number = |what: &str, text: &str| -> Result<i64> {
        text.parse()
            .map_err(|_| unexpected(format!("lock {what} {text:?}")))
    };
    Ok(LockHolder {
        name: LockName::new(name)?,
        lease: Lease::granted(
            Owner::new(owner)?,
            FencingToken::new(number("token", &token)? as u64),
            Timestamp::from_millis(number("expiry", &expires)?),
        ),
        reason,
        since: Timestamp::from_millis(number("since", &since)?),
    })
}

impl RedisBackend {
    /// One attempt at taking every name of `request`.
    async fn try_acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let keys = &self.inner.keys;
        let mut invocation = self.inner.scripts.lock_acquire.key(keys.lock_held());
        invocation
            .arg(&keys.locks)
            .arg(request.owner().as_str())
            .arg(millis(request.ttl()))
            .arg(request.reason());
        for name in request.names() {
            invocation.arg(name.as_str());
        }
        let reply: Value = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        let (status, mut rest) = value::status(reply)?;
        if status == "busy" {
            let holders = value::array(rest.next().ok_or_else(|| unexpected("busy reply"))?)?
                .into_iter()
                .map(holder)
                .collect::<Result<Vec<_>>>()?;
            return Ok(Acquire::Busy(holders));
        }
        let mut next =
            || -> Result<i64> { value::int(rest.next().ok_or_else(|| unexpected("grant reply"))?) };
        let (token, expires) = (next()?, next()?);
        Ok(Acquire::Granted(LockLease {
            names: request.names().to_vec(),
            lease: Lease::granted(
                request.owner().clone(),
                FencingToken::new(u64::try_from(token).map_err(|_| unexpected("lock token"))?),
                Timestamp::from_millis(expires),
            ),
            reason: request.reason().to_owned(),
        }))
    }

    /// Runs a renew or release script over a lease's names.
    async fn lease_script(
        &self,
        script: &redis::Script,
        lease: &LockLease,
        extra: &[String],
    ) -> Result<(String, std::vec::IntoIter<Value>)> {
        let keys = &self.inner.keys;
        let mut invocation = script.key(keys.lock_held());
        invocation
            .arg(&keys.locks)
            .arg(lease.lease.owner().as_str())
            .arg(lease.lease.token().get());
        for arg in extra {
            invocation.arg(arg);
        }
        for name in &lease.names {
            invocation.arg(name.as_str());
        }
        let reply: Value = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        value::status(reply)
    }
}

#[async_trait]
impl Lock for RedisBackend {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let deadline = tokio::time::Instant::now() + request.wait();
        if !request.wait().is_zero() {
            self.inner.subscriber.listen_unlocks().await;
        }
        loop {
            let released = self.inner.lock_changed.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = self.try_acquire(request).await?;
            let waited_out = tokio::time::Instant::now() >= deadline;
            if matches!(outcome, Acquire::Granted(_)) || waited_out {
                return Ok(outcome);
            }
            let recheck = tokio::time::Instant::now() + RECHECK_INTERVAL;
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(recheck.min(deadline)) => {}
            }
        }
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        validate_ttl(ttl)?;
        let (status, mut rest) = self
            .lease_script(
                &self.inner.scripts.lock_renew,
                lease,
                &[millis(ttl).to_string()],
            )
            .await?;
        if status != "ok" {
            return Err(lease.lost());
        }
        let expires = value::int(rest.next().ok_or_else(|| unexpected("renew reply"))?)?;
        Ok(LockLease {
            names: lease.names.clone(),
            lease: Lease::granted(
                lease.lease.owner().clone(),
                lease.lease.token(),
                Timestamp::from_millis(expires),
            ),
            reason: lease.reason.clone(),
        })
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let keys = &self.inner.keys;
        let extra = [
            keys.unlock_channel.clone(),
            self.inner.subscriber.origin().to_owned(),
        ];
        let (status, _) = self
            .lease_script(&self.inner.scripts.lock_release, lease, &extra)
            .await?;
        self.inner.lock_changed.notify_waiters();
        if status == "ok" {
            Ok(())
        } else {
            Err(lease.lost())
        }
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let keys = &self.inner.keys;
        let reply: Value = self
            .inner
            .scripts
            .lock_holders
            .key(keys.lock_held())
            .arg(&keys.locks)
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        value::array(reply)?.into_iter().map(holder).collect()
    }
}
