//! The in-memory backend passes the whole conformance suite, its expiry driven by a manual clock.

use std::sync::Arc;

use baton_core::ManualClock;
use baton_memory::MemoryBackend;
use baton_testkit::{Harness, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_passes_the_conformance_suite() {
    conformance::run_all(|| async {
        let clock = ManualClock::default();
        Harness::manual(MemoryBackend::with_clock(Arc::new(clock.clone())), clock)
    })
    .await;
}
