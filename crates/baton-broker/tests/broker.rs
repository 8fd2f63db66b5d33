//! The broker on the memory backend, through real sockets on loopback: Baton's worker and
//! client libraries, raw seed-format peers, and bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_broker::{
    BrokerConfig, BrokerHandle, BrokerStats, Client, Outcome, Worker, WorkerActivity, WorkerInfo,
    start,
};
use baton_core::Backend;
use baton_memory::MemoryBackend;
use bytes::Bytes;
use serde_json::{Value, json};
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const WAIT: Duration = Duration::from_secs(20);

fn config() -> BrokerConfig {
    BrokerConfig {
        endpoint: "tcp://127.0.0.1:0".into(),
        quit_token: Some("secret".into()),
        ..BrokerConfig::default()
    }
}

async fn broker(backend: &Arc<MemoryBackend>, config: BrokerConfig) -> BrokerHandle {
    let backend: Arc<dyn Backend> = backend.clone();
    start(backend, config).await.expect("broker starts")
}

/// A raw REQ peer speaking JSON, as a seed worker or client does.
struct Req(ReqSocket);

impl Req {
    async fn connect(endpoint: &str) -> Self {
        let mut socket = ReqSocket::new();
        socket.connect(endpoint).await.expect("connect");
        Self(socket)
    }

