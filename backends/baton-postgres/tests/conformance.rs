//! The conformance suite against a real PostgreSQL, each case on fresh tables of its own prefix.

#![allow(clippy::unwrap_used)]

mod support;

use baton_testkit::conformance::{Harness, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let report = run(|| async { Harness::real(support::fresh("c").await) }).await;
    let cleanup = support::fresh("cleanup").await;
    support::drop_tables(cleanup.pool(), &support::process_prefix("")).await;
    assert!(
        report.is_success(),
        "conformance: {} cases failed: {:#?}",
        report.failed.len(),
        report.failed
    );
}
