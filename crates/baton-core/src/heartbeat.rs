//! The [`Heartbeat`] trait: process liveness.

use std::time::Duration;

use async_trait::async_trait;

use crate::{Owner, Result};

/// Liveness of owners: an owner is alive while its beats keep arriving.
///
/// To ensure correctness, an implementation must:
/// - judge expiry by the backend's clock: an owner is alive while the backend's now is earlier
///   than its last beat's time plus that beat's TTL;
/// - make `beat` one atomic step (the seed system set a key and its expiry in two commands, so a
///   crash between them left a heartbeat that never expired);
/// - keep an expired owner listed by [`dead_owners`](Heartbeat::dead_owners) until it beats again
///   or is [forgotten](Heartbeat::forget), so that whoever cleans up after it can find it.
#[async_trait]
pub trait Heartbeat: Send + Sync {
    /// Records that `owner` is alive for the next `ttl`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a TTL outside
    /// [`validate_ttl`](crate::validate_ttl)'s bounds; `Backend` if the backend failed.
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()>;

    /// Whether `owner`'s last beat has not yet expired. An owner that never beat is not alive.
    async fn alive(&self, owner: &Owner) -> Result<bool>;

    /// Owners that beat once and whose last beat has expired, not yet forgotten.
    async fn dead_owners(&self) -> Result<Vec<Owner>>;

    /// Removes `owner`'s heartbeat record: a clean exit, or cleanup after a dead owner.
    async fn forget(&self, owner: &Owner) -> Result<()>;
}
