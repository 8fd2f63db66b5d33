//! The Lua scripts, each the shared prelude followed by its body, loaded once per connection and
//! invoked by SHA-1 (`redis::Script` loads a script again after `NOSCRIPT`).

use baton_core::Result;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::from_redis;

const COMMON: &str = include_str!("../lua/common.lua");
const JOBS: &str = include_str!("../lua/jobs.lua");
const CLAIMS: &str = include_str!("../lua/claims.lua");
const LOCKS: &str = include_str!("../lua/locks.lua");

/// Every script the backend runs.
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) reserve: Script,
    pub(crate) touch: Script,
    pub(crate) complete: Script,
    pub(crate) fail: Script,
    pub(crate) cancel: Script,
    pub(crate) retry: Script,
    pub(crate) resume: Script,
    pub(crate) list: Script,
    pub(crate) requeue: Script,
    pub(crate) purge: Script,
    pub(crate) get: Script,
    pub(crate) last: Script,
    pub(crate) beat: Script,
    pub(crate) dead: Script,
    pub(crate) last_beat: Script,
    pub(crate) forget: Script,
    pub(crate) claim_add: Script,
    pub(crate) claim_remove: Script,
    pub(crate) claim_items: Script,
    pub(crate) claim: Script,
    pub(crate) claim_renew: Script,
    pub(crate) claim_release: Script,
    pub(crate) claim_release_all: Script,
    pub(crate) claim_reap: Script,
    pub(crate) lock_acquire: Script,
    pub(crate) lock_renew: Script,
    pub(crate) lock_release: Script,
    pub(crate) lock_holders: Script,
}

fn job(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{JOBS}\n{body}"))
}

fn claim(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{CLAIMS}\n{body}"))
}

fn lock(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{LOCKS}\n{body}"))
}

fn plain(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            enqueue: job(include_str!("../lua/enqueue.lua")),
            reserve: job(include_str!("../lua/reserve.lua")),
            touch: job(include_str!("../lua/touch.lua")),
            complete: job(include_str!("../lua/complete.lua")),
            fail: job(include_str!("../lua/fail.lua")),
            cancel: job(include_str!("../lua/cancel.lua")),
            retry: job(include_str!("../lua/retry.lua")),
            resume: job(include_str!("../lua/resume.lua")),
            list: job(include_str!("../lua/list.lua")),
            requeue: job(include_str!("../lua/requeue.lua")),
            purge: job(include_str!("../lua/purge.lua")),
            get: job(include_str!("../lua/get.lua")),
            last: job(include_str!("../lua/last.lua")),
            beat: plain(include_str!("../lua/beat.lua")),
            dead: plain(include_str!("../lua/dead.lua")),
            last_beat: plain(include_str!("../lua/last_beat.lua")),
            forget: plain(include_str!("../lua/forget.lua")),
            claim_add: claim(include_str!("../lua/claim_add.lua")),
            claim_remove: claim(include_str!("../lua/claim_remove.lua")),
            claim_items: claim(include_str!("../lua/claim_items.lua")),
            claim: claim(include_str!("../lua/claim.lua")),
            claim_renew: claim(include_str!("../lua/claim_renew.lua")),
            claim_release: claim(include_str!("../lua/claim_release.lua")),
            claim_release_all: claim(include_str!("../lua/claim_release_all.lua")),
            claim_reap: claim(include_str!("../lua/claim_reap.lua")),
            lock_acquire: lock(include_str!("../lua/lock_acquire.lua")),
            lock_renew: lock(include_str!("../lua/lock_renew.lua")),
            lock_release: lock(include_str!("../lua/lock_release.lua")),
            lock_holders: lock(include_str!("../lua/lock_holders.lua")),
        }
    }

    fn all(&self) -> [&Script; 29] {
        [
            &self.enqueue,
            &self.reserve,
            &self.touch,
            &self.complete,
            &self.fail,
            &self.cancel,
            &self.retry,
            &self.resume,
            &self.list,
            &self.requeue,
            &self.purge,
            &self.get,
            &self.last,
            &self.beat,
            &self.dead,
            &self.last_beat,
            &self.forget,
            &self.claim_add,
            &self.claim_remove,
            &self.claim_items,
            &self.claim,
            &self.claim_renew,
            &self.claim_release,
            &self.claim_release_all,
            &self.claim_reap,
            &self.lock_acquire,
            &self.lock_renew,
            &self.lock_release,
            &self.lock_holders,
        ]
    }

    /// Loads every script (`SCRIPT LOAD`), so that a script with a syntax error fails the
    /// connect rather than a later call, and the first calls need no second round trip.
    pub(crate) async fn load_all(&self, connection: &mut ConnectionManager) -> Result<()> {
        for script in self.all() {
            script.load_async(connection).await.map_err(from_redis)?;
        }
        Ok(())
    }
}
