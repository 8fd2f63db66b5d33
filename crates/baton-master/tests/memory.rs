//! The master executor on the in-memory backend: election, clean handover, disable and enable,
//! and `stop` on every path that loses leadership.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{Lock, ManualClock, Owner};
use baton_master::{
    DisableOutcome, MasterControl, MasterEvent, MasterExecutor, MasterName, MasterOptions,
    MasterState, StopCause,
};
use baton_memory::MemoryBackend;
use baton_testkit::faulty::{Faulty, Mode, Op};
use support::{Call, Recorder, next_call, tight};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn name(text: &str) -> MasterName {
    MasterName::new(text).unwrap()
}

fn start_instances<B: baton_core::Lock + baton_core::Heartbeat + 'static>(
    backend: &Arc<B>,
    master: &MasterName,
    settings: baton_master::MasterSettings,
    count: usize,
    calls: &mpsc::UnboundedSender<Call>,
) -> Vec<MasterExecutor> {
    (0..count)
        .map(|who| {
            let options = MasterOptions::new(master.clone())
                .with_settings(settings)
                .with_owner(Owner::new(format!("instance-{who}")).unwrap());
            MasterExecutor::start(backend.clone(), options, Recorder::new(who, calls.clone()))
                .unwrap()
        })
        .collect()
}

