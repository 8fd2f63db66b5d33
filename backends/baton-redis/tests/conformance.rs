//! The conformance suite against a real Redis, each case under a key prefix of its own.

#![allow(clippy::unwrap_used)]

mod support;

use baton_testkit::conformance::{Harness, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_conformance_suite() {
    let report = run(|| async { Harness::real(support::fresh("c").await) }).await;
    support::delete_keys(&support::process_prefix("c")).await;
    assert!(
        report.is_success(),
        "conformance: {} cases failed: {:#?}",
        report.failed.len(),
        report.failed
    );
}
