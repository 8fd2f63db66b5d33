//! Baton's master executor: runs a job on exactly one instance of a cluster (a scheduler, a
//! heartbeat emitter, a compaction loop) and on another as soon as that one dies or gives up.
//!
//! Leadership is a fenced lease on the [`Lock`](baton_core::Lock) trait, so it works on every
//! backend. The master stops acting as soon as its own monotonic clock says its lease may have
//! run out, before the backend can hand leadership to anyone else; waiting instances watch the
//! lease through the backend and take it over the moment it is released or expires. A master
//! can be disabled and enabled through [`MasterControl`]; that state lives in the backend.
//!
//! With the `figment` feature, [`settings`] reads the timings from `baton.toml` and the
//! environment.

mod control;
mod executor;
mod job;
mod options;
#[cfg(feature = "figment")]
pub mod settings;

pub use control::{
    DISABLED_PREFIX, DisableOutcome, Disabled, Holder, LEADER_PREFIX, MasterControl, MasterStatus,
};
pub use executor::{MasterEvent, MasterExecutor, MasterState, poll_interval};
pub use job::{FnJob, Leadership, MasterJob, StopCause, job_fn};
pub use options::{
    MAX_MASTER_NAME_LEN, MIN_LEASE, MasterName, MasterOptions, MasterSettings, SAFETY_DIVISOR,
    SettingsError, SettingsOverrides,
};