    async fn send(&mut self, message: Value) {
        self.0
            .send(ZmqMessage::from(message.to_string()))
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> Value {
        let reply = tokio::time::timeout(WAIT, self.0.recv())
            .await
            .expect("a reply in time")
            .expect("recv");
        serde_json::from_slice(&reply.into_vec()[0]).expect("JSON reply")
    }

    async fn ask(&mut self, message: Value) -> Value {
        self.send(message).await;
        self.recv().await
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn workers_run_every_job_and_clients_hear_each_result() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(&backend, config()).await;
    let worker = Worker::new(broker.endpoint(), "math")
        .concurrency(4)
        .spawn(|job| async move {
            let n = job.parameters()[0].as_i64().unwrap_or(0);
            Outcome::Success(json!(n * 2))
        });
    let mut client = Client::new(broker.endpoint());
    let mut ids = Vec::new();
    for n in 0..200 {
        let job = json!({"queue": "math", "target": "Calc", "method": "double", "parameters": [n]});
        ids.push(client.enqueue(job).await.expect("enqueue"));
    }
    for (n, id) in ids.iter().enumerate() {
        let reply = client.notify(id, WAIT).await.expect("notify");
        assert_eq!(reply["status"], "completed", "{reply}");
        assert_eq!(reply["job"]["result"], json!(n as i64 * 2));
        assert_eq!(reply["job"]["method"], "double");
    }
    let last = client.last("math").await.expect("last");
    assert_eq!(last["id"], json!(ids[199]));
    let fetched = client.fetch(&ids[0]).await.expect("fetch");
    assert_eq!(fetched["status"], "completed");
    assert_eq!(BrokerStats::get(&broker.stats().dispatched), 200);
    worker.stop().await;
    broker.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_seed_worker_is_served_unchanged() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(
        &backend,
        BrokerConfig {
            idle_ping_interval: Duration::from_millis(200),
            ..config()
        },
    )
    .await;
    let endpoint = broker.endpoint().to_owned();
    let mut worker = Req::connect(&endpoint).await;
    worker
        .send(json!({"command": "ready", "queue": "default", "worker_name": "ruby:host:1:2"}))
        .await;
    // Nothing to do: the broker pings the waiting worker, which answers as the seed's does.
    let ping = worker.recv().await;
    assert_eq!(ping["command"], "idle", "{ping}");
    let mut client = Req::connect(&endpoint).await;
    let enqueued = client
        .ask(json!({"job": {"target": "Mailer", "method": "deliver", "parameters": [7], "timeout": 5}, "command": "enqueue"}))
        .await;
    assert_eq!(enqueued["status"], "success", "{enqueued}");
    let id = enqueued["job_id"].as_str().expect("job_id").to_owned();
    worker
        .send(json!({"command": "completed", "ready": true, "job_id": ping["job_id"], "result": "idle, doing nothing", "status": "success"}))
        .await;
    let job = worker.recv().await;
    assert_eq!(job["command"], "job");
    assert_eq!(job["job_id"], json!(id));
    assert_eq!(
        (job["target"].clone(), job["method"].clone()),
        (json!("Mailer"), json!("deliver"))
    );
    assert_eq!(job["parameters"], json!([7]));

    // touch from a DEALER: no delimiter frame, a reply the seed worker ignores.
    let mut dealer = DealerSocket::new();
    dealer.connect(&endpoint).await.expect("dealer");
    dealer
        .send(ZmqMessage::from(
            json!({"command": "touch", "job_id": id}).to_string(),
        ))
        .await
        .expect("touch");
    let touched = tokio::time::timeout(WAIT, dealer.recv())
        .await
        .expect("touch reply")
        .expect("recv");
    let touched: Value =
        serde_json::from_slice(touched.into_vec().last().expect("frame")).expect("JSON");
    assert_eq!(touched["status"], "success", "{touched}");

    let status = client
        .ask(json!({"parameters": [], "command": "status"}))
        .await;
    assert_eq!(status["status"], "OK");
    let workers = status["queues"]["default"]
        .as_object()
        .expect("default queue");
    let busy = workers.values().next().expect("one worker");
    assert_eq!(
        (busy["status"].clone(), busy["name"].clone()),
        (json!("processing"), json!("ruby:host:1:2"))
    );

    worker
        .send(json!({"command": "completed", "ready": true, "job_id": id, "result": {"sent": true}, "status": "success"}))
        .await;
    let notified = client.ask(json!({"command": "notify", "job_id": id})).await;
    assert_eq!(notified["status"], "completed", "{notified}");
    assert_eq!(notified["job"]["result"], json!({"sent": true}));

    // goodbye from a new socket drops the waiting one by its name.
    let mut leaving = Req::connect(&endpoint).await;
    let bye = leaving
        .ask(json!({"command": "goodbye", "worker_name": "ruby:host:1:2"}))
        .await;
    assert_eq!(bye["status"], "see ya later");
    let status = client.ask(json!({"command": "status"})).await;
    assert_eq!(status["workers"], 0, "{status}");

    let unknown = client.ask(json!({"command": "frobnicate"})).await;
    assert_eq!(unknown["status"], "unknown command!");
    let quit = client.ask(json!({"command": "quit"})).await;
    assert_eq!(
        quit["status"], "error",
        "quit without the token must be refused"
    );
    let quit = client
        .ask(json!({"command": "quit", "token": "secret"}))
        .await;
    assert_eq!(quit["status"], "bye");
    broker.wait().await.expect("the broker stops after quit");
}

#[tokio::test]
async fn a_late_completion_is_rejected_and_the_retry_wins() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(
        &backend,
        BrokerConfig {
            expiry_interval: Duration::from_millis(50),
            ..config()
        },
    )
    .await;
    let endpoint = broker.endpoint().to_owned();
    let mut client = Req::connect(&endpoint).await;
    let enqueued = client
        .ask(json!({"command": "enqueue", "job": {"queue": "slow", "timeout": 0.3, "retry_count": 2, "retry_delay": 0.01}}))
        .await;
    let id = enqueued["job_id"].as_str().expect("job_id").to_owned();
    let mut late = Req::connect(&endpoint).await;
    late.send(json!({"command": "ready", "queue": "slow", "worker_name": "late"}))
        .await;
    let first = late.recv().await;
    assert_eq!(first["job_id"], json!(id));
    // The first worker overruns its timeout; the job goes to a second worker.
    let mut second = Req::connect(&endpoint).await;
    second
        .send(json!({"command": "ready", "queue": "slow", "worker_name": "second"}))
        .await;
    let retried = second.recv().await;
    assert_eq!(retried["job_id"], json!(id));
    assert!(
        retried["attempt"].as_u64() > first["attempt"].as_u64(),
        "{retried}"
    );
    // The first worker's completion arrives late and must not count.
    late.send(json!({"command": "completed", "ready": false, "job_id": id, "result": "stale", "status": "success"}))
        .await;
    assert_eq!(late.recv().await["status"], "thanks");
    wait_until("the late completion to be rejected", || {
        BrokerStats::get(&broker.stats().rejected_completions) == 1
    })
    .await;
    second
        .send(json!({"command": "completed", "ready": false, "job_id": id, "result": "fresh", "status": "success"}))
        .await;
    assert_eq!(second.recv().await["status"], "thanks");
    let notified = client.ask(json!({"command": "notify", "job_id": id})).await;
    assert_eq!(notified["job"]["result"], "fresh", "{notified}");
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_vanished_worker_s_job_is_finished_by_another() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(&backend, config()).await;
    let endpoint = broker.endpoint().to_owned();
    let mut client = Client::new(&endpoint);
    let id = client
        .enqueue(json!({"queue": "q", "parameters": []}))
        .await
        .expect("enqueue");
    {
        let mut doomed = Req::connect(&endpoint).await;
        doomed
            .send(json!({"command": "ready", "queue": "q", "worker_name": "doomed"}))
            .await;
        assert_eq!(doomed.recv().await["job_id"], json!(id));
        // The worker's process dies: its connection closes mid-job.
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let worker = Worker::new(&endpoint, "q").spawn(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Outcome::Success(json!("done")) }
    });
    let reply = client.notify(&id, WAIT).await.expect("notify");
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(reply["job"]["attempts"], 2, "{reply}");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    worker.stop().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_restarted_broker_loses_no_job_and_workers_find_it() {
    let backend = Arc::new(MemoryBackend::new());
    // Jobs running when the broker stops come back once their timeout passes.
    let quick = || BrokerConfig {
        default_timeout: Duration::from_secs(1),
        ..config()
    };
    let first = broker(&backend, quick()).await;
    let endpoint = first.endpoint().to_owned();
    let worker = Worker::new(&endpoint, "q")
        .concurrency(2)
        .reply_timeout(Duration::from_millis(500))
        .spawn(|_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Outcome::Success(json!("ok"))
        });
    let mut client = Client::new(&endpoint).with_timeout(Duration::from_secs(2));
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(
            client
                .enqueue(json!({"queue": "q"}))
                .await
                .expect("enqueue"),
        );
    }
    // The broker's process dies.
    first.abort().await;
    for _ in 0..50 {
        // Stored while no broker runs: straight into the backend, as another process would.
        let job = baton_core::NewJob::new(
            baton_core::QueueName::new("q").expect("name"),
            json!({"queue": "q"}),
        )
        .expect("job");
        ids.push(
            baton_core::Queue::enqueue(&*backend, &job)
                .await
                .expect("enqueue")
                .to_string(),
        );
    }
    let second = restart(&backend, &endpoint, quick()).await;
    for id in &ids {
        let reply = client.notify(id, WAIT).await.expect("notify");
        assert_eq!(reply["status"], "completed", "{reply}");
    }
    worker.stop().await;
    second.shutdown().await.expect("shutdown");
}

