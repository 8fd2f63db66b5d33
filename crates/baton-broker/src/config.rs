//! The broker's settings.

use std::time::Duration;

use baton_core::{Error, Result, RetryPolicy};

/// How a broker runs. [`Default`] gives the seed broker's timings on `tcp://127.0.0.1:5555`.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where the ROUTER socket binds (workers and clients connect here). Port 0 picks one.
    pub endpoint: String,
    /// Where the PUB socket of state-change notices binds, if anywhere.
    pub publish_endpoint: Option<String>,
    /// The owner name of the broker's job leases. Brokers that share a backend may share it:
    /// leases are told apart by their tokens. Keeping it across restarts lets a restarted
    /// broker accept the completion of a job that a worker started under its previous run.
    pub name: String,
    /// A job's execution timeout when it sets none (the seed's 30 s).
    pub default_timeout: Duration,
    /// The retry policy of jobs enqueued without `retry_count` and `retry_delay`: a job whose
    /// worker vanished or timed out runs again while attempts remain.
    pub default_retry: RetryPolicy,
    /// How long a worker waits for a job before it is sent an `idle` ping (the seed's 10 s).
    pub idle_ping_interval: Duration,
    /// How long a pinged worker has to answer before it is considered gone.
    pub ping_timeout: Duration,
    /// How often jobs whose execution timed out are looked for.
    pub expiry_interval: Duration,
    /// How often a queue with waiting workers is looked at again when no wake-up came (for
    /// delayed jobs and retries that became due).
    pub poll_interval: Duration,
    /// The secret a `quit` must carry; with none, `quit` is refused.
    pub quit_token: Option<String>,
    /// The largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most requests waiting for a later reply (waiting workers and `notify` calls);
    /// past it, new ones are answered with an error at once.
    pub max_pending_replies: usize,
    /// How long a reply may wait for room in a peer's outbound queue before it is dropped.
    pub send_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            endpoint: "tcp://127.0.0.1:5555".to_owned(),
            publish_endpoint: None,
            name: "broker".to_owned(),
            default_timeout: Duration::from_secs(30),
            default_retry: RetryPolicy::exponential(3, Duration::from_secs(1)),
            idle_ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            expiry_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            quit_token: None,
            max_message_bytes: 2 * 1024 * 1024,
            max_pending_replies: 10_000,
            send_timeout: Duration::from_millis(200),
        }
    }
}

impl BrokerConfig {
    /// Checks that the settings make sense.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the setting.
    pub fn validate(&self) -> Result<()> {
        baton_core::validate_ttl(self.default_timeout)
            .map_err(|error| Error::invalid(format!("default_timeout: {error}")))?;
        self.default_retry.validate()?;
        baton_core::Owner::new(&self.name)?;
        for (name, value) in [
            ("idle_ping_interval", self.idle_ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("expiry_interval", self.expiry_interval),
            ("poll_interval", self.poll_interval),
            ("send_timeout", self.send_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid(format!("{name} must be more than zero")));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(Error::invalid("max_message_bytes must be at least 1024"));
        }
        if self.max_pending_replies == 0 {
            return Err(Error::invalid("max_pending_replies must be at least 1"));
        }
        Ok(())
    }
}
