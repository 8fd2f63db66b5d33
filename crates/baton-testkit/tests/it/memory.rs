//! The in-memory backend passes the whole suite in real time, as server-clock backends run it,
//! and on a single-threaded runtime (the multi-threaded manual-clock run is in `broken_fencing`,
//! beside the broken backend it is compared with).

use baton_memory::MemoryBackend;
use baton_testkit::{Harness, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_passes_every_case_in_real_time() {
    conformance::run_all(|| async { Harness::real(MemoryBackend::new()) }).await;
}

#[tokio::test]
async fn the_suite_runs_on_a_single_threaded_runtime() {
    conformance::run_all(super::manual_memory).await;
}

#[tokio::test]
async fn the_suite_has_at_least_45_distinct_cases() {
    let names = conformance::case_names::<MemoryBackend>();
    let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(distinct.len(), names.len(), "duplicate case names");
    assert!(names.len() >= 45, "only {} cases", names.len());
}
