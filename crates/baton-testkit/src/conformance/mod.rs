//! The conformance suite: the specification of Baton as generic test cases over a backend.
//!
//! A backend crate runs it against itself with a factory that builds a fresh, isolated backend
//! for every case:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use baton_core::ManualClock;
//! use baton_memory::MemoryBackend;
//! use baton_testkit::conformance::{Harness, run_all};
//!
//! #[tokio::main]
//! async fn main() {
//!     run_all(|| async {
//!         let clock = ManualClock::default();
//!         Harness::manual(MemoryBackend::with_clock(Arc::new(clock.clone())), clock)
//!     })
//!     .await;
//! }
//! ```
//!
//! Every case runs in its own task with a time limit, so a panic or a hang is reported as a
//! failure of that case and the run goes on. Set `BATON_CONFORMANCE_FILTER` to a substring of
//! case names to run only those cases.
//!
//! Cases never assume the clock is manual: expiry is driven through [`TestTime::pass`], with
//! TTLs (400 ms) short enough that a backend whose clock is its server's ([`TestTime::Real`])
//! runs the whole suite in about half a minute, and margins (300 ms) wide enough for a loaded
//! machine. Run it on a multi-threaded runtime (`#[tokio::test(flavor = "multi_thread")]`) so
//! that the concurrency cases race for real; it passes on a single thread too.
//! [`case_names`] lists the cases: each name is a sentence about behaviour.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use baton_core::{Backend, ManualClock};

mod bad_input;
mod claims;
mod dispatch;
mod fencing;
mod heartbeat;
mod jobs;
mod list;
mod locks;
mod pause;
mod queue;
mod queue_names;
mod retries;
mod support;
mod trace;

/// The environment variable holding a substring of case names: only matching cases run.
pub const FILTER_VARIABLE: &str = "BATON_CONFORMANCE_FILTER";

/// How long one case may take before it is reported as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one case runs against: a fresh backend and the means to move its time.
#[derive(Debug, Clone)]
pub struct Harness<B> {
    /// The backend under test, isolated from every other case's.
    pub backend: B,
    /// How the case makes time pass for the backend.
    pub time: TestTime,
}

impl<B> Harness<B> {
    /// A harness for a backend that reads `clock`, which the cases advance.
    pub fn manual(backend: B, clock: ManualClock) -> Self {
        Self {
            backend,
            time: TestTime::Manual(clock),
        }
    }

    /// A harness for a backend that keeps its own time (a server's clock): cases sleep.
    pub fn real(backend: B) -> Self {
        Self {
            backend,
            time: TestTime::Real,
        }
    }
}

/// How time passes for the backend under test.
#[derive(Debug, Clone)]
pub enum TestTime {
    /// The backend reads this clock; passing time advances it at once.
    Manual(ManualClock),
    /// The backend keeps real time (its own or its server's); passing time sleeps.
    Real,
}

impl TestTime {
    /// Lets `duration` pass on the backend's clock.
    ///
    /// A manual clock is advanced and the task yields once, so that tasks woken by the change
    /// can run; real time is slept through.
    pub async fn pass(&self, duration: Duration) {
        match self {
            Self::Manual(clock) => {
                clock.advance(duration);
                tokio::task::yield_now().await;
            }
            Self::Real => tokio::time::sleep(duration).await,
        }
    }
}

/// The outcome of a conformance run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The cases that passed, in the order they ran.
    pub passed: Vec<&'static str>,
    /// The cases that failed, with what went wrong, in the order they ran.
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Whether every case that ran passed.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }

    /// Why the case named `name` failed, if it ran and failed.
    pub fn failure(&self, name: &str) -> Option<&str> {
        self.failed
            .iter()
            .find(|(case, _)| *case == name)
            .map(|(_, message)| message.as_str())
    }
}

/// The name of every case in the suite, in the order they run (the backend type only
/// instantiates the generic cases; nothing is built).
pub fn case_names<B: Backend + Clone + 'static>() -> Vec<&'static str> {
    all_cases::<B>().into_iter().map(|case| case.name).collect()
}

/// Runs every case (or those matching [`FILTER_VARIABLE`]) and panics listing the failures.
///
/// `factory` is called once per case and must return a fresh, isolated backend.
///
/// # Panics
///
/// If any case fails.
pub async fn run_all<B, F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Harness<B>>,
    B: Backend + Clone + 'static,
{
    let report = run(factory).await;
    if !report.is_success() {
        let list: Vec<String> = report
            .failed
            .iter()
            .map(|(name, message)| format!("  {name}: {message}"))
            .collect();
        panic!(
            "conformance: {} of {} cases failed:\n{}",
            report.failed.len(),
            report.failed.len() + report.passed.len(),
            list.join("\n")
        );
    }
}

