//! Names are data, never key syntax; bad input and broken data give typed errors, never panics.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{
    Claim, Error, ItemId, JobState, Lock, LockName, LockRequest, NewJob, Owner, PoolName, Queue,
    QueueName, Retry,
};
use baton_redis::{RedisBackend, RedisConfig};

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_look_like_keys_or_tags_are_just_names() {
    let config = support::config("n");
    let prefix = config.prefix.to_string();
    let backend = RedisBackend::connect(config).await.unwrap();
    let owner = Owner::new("w*{x}").unwrap();
    // Without the length in each key, the queue `a:due` and the queue `a` could share keys.
    let names = [
        "a",
        "a:due",
        "a:1:a",
        "}{baton:jobs}:seq",
        "*",
        "é ü",
        "q:1:a:due",
    ];
    let mut ids = Vec::new();
    for name in names {
        let queue = QueueName::new(name).unwrap();
        ids.push(
            backend
                .enqueue(&NewJob::new(queue, serde_json::json!(name)).unwrap())
                .await
                .unwrap(),
        );
    }
    for (name, id) in names.iter().zip(&ids) {
        let queue = QueueName::new(*name).unwrap();
        let counts = backend.counts(&queue).await.unwrap();
        assert_eq!(counts.pending, 1, "{name}: {counts:?}");
        let reserved = backend
            .reserve(std::slice::from_ref(&queue), &owner, TTL, 10)
            .await
            .unwrap();
        assert_eq!(reserved.len(), 1, "{name}");
        assert_eq!(reserved[0].job.id, *id, "{name}");
        assert_eq!(reserved[0].job.queue.as_str(), *name);
        let done = backend
            .complete(&reserved[0].lease, serde_json::json!(name))
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }

    let locks = ["held", "held}", "{held}", "lock:4:held"];
    let request = LockRequest::new(
        locks.iter().map(|name| LockName::new(name).unwrap()),
        owner.clone(),
        TTL,
    )
    .unwrap();
    let lease = backend.acquire(&request).await.unwrap().granted().unwrap();
    let holders: Vec<String> = backend
        .holders()
        .await
        .unwrap()
        .into_iter()
        .map(|holder| holder.name.to_string())
        .collect();
    let mut expected: Vec<String> = locks.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(holders, expected);
    backend.release_lock(&lease).await.unwrap();

    for (pool, item) in [("p", "1:p:free"), ("p:1:p", "free"), ("p:free", "x|1|y")] {
        let pool = PoolName::new(pool).unwrap();
        let item = ItemId::new(item).unwrap();
        assert_eq!(
            backend
                .add(&pool, std::slice::from_ref(&item))
                .await
                .unwrap(),
            1
        );
        let claim = backend.claim(&pool, &owner, TTL).await.unwrap().unwrap();
        assert_eq!(claim.item, item);
        let listed = backend.items(&pool).await.unwrap();
        assert_eq!(listed.len(), 1, "{pool}: {listed:?}");
        assert_eq!(listed[0].holder.as_ref(), Some(&claim.lease));
        backend.release_claim(&claim).await.unwrap();
    }
    support::delete_keys(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_invalid_input_and_an_unreachable_server_a_retryable_error() {
    let error = RedisBackend::connect(RedisConfig::new("redis://h:notaport"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
    let mut config = RedisConfig::new("redis://127.0.0.1:1");
    config.connect_timeout = Duration::from_secs(2);
    let error = RedisBackend::connect(config).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_data_gives_typed_errors_not_panics() {
    let config = support::config("b");
    let prefix = config.prefix.to_string();
    let backend = RedisBackend::connect(config).await.unwrap();
    let queue = QueueName::new("broken").unwrap();
    let id = backend
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!({})).unwrap())
        .await
        .unwrap();
    let reserved = backend
        .reserve(
            std::slice::from_ref(&queue),
            &Owner::new("w").unwrap(),
            TTL,
            1,
        )
        .await
        .unwrap();

    let client = redis::Client::open(support::url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let job_key = format!("{{{prefix}jobs}}:job:{id}");
    // A retry policy the script cannot decode: its error is a typed backend error.
    let _: i64 = redis::cmd("HSET")
        .arg(&job_key)
        .arg("rt")
        .arg("not json")
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = backend
        .fail(&reserved[0].lease, "boom", Retry::ByPolicy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                transient: false,
                ..
            }
        ),
        "{error:?}"
    );
    // A state no script writes: reading the job is a typed error too.
    let _: i64 = redis::cmd("HSET")
        .arg(&job_key)
        .arg("st")
        .arg("bogus")
        .query_async(&mut admin)
        .await
        .unwrap();
    let error = backend.get(id).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Backend {
                transient: false,
                ..
            }
        ),
        "{error:?}"
    );
    support::delete_keys(&prefix).await;
}
