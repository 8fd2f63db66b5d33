//! What the test binaries share: the server's URL and fresh backends under a prefix of their own.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use baton_redis::{KeyPrefix, RedisBackend, RedisConfig};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The URL of the test server.
pub fn url() -> String {
    std::env::var("BATON_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "BATON_TEST_REDIS_URL is not set: run the tests through scripts/test, which starts \
             the servers (or source .services/env after scripts/services up redis)"
        )
    })
}

/// The prefix shared by every key this test process creates under `tag`.
pub fn process_prefix(tag: &str) -> String {
    format!("t{}:{tag}", std::process::id())
}

/// A fresh configuration with a prefix of its own under `tag`.
pub fn config(tag: &str) -> RedisConfig {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut config = RedisConfig::new(url());
    config.prefix = KeyPrefix::new(format!("{}{n}:", process_prefix(tag))).unwrap();
    config
}

/// A backend under a fresh prefix of its own.
pub async fn fresh(tag: &str) -> RedisBackend {
    RedisBackend::connect(config(tag)).await.unwrap()
}

/// Deletes every key whose name holds `prefix`, found with SCAN (an admin listing, for tests).
pub async fn delete_keys(prefix: &str) {
    let client = redis::Client::open(url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("*{prefix}*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