async fn wait_for_state(executor: &MasterExecutor, wanted: impl Fn(&MasterState) -> bool) {
    let mut state = executor.watch_state();
    tokio::time::timeout(WAIT, state.wait_for(|state| wanted(state)))
        .await
        .expect("state not reached in time")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_elect_one_master_and_a_clean_shutdown_hands_over_at_once() {
    let backend = Arc::new(MemoryBackend::new());
    let master = name("JOB-SCHEDULER");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let mut executors = start_instances(&backend, &master, tight(5000, 500), 3, &tx);

    let Call::Start { who, token } = next_call(&mut calls, WAIT).await else {
        panic!("a stop before any start");
    };
    let leading: Vec<usize> = executors
        .iter()
        .enumerate()
        .filter(|(_, executor)| matches!(executor.state(), MasterState::Leading { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(leading, vec![who], "exactly the started instance leads");
    let holders = backend.holders().await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].lease.token(), token);

    let handed_over = Instant::now();
    executors.remove(who).shutdown().await;
    let Call::Stop {
        who: stopped,
        cause,
        still_current,
        ..
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected the master's stop");
    };
    assert_eq!(
        (stopped, cause, still_current),
        (who, StopCause::Shutdown, false)
    );
    let Call::Start {
        who: next,
        token: next_token,
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected another start");
    };
    assert_ne!(next, who);
    assert!(next_token > token, "{next_token} after {token}");
    assert!(
        handed_over.elapsed() < Duration::from_secs(2),
        "a released lease is taken at once, not after its 5 s expiry: {:?}",
        handed_over.elapsed()
    );
    for executor in executors {
        executor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_stops_the_master_and_keeps_every_instance_out_until_enabled_even_after_restart()
{
    let backend = Arc::new(MemoryBackend::new());
    let control = MasterControl::new(backend.clone());
    let master = name("heartbeat-emitter");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let executors = start_instances(&backend, &master, tight(2000, 200), 3, &tx);
    let Call::Start { who, token } = next_call(&mut calls, WAIT).await else {
        panic!("a stop before any start");
    };

    let operator = Owner::new("operator").unwrap();
    let outcome = control
        .disable(&master, "testing", &operator)
        .await
        .unwrap();
    assert!(matches!(outcome, DisableOutcome::Disabled(ref d) if d.reason == "testing"));
    let again = control.disable(&master, "other", &operator).await.unwrap();
    assert!(matches!(again, DisableOutcome::AlreadyDisabled(ref d) if d.reason == "testing"));

    let Call::Stop {
        who: stopped,
        token: stopped_token,
        cause,
        still_current,
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected the master's stop");
    };
    assert_eq!((stopped, stopped_token), (who, token));
    assert_eq!(
        cause,
        StopCause::Disabled {
            reason: "testing".into()
        }
    );
    assert!(!still_current);
    for executor in &executors {
        wait_for_state(
            executor,
            |state| matches!(state, MasterState::Disabled { reason } if reason == "testing"),
        )
        .await;
    }
    let status = control.status(&[]).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].disabled.as_ref().unwrap().reason, "testing");
    assert_eq!(status[0].holder, None);

    // Restart every instance: the disabled state lives in the backend.
    for executor in executors {
        executor.shutdown().await;
    }
    let restarted = start_instances(&backend, &master, tight(2000, 200), 2, &tx);
    for executor in &restarted {
        let mut events = executor.events();
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(event, MasterEvent::Disabled(ref d) if d.reason == "testing"),
            "{event:?}"
        );
    }
    assert!(
        calls.try_recv().is_err(),
        "no instance started while disabled"
    );

    assert!(control.enable(&master).await.unwrap());
    assert!(
        !control.enable(&master).await.unwrap(),
        "enabling twice is harmless"
    );
    let Call::Start {
        token: new_token, ..
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected a start once enabled");
    };
    assert!(new_token > token);
    let status = control.status(&[]).await.unwrap();
    assert_eq!(status[0].disabled, None);
    assert_eq!(status[0].holder.as_ref().unwrap().token, new_token);
    for executor in restarted {
        executor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_the_backend_let_expire_stops_the_master_with_lease_lost() {
    let clock = ManualClock::default();
    let backend = Arc::new(MemoryBackend::with_clock(Arc::new(clock.clone())));
    let master = name("compaction");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let executors = start_instances(&backend, &master, tight(1000, 100), 2, &tx);
    let Call::Start { who, token } = next_call(&mut calls, WAIT).await else {
        panic!("a stop before any start");
    };
    // The backend's clock jumps past the lease: it sees the master expired and hands the
    // lease to the other instance, whose grant the old master's next renewal runs into.
    clock.advance(Duration::from_secs(5));
    let mut stopped = None;
    let mut started = None;
    while stopped.is_none() || started.is_none() {
        match next_call(&mut calls, WAIT).await {
            Call::Stop {
                who: w,
                cause,
                still_current,
                ..
            } => {
                assert_eq!(w, who);
                assert!(!still_current);
                stopped = Some(cause);
            }
            Call::Start { who: w, token: t } => {
                assert_ne!(w, who);
                assert!(t > token);
                started = Some(t);
            }
        }
    }
    assert_eq!(stopped, Some(StopCause::LeaseLost));
    for executor in executors {
        executor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_failing_past_the_retry_count_stop_the_master() {
    let backend = Arc::new(Faulty::new(MemoryBackend::new()));
    let faults = backend.control();
    let master = name("renew-fails");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let executors = start_instances(&backend, &master, tight(4000, 100), 1, &tx);
    let mut events = executors[0].events();
    let Call::Start { token, .. } = next_call(&mut calls, WAIT).await else {
        panic!("a stop before any start");
    };
    faults.only([Op::RenewLock]);
    faults.set_mode(Mode::Fail);
    let Call::Stop {
        token: stopped,
        cause,
        still_current,
        ..
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected a stop");
    };
    assert_eq!(stopped, token);
    assert!(
        matches!(cause, StopCause::RenewFailed { ref error } if error.contains("injected")),
        "{cause:?}"
    );
    assert!(!still_current);
    // The lease was released on the way out, so the next election does not wait for it.
    faults.set_mode(Mode::Pass);
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let MasterEvent::Stopped { .. } = event {
            break;
        }
    }
    let Call::Start { token: again, .. } = next_call(&mut calls, WAIT).await else {
        panic!("expected a new start");
    };
    assert!(again > token);
    for executor in executors {
        executor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_renewals_stall_stops_on_its_own_clock_before_the_backend_hands_over() {
    let clock = ManualClock::default();
    let backend = Arc::new(Faulty::new(MemoryBackend::with_clock(Arc::new(
        clock.clone(),
    ))));
    let faults = backend.control();
    let master = name("stalled");
    let (tx, mut calls) = mpsc::unbounded_channel();
    let executors = start_instances(&backend, &master, tight(1000, 100), 2, &tx);
    let Call::Start { who, token } = next_call(&mut calls, WAIT).await else {
        panic!("a stop before any start");
    };
    faults.only([Op::RenewLock, Op::ReleaseLock]);
    faults.set_mode(Mode::Stall);
    let Call::Stop {
        who: stopped,
        cause,
        still_current,
        ..
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected a stop");
    };
    assert_eq!(
        (stopped, cause, still_current),
        (who, StopCause::Expired, false)
    );
    // The backend's clock has not moved: it still holds the lease for the stopped master, so
    // no one else can have started. The master stopped first.
    let holders = backend.inner().holders().await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].lease.token(), token);
    assert_eq!(holders[0].lease.owner().as_str(), format!("instance-{who}"));
    assert!(calls.try_recv().is_err());

    // Once the backend's lease runs out a new leadership begins, with a greater token.
    faults.set_mode(Mode::Pass);
    clock.advance(Duration::from_secs(2));
    let Call::Start {
        token: next_token, ..
    } = next_call(&mut calls, WAIT).await
    else {
        panic!("expected a start");
    };
    assert!(next_token > token);
    for executor in executors {
        executor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_with_different_names_lead_independently_in_one_process() {
    let backend = Arc::new(MemoryBackend::new());
    let (tx, mut calls) = mpsc::unbounded_channel();
    let first = start_instances(&backend, &name("one"), tight(2000, 200), 1, &tx);
    let second = start_instances(&backend, &name("two"), tight(2000, 200), 1, &tx);
    for _ in 0..2 {
        assert!(matches!(
            next_call(&mut calls, WAIT).await,
            Call::Start { .. }
        ));
    }
    let status = MasterControl::new(backend.clone())
        .status(&[name("three")])
        .await
        .unwrap();
    let names: Vec<&str> = status.iter().map(|s| s.lock_name.as_str()).collect();
    assert_eq!(names, ["one", "three", "two"]);
    assert!(status[0].holder.is_some() && status[2].holder.is_some());
    assert!(status[1].holder.is_none());
    for executor in first.into_iter().chain(second) {
        executor.shutdown().await;
    }
}