/// Runs every case (or those matching [`FILTER_VARIABLE`]) one after another and returns which
/// passed and which failed, printing one line per case and a summary.
///
/// `factory` is called once per case and must return a fresh, isolated backend.
pub async fn run<B, F, Fut>(factory: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Harness<B>>,
    B: Backend + Clone + 'static,
{
    let filter = std::env::var(FILTER_VARIABLE)
        .ok()
        .filter(|filter| !filter.is_empty());
    run_cases(all_cases::<B>(), factory, filter.as_deref(), CASE_TIMEOUT).await
}

/// Runs the `cases` whose names contain `filter`, each in its own task limited to `limit`.
async fn run_cases<B, F, Fut>(
    cases: Vec<Case<B>>,
    factory: F,
    filter: Option<&str>,
    limit: Duration,
) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Harness<B>>,
    B: Backend + Clone + 'static,
{
    let mut report = Report::default();
    for case in cases {
        if filter.is_some_and(|filter| !case.name.contains(filter)) {
            continue;
        }
        let harness = factory().await;
        match run_case(&case, harness, limit).await {
            Ok(()) => {
                println!("conformance: {} ... ok", case.name);
                report.passed.push(case.name);
            }
            Err(message) => {
                println!("conformance: {} ... FAILED: {message}", case.name);
                report.failed.push((case.name, message));
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
    report
}

/// What a case returns: `Err` with a message saying what went wrong.
type CaseResult = Result<(), String>;

/// A case's body, boxed so that cases of one backend type fit in one list.
type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send + 'static>>;

/// One named case of the suite.
struct Case<B> {
    name: &'static str,
    run: fn(Harness<B>) -> CaseFuture,
}

/// Builds a [`Case`] from a sentence and a generic `async fn(Harness<B>) -> CaseResult`.
macro_rules! case {
    ($name:literal, $function:ident) => {
        $crate::conformance::Case {
            name: $name,
            run: |harness| Box::pin($function(harness)),
        }
    };
}
use case;

fn all_cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    let mut cases = Vec::new();
    cases.extend(heartbeat::cases::<B>());
    cases.extend(locks::cases::<B>());
    cases.extend(claims::cases::<B>());
    cases.extend(fencing::cases::<B>());
    cases.extend(queue::cases::<B>());
    cases.extend(retries::cases::<B>());
    cases.extend(jobs::cases::<B>());
    cases.extend(trace::cases::<B>());
    cases.extend(pause::cases::<B>());
    cases.extend(list::cases::<B>());
    cases.extend(queue_names::cases::<B>());
    cases.extend(dispatch::cases::<B>());
    cases.extend(bad_input::cases::<B>());
    cases
}

/// Runs one case in its own task, so that a panic or a hang fails only that case.
async fn run_case<B: Backend + Clone + 'static>(
    case: &Case<B>,
    harness: Harness<B>,
    limit: Duration,
) -> CaseResult {
    let mut handle = tokio::spawn((case.run)(harness));
    match tokio::time::timeout(limit, &mut handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) => Err(support::join_error_message(join_error)),
        Err(_elapsed) => {
            handle.abort();
            Err(format!("did not finish within {limit:?} (hung?)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use baton_core::ManualClock;
    use baton_memory::MemoryBackend;

    use super::{Case, CaseFuture, Harness, all_cases, run_cases};

    async fn memory() -> Harness<MemoryBackend> {
        let clock = ManualClock::default();
        Harness::manual(MemoryBackend::with_clock(Arc::new(clock.clone())), clock)
    }

    fn passing(_: Harness<MemoryBackend>) -> CaseFuture {
        Box::pin(async { Ok(()) })
    }

    fn failing(_: Harness<MemoryBackend>) -> CaseFuture {
        Box::pin(async { Err("wrong answer".to_owned()) })
    }

    fn panicking(_: Harness<MemoryBackend>) -> CaseFuture {
        Box::pin(async { panic!("boom") })
    }

    fn hanging(_: Harness<MemoryBackend>) -> CaseFuture {
        Box::pin(std::future::pending())
    }

    fn synthetic_cases() -> Vec<Case<MemoryBackend>> {
        vec![
            Case {
                name: "a passing case",
                run: passing,
            },
            Case {
                name: "a failing case",
                run: failing,
            },
            Case {
                name: "a panicking case",
                run: panicking,
            },
            Case {
                name: "a hanging case",
                run: hanging,
            },
            Case {
                name: "a last passing case",
                run: passing,
            },
        ]
    }

    #[tokio::test]
    async fn failures_panics_and_hangs_fail_only_their_own_case() {
        let report = run_cases(synthetic_cases(), memory, None, Duration::from_millis(200)).await;
        assert_eq!(report.passed, ["a passing case", "a last passing case"]);
        assert_eq!(report.failure("a failing case"), Some("wrong answer"));
        let panic = report.failure("a panicking case").unwrap_or_default();
        assert!(panic.contains("panicked: boom"), "{panic}");
        let hang = report.failure("a hanging case").unwrap_or_default();
        assert!(hang.contains("did not finish"), "{hang}");
    }

    #[tokio::test]
    async fn a_filter_runs_only_the_cases_whose_names_contain_it() {
        let report = run_cases(
            synthetic_cases(),
            memory,
            Some("passing"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(report.passed, ["a passing case", "a last passing case"]);
        assert!(report.failed.is_empty());
        let heartbeat = run_cases(all_cases(), memory, Some("beat"), Duration::from_secs(5)).await;
        assert!(
            heartbeat.is_success() && heartbeat.passed.len() >= 3,
            "{heartbeat:?}"
        );
        assert!(heartbeat.passed.iter().all(|name| name.contains("beat")));
    }
}
