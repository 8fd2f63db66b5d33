//! [`Lock`] in memory: held names in a sorted map, one token counter per name.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, FencingToken, Lease, Lock, LockHolder, LockLease, LockName, LockRequest, Result,
    Timestamp, validate_ttl,
};

use crate::{MemoryBackend, lock};

/// How often a waiter looks again even if nothing was released: a holder may expire, and a
/// manual clock moves without telling anyone.
const RECHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Held locks and the last token granted for every name ever locked.
#[derive(Default)]
pub(crate) struct Locks {
    held: BTreeMap<LockName, LockHolder>,
    last_token: HashMap<LockName, u64>,
}

impl Locks {
    fn live_holder(&self, name: &LockName, now: Timestamp) -> Option<&LockHolder> {
        self.held
            .get(name)
            .filter(|holder| holder.lease.expires_at() > now)
    }

    fn try_acquire(&mut self, request: &LockRequest, now: Timestamp) -> Acquire {
        let blockers: Vec<LockHolder> = request
            .names()
            .iter()
            .filter_map(|name| self.live_holder(name, now).cloned())
            .collect();
        if !blockers.is_empty() {
            return Acquire::Busy(blockers);
        }
        let token = 1 + request
            .names()
            .iter()
            .map(|name| self.last_token.get(name).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let lease = Lease::granted(
            request.owner().clone(),
            FencingToken::new(token),
            now.saturating_add(request.ttl()),
        );
        for name in request.names() {
            self.last_token.insert(name.clone(), token);
            let holder = LockHolder {
                name: name.clone(),
                lease: lease.clone(),
                reason: request.reason().to_owned(),
                since: now,
            };
            self.held.insert(name.clone(), holder);
        }
        Acquire::Granted(LockLease {
            names: request.names().to_vec(),
            lease,
            reason: request.reason().to_owned(),
        })
    }

    /// Whether `lease` is the current, unexpired grant of `name`.
    fn holds(&self, name: &LockName, lease: &Lease, now: Timestamp) -> bool {
        self.held.get(name).is_some_and(|holder| {
            holder.lease.token() == lease.token()
                && holder.lease.owner() == lease.owner()
                && holder.lease.expires_at() > now
        })
    }

    /// Whether `lease` is the grant recorded for `name`, expired or not.
    fn granted(&self, name: &LockName, lease: &Lease) -> bool {
        self.held.get(name).is_some_and(|holder| {
            holder.lease.token() == lease.token() && holder.lease.owner() == lease.owner()
        })
    }
}

#[async_trait]
impl Lock for MemoryBackend {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let deadline = tokio::time::Instant::now() + request.wait();
        loop {
            let released = self.inner.lock_changed.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = lock(&self.inner.locks).try_acquire(request, self.now());
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
        let now = self.now();
        let mut locks = lock(&self.inner.locks);
        let current = lease
            .names
            .iter()
            .all(|name| locks.holds(name, &lease.lease, now));
        if !current {
            return Err(lease.lost());
        }
        let renewed = Lease::granted(
            lease.lease.owner().clone(),
            lease.lease.token(),
            now.saturating_add(ttl),
        );
        for name in &lease.names {
            if let Some(holder) = locks.held.get_mut(name) {
                holder.lease = renewed.clone();
            }
        }
        Ok(LockLease {
            names: lease.names.clone(),
            lease: renewed,
            reason: lease.reason.clone(),
        })
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let now = self.now();
        let mut all_current = true;
        {
            let mut locks = lock(&self.inner.locks);
            for name in &lease.names {
                all_current &= locks.holds(name, &lease.lease, now);
                if locks.granted(name, &lease.lease) {
                    locks.held.remove(name);
                }
            }
        }
        self.inner.lock_changed.notify_waiters();
        if all_current {
            Ok(())
        } else {
            Err(lease.lost())
        }
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let now = self.now();
        let locks = lock(&self.inner.locks);
        Ok(locks
            .held
            .values()
            .filter(|holder| holder.lease.expires_at() > now)
            .cloned()
            .collect())
    }
}
