//! The [`Heartbeat`] trait: process liveness.

use std::time::Duration;

use async_trait::async_trait;

use crate::{Owner, Result, Timestamp};

/// An owner's last beat, as the backend recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// When the backend received the beat, by the backend's clock; `None` for a beat recorded
    /// before the backend's schema kept beat times (until that owner beats again).
    pub at: Option<Timestamp>,
    /// When the beat expires: the time it arrived plus its TTL.
    pub expires_at: Timestamp,
    /// Whether the beat had not yet expired by the backend's clock when it was read.
    pub alive: bool,
}

/// Liveness of owners: an owner is alive while its beats keep arriving.
///
/// To ensure correctness, an implementation must:
/// - judge expiry by the backend's clock: an owner is alive while the backend's now is earlier
///   than its last beat's time plus that beat's TTL;
/// - make `beat` one atomic step (the seed system set a key and its expiry in two commands, so a
///   crash between them left a heartbeat that never expired);
/// - keep an expired owner listed by [`dead_owners`](Heartbeat::dead_owners) until it beats again
///   or is [forgotten](Heartbeat::forget), so that whoever cleans up after it can find it;
/// - record, in the same atomic step as each beat, when the backend received it by its own clock,
///   and report it through [`last_beat`](Heartbeat::last_beat) until the owner is forgotten.
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

    /// `owner`'s last beat: when the backend received it, when it expires, and whether it is
    /// still alive by the backend's clock now. `None` for an owner that never beat or was
    /// forgotten.
    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>>;

    /// Removes `owner`'s heartbeat record: a clean exit, or cleanup after a dead owner.
    async fn forget(&self, owner: &Owner) -> Result<()>;
}
