//! [`AccountSource`]: where the list of accounts that should be synced comes from.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_core::ItemId;

/// An error from an [`AccountSource`]: whatever the source's own storage reports.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The accounts that should exist, such as the rows of an `accounts` table.
///
/// Every manager reads it every [`source_interval`](crate::SyncConfig::source_interval) and
/// makes the pool match: accounts it lists that the pool lacks are added, unclaimed; accounts
/// in the pool it no longer lists are removed, and their workers stopped.
#[async_trait]
pub trait AccountSource: Send + Sync {
    /// Every account id that should be synced now.
    ///
    /// # Errors
    ///
    /// Whatever kept the source from answering; the manager logs it and tries again at the next
    /// interval, changing nothing in the meantime.
    async fn accounts(&self) -> Result<Vec<ItemId>, SourceError>;
}

/// An [`AccountSource`] held in memory and changed by the program: tests, demos, and services
/// that learn their accounts some other way.
///
/// Clones share the same list.
#[derive(Clone, Debug, Default)]
pub struct StaticAccounts {
    accounts: Arc<Mutex<BTreeSet<ItemId>>>,
}

impl StaticAccounts {
    /// A source listing `accounts`.
    pub fn new(accounts: impl IntoIterator<Item = ItemId>) -> Self {
        Self {
            accounts: Arc::new(Mutex::new(accounts.into_iter().collect())),
        }
    }

    /// Adds an account; returns whether it was new.
    pub fn insert(&self, account: ItemId) -> bool {
        self.lock().insert(account)
    }

    /// Removes an account; returns whether it was listed.
    pub fn remove(&self, account: &ItemId) -> bool {
        self.lock().remove(account)
    }

    /// Replaces the whole list.
    pub fn set(&self, accounts: impl IntoIterator<Item = ItemId>) {
        *self.lock() = accounts.into_iter().collect();
    }

    /// The accounts listed now.
    pub fn list(&self) -> Vec<ItemId> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<ItemId>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AccountSource for StaticAccounts {
    async fn accounts(&self) -> Result<Vec<ItemId>, SourceError> {
        Ok(self.list())
    }
}
