//! The client library: enqueue, wait for, inspect and cancel jobs.

use std::time::Duration;

use baton_zmq::Requester;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

/// What can go wrong on a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached, or did not answer in time.
    #[error("broker unreachable: {0}")]
    Transport(#[from] baton_zmq::Error),
    /// The broker answered with an error.
    #[error("broker refused: {0}")]
    Refused(String),
    /// The broker's answer was not what the protocol promises.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// A client of one broker. Calls take `&mut self`: one request at a time, as REQ requires.
///
/// After a timeout or a broker restart the next call opens a new connection. Reads are
/// repeated once on a transport error; `enqueue` is not (a lost reply may hide a stored job).
pub struct Client {
    requester: Requester,
    timeout: Duration,
}

impl Client {
    /// A client of the broker at `endpoint`, answering within 10 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            requester: Requester::new(endpoint),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long a call waits for its reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request object and returns the broker's reply object as it is.
    ///
    /// # Errors
    ///
    /// `Transport` if no reply came; `Reply` if it is not JSON.
    pub async fn request(&mut self, request: &Value) -> Result<Value, ClientError> {
        self.request_within(request, self.timeout).await
    }

    async fn request_within(
        &mut self,
        request: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let body = Bytes::from(request.to_string());
        let reply = self.requester.request(body, Some(timeout)).await?;
        serde_json::from_slice(&reply).map_err(|error| ClientError::Reply(error.to_string()))
    }

    /// A read, repeated once after a transport error (a broker restart).
    async fn read(&mut self, request: Value) -> Result<Value, ClientError> {
        match self.request(&request).await {
            Err(ClientError::Transport(_)) => self.request(&request).await,
            other => other,
        }
    }

    /// Stores `job` (an object with `queue`, `target`, `method`, `parameters` and any other
    /// fields; see `PROTOCOL.md`) and returns its id.
    ///
    /// # Errors
    ///
    /// `Refused` with the broker's message for an invalid job.
    pub async fn enqueue(&mut self, job: Value) -> Result<String, ClientError> {
        let reply = self
            .request(&json!({"command": "enqueue", "job": job}))
            .await?;
        let reply = success(reply)?;
        reply
            .get("job_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Reply("no job_id".into()))
    }

    /// Waits up to `timeout` until job `id` ends, and returns the reply: `status`
    /// (`completed`, `failed` or `canceled`) and the `job`.
    ///
    /// # Errors
    ///
    /// `Transport` if the job did not end in time; `Refused` for an unknown job.
    pub async fn notify(&mut self, id: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        let request = json!({"command": "notify", "job_id": id});
        loop {
            // Ask again now and then, so that a broker restart costs one attempt, not the wait.
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = left.min(Duration::from_secs(30));
            match self.request_within(&request, attempt).await {
                Err(ClientError::Transport(error)) if Instant::now() < deadline => {
                    tracing::debug!(%error, "notify: asking again");
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                }
                Ok(reply) if reply["status"] == "error" => {
                    return Err(ClientError::Refused(message(&reply)));
                }
                other => return other,
            }
        }
    }

    /// Job `id` as the broker reports it.
    ///
    /// # Errors
    ///
    /// `Refused` for an unknown job.
    pub async fn fetch(&mut self, id: &str) -> Result<Value, ClientError> {
        let reply = self.read(json!({"command": "fetch", "job_id": id})).await?;
        Ok(success(reply)?["job"].take())
    }

    /// The newest job of `queue`.
    ///
    /// # Errors
    ///
    /// `Refused` (`no last job`) for an empty queue.
    pub async fn last(&mut self, queue: &str) -> Result<Value, ClientError> {
        let reply = self
            .read(json!({"command": "last", "queue": queue}))
            .await?;
        Ok(success(reply)?["job"].take())
    }

    /// The broker's queues, waiting and busy workers and jobs in progress.
    ///
    /// # Errors
    ///
    /// `Transport` if the broker did not answer.
    pub async fn status(&mut self) -> Result<Value, ClientError> {
        self.read(json!({"parameters": [], "command": "status"}))
            .await
    }

    /// Cancels job `id` and returns it: a pending job never runs, a running one's completion
    /// is refused and its worker is told when it next extends its timeout.
    ///
    /// # Errors
    ///
    /// `Refused` for an unknown or finished job.
    pub async fn cancel(&mut self, id: &str) -> Result<Value, ClientError> {
        let reply = self
            .request(&json!({"command": "cancel", "job_id": id}))
            .await?;
        Ok(success(reply)?["job"].take())
    }

    /// Stops the broker, with its quit token.
    ///
    /// # Errors
    ///
    /// `Refused` for a wrong token.
    pub async fn quit(&mut self, token: &str) -> Result<(), ClientError> {
        let reply = self
            .request(&json!({"command": "quit", "token": token}))
            .await?;
        if reply["status"] == "bye" {
            Ok(())
        } else {
            Err(ClientError::Refused(message(&reply)))
        }
    }
}

fn success(reply: Value) -> Result<Value, ClientError> {
    if reply["status"] == "success" {
        Ok(reply)
    } else {
        Err(ClientError::Refused(message(&reply)))
    }
}

fn message(reply: &Value) -> String {
    reply["message"]
        .as_str()
        .map_or_else(|| reply.to_string(), str::to_owned)
}