/// A broker on `endpoint` again, once the old one's socket has let the port go.
async fn restart(
    backend: &Arc<MemoryBackend>,
    endpoint: &str,
    config: BrokerConfig,
) -> BrokerHandle {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let backend: Arc<dyn Backend> = backend.clone();
        let config = BrokerConfig {
            endpoint: endpoint.to_owned(),
            ..config.clone()
        };
        match start(backend, config).await {
            Ok(broker) => return broker,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind again: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_canceled_job_s_worker_hears_it_at_its_next_touch() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(&backend, config()).await;
    let endpoint = broker.endpoint().to_owned();
    let worker = Worker::new(&endpoint, "q").spawn(|job| async move {
        job.canceled().await;
        Outcome::Failure(json!("stopped: canceled"))
    });
    let mut client = Client::new(&endpoint);
    let id = client
        .enqueue(json!({"queue": "q", "timeout": 0.3}))
        .await
        .expect("enqueue");
    wait_until_running(&mut client, &id).await;
    let canceled = client.cancel(&id).await.expect("cancel");
    assert_eq!(canceled["status"], "canceled");
    let reply = client.notify(&id, WAIT).await.expect("notify");
    assert_eq!(reply["status"], "canceled");
    // The worker stops its job and is free again: the next job runs.
    let next = client
        .enqueue(json!({"queue": "q", "timeout": 0.3}))
        .await
        .expect("enqueue");
    wait_until_running(&mut client, &next).await;
    client.cancel(&next).await.expect("cancel");
    assert_eq!(
        client.notify(&next, WAIT).await.expect("notify")["status"],
        "canceled"
    );
    worker.stop().await;
    broker.shutdown().await.expect("shutdown");
}

async fn wait_until_running(client: &mut Client, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job = client.fetch(id).await.expect("fetch");
        if job["status"] == "in progress" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never ran: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn malformed_input_is_answered_or_dropped_and_others_are_still_served() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(
        &backend,
        BrokerConfig {
            max_message_bytes: 64 * 1024,
            ..config()
        },
    )
    .await;
    let endpoint = broker.endpoint().to_owned();

    // REQ peers get one error reply per bad message, keeping their REQ-REP cycle.
    let mut req = Req::connect(&endpoint).await;
    for body in [
        "{not json",
        "[]",
        "{}",
        "{\"command\":7}",
        "{\"command\":\"fetch\"}",
    ] {
        req.0.send(ZmqMessage::from(body)).await.expect("send");
        let reply = req.recv().await;
        assert_eq!(reply["status"], "error", "{body}: {reply}");
    }
    let huge = json!({"command": "enqueue", "job": {"blob": "x".repeat(100 * 1024)}});
    let reply = req.ask(huge).await;
    assert_eq!(reply["status"], "error");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("over the limit"),
        "{reply}"
    );

    // DEALER peers: empty frames, many frames, one frame of garbage.
    let mut dealer = DealerSocket::new();
    dealer.connect(&endpoint).await.expect("dealer");
    for frames in [
        vec![Bytes::new()],
        vec![Bytes::new(), Bytes::new()],
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
        ],
        vec![Bytes::from_static(b"\xff\xfe")],
    ] {
        dealer
            .send(ZmqMessage::try_from(frames).expect("frames"))
            .await
            .expect("send");
    }
    // A peer that asks and never reads its replies.
    let mut deaf = DealerSocket::new();
    deaf.connect(&endpoint).await.expect("deaf");
    for _ in 0..2000 {
        deaf.send(ZmqMessage::from(json!({"command": "status"}).to_string()))
            .await
            .expect("send");
    }
    let mut client = Client::new(&endpoint);
    let id = client
        .enqueue(json!({"queue": "q"}))
        .await
        .expect("still serving");
    let status = client.status().await.expect("status");
    assert_eq!(status["status"], "OK");
    assert!(BrokerStats::get(&broker.stats().malformed) >= 9);
    assert!(client.fetch(&id).await.is_ok());
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_publisher_announces_each_state_change_under_the_job_id() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(
        &backend,
        BrokerConfig {
            publish_endpoint: Some("tcp://127.0.0.1:0".into()),
            ..config()
        },
    )
    .await;
    let endpoint = broker.endpoint().to_owned();
    let mut subscriber = zeromq::SubSocket::new();
    subscriber
        .connect(broker.publish_endpoint().expect("a PUB endpoint"))
        .await
        .expect("connect");
    subscriber.subscribe("").await.expect("subscribe");
    let mut client = Client::new(&endpoint);
    // A subscription takes effect asynchronously: enqueue until a notice arrives.
    let mut first = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while first.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no notice arrived");
        let id = client
            .enqueue(json!({"queue": "q"}))
            .await
            .expect("enqueue");
        if let Ok(Ok(notice)) =
            tokio::time::timeout(Duration::from_millis(200), subscriber.recv()).await
        {
            first = Some((id, notice));
        }
    }
    let (_, notice) = first.expect("a notice");
    let text = String::from_utf8(notice.into_vec()[0].to_vec()).expect("text");
    assert!(text.ends_with("\npending"), "{text:?}");
    // Filter on one job: it goes pending, in progress, completed.
    let id = client
        .enqueue(json!({"queue": "watched"}))
        .await
        .expect("enqueue");
    let worker = Worker::new(&endpoint, "watched").spawn(|_| async { Outcome::Success(json!(1)) });
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("completed") {
        let notice = tokio::time::timeout(WAIT, subscriber.recv())
            .await
            .expect("a notice in time")
            .expect("recv");
        let text = String::from_utf8(notice.into_vec()[0].to_vec()).expect("text");
        if let Some(status) = text.strip_prefix(&format!("{id}\n")) {
            seen.push(status.to_owned());
        }
    }
    assert_eq!(seen, ["pending", "in progress", "completed"]);
    worker.stop().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn requests_past_the_pending_reply_limit_are_refused_at_once() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(
        &backend,
        BrokerConfig {
            max_pending_replies: 2,
            ..config()
        },
    )
    .await;
    let endpoint = broker.endpoint().to_owned();
    let mut client = Client::new(&endpoint);
    let id = client
        .enqueue(json!({"queue": "nobody"}))
        .await
        .expect("enqueue");
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut peer = Req::connect(&endpoint).await;
        peer.send(json!({"command": "notify", "job_id": id})).await;
        waiting.push(peer);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.status().await.expect("status")["notify_waiting"] != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notify calls never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = Req::connect(&endpoint).await;
    let refused = third.ask(json!({"command": "notify", "job_id": id})).await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too many"),
        "{refused}"
    );
    // The waiting ones are answered when the job ends.
    client.cancel(&id).await.expect("cancel");
    for peer in &mut waiting {
        assert_eq!(peer.recv().await["status"], "canceled");
    }
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_roster_lists_each_worker_waiting_then_running_its_job_then_gone() {
    let backend = Arc::new(MemoryBackend::new());
    let broker = broker(&backend, config()).await;
    let endpoint = broker.endpoint().to_owned();
    assert_eq!(broker.workers().await, Vec::new());
    let worker = Worker::new(&endpoint, "reports")
        .name("reporter-1")
        .spawn(|job| async move {
            job.canceled().await;
            Outcome::Failure(json!("stopped: canceled"))
        });
    let roster = wait_for_roster(&broker, |roster| roster.len() == 1).await;
    // One connection per concurrency slot, named after the worker and the slot.
    let waiting = &roster[0];
    assert_eq!(
        (
            waiting.name.as_deref(),
            waiting.queue.as_str(),
            waiting.state,
            waiting.job
        ),
        (
            Some("reporter-1:0"),
            "reports",
            WorkerActivity::Waiting,
            None
        )
    );
    assert!(waiting.last_seen >= waiting.connected);

    let mut client = Client::new(&endpoint);
    let id = client
        .enqueue(json!({"queue": "reports", "timeout": 5}))
        .await
        .expect("enqueue");
    let roster = wait_for_roster(&broker, |roster| {
        roster.iter().any(|w| w.state == WorkerActivity::Running)
    })
    .await;
    assert_eq!(roster[0].job.map(|job| job.to_string()), Some(id.clone()));
    assert_eq!(roster[0].peer, waiting.peer, "the same connection");

    client.cancel(&id).await.expect("cancel");
    worker.stop().await;
    wait_for_roster(&broker, Vec::is_empty).await;
    broker.shutdown().await.expect("shutdown");
}

/// Waits, bounded, until the broker's roster satisfies `check`; returns it.
async fn wait_for_roster(
    broker: &BrokerHandle,
    check: impl Fn(&Vec<WorkerInfo>) -> bool,
) -> Vec<WorkerInfo> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let roster = broker.workers().await;
        if check(&roster) {
            return roster;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roster never matched: {roster:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
