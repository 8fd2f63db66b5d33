//! The test kit checked against the in-memory backend: the suite passes a correct backend and
//! catches a broken one, and the fault-injection wrapper does what each mode says.

mod broken_fencing;
mod faulty;
mod memory;

use std::sync::Arc;

use baton_core::ManualClock;
use baton_memory::MemoryBackend;
use baton_testkit::Harness;

/// A fresh memory backend on a manual clock, as a conformance harness.
async fn manual_memory() -> Harness<MemoryBackend> {
    let clock = ManualClock::default();
    Harness::manual(MemoryBackend::with_clock(Arc::new(clock.clone())), clock)
}
