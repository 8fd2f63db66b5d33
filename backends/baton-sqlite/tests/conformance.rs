//! The SQLite backend passes the whole conformance suite, each case on a fresh database file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_sqlite::{SqliteBackend, SqliteConfig};
use baton_testkit::{Harness, conformance};

/// A directory of its own for this test run's database files, removed at the end.
fn scratch_directory(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("baton-sqlite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("create the scratch directory");
    directory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_backend_passes_the_conformance_suite() {
    let directory = scratch_directory("conformance");
    let counter = AtomicU64::new(0);
    let report = conformance::run(|| {
        let case = counter.fetch_add(1, Ordering::Relaxed);
        let path = directory.join(format!("case-{case}.db"));
        async move {
            let config = SqliteConfig::new(format!("sqlite://{}", path.display()));
            let backend = SqliteBackend::connect(config)
                .await
                .expect("connect to a fresh sqlite file");
            Harness::real(backend)
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&directory);
    assert!(
        report.is_success(),
        "conformance failures: {:#?}",
        report.failed
    );
}
