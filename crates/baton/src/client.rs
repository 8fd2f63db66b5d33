//! A client of the HTTP API, used by the CLI commands that talk to a running `baton serve`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use baton_core::{Job, JobId, QueueCounts};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ApiToken;
use crate::wire::{
    EnqueueBatchRequest, EnqueueBatchResponse, EnqueueRequest, EnqueueResponse, ErrorBody,
    ErrorKind, JobList, ListQuery, QueueState, WorkerList,
};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on one Baton server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// Sent as `Authorization: Bearer …` with every call to the API.
    token: Option<String>,
}

/// Why a request to the server failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not a usable `http://` URL.
    BadServerUrl {
        /// The URL given.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No server answered: nothing listens there, or the network is down.
    Unreachable {
        /// The server's base URL.
        server: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an API error.
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The kind of error, for programs to act on.
        kind: ErrorKind,
        /// The server's message.
        message: String,
    },
    /// The server answered something that is not Baton's API.
    Protocol {
        /// The server's base URL.
        server: String,
        /// What was wrong with the answer.
        message: String,
    },
}

impl ClientError {
    /// The API error kind, if the server answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered with an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadServerUrl { server, reason } => {
                write!(f, "server url {server:?} is not usable: {reason}")
            }
            Self::Unreachable { server, source } if source.is_timeout() => write!(
                f,
                "baton at {server} did not answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
            Self::Unreachable { server, source } if source.is_connect() => write!(
                f,
                "cannot reach baton at {server}: is `baton serve` running?"
            ),
            Self::Unreachable { server, source } => {
                write!(f, "request to baton at {server} failed: {source}")
            }
            Self::Api { message, .. } => f.write_str(message),
            Self::Protocol { server, message } => {
                write!(f, "unexpected answer from {server}: {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// A client of the server at `server`, such as `http://127.0.0.1:7600`.
    ///
    /// System proxy settings apply, except to loopback addresses.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadServerUrl`] for a URL that is not `http://` (this build has no TLS).
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadServerUrl {
            server: server.to_owned(),
            reason,
        };
        let base = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        match base.scheme() {
            "http" if base.has_host() => {}
            "https" => {
                return Err(bad(
                    "https is not built into this binary yet; use http://".to_owned()
                ));
            }
            _ => return Err(bad("expected an http:// url".to_owned())),
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: None,
        })
    }

    /// This client, sending `token` as the API token (`api_token` in the configuration).
    #[must_use]
    pub fn with_token(mut self, token: Option<&ApiToken>) -> Self {
        self.token = token.map(|token| token.0.clone());
        self
    }

    /// The server's base URL.
    pub fn server(&self) -> &Url {
        &self.base
    }

    /// Enqueues a job; returns its id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::InvalidInput`] for a bad queue name, payload or
    /// policy; any other [`ClientError`] as the request fails.
    pub async fn enqueue(&self, request: &EnqueueRequest) -> Result<JobId, ClientError> {
        let response: EnqueueResponse = self
            .call(Method::POST, &["api", "v1", "jobs"], Some(request))
            .await?;
        Ok(response.id)
    }

    /// Enqueues `jobs` (at most [`MAX_BATCH_REQUEST`](crate::wire::MAX_BATCH_REQUEST)) all
    /// together; their ids in order.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::InvalidInput`] naming the first bad job; then
    /// none was enqueued.
    pub async fn enqueue_batch(&self, jobs: &[EnqueueRequest]) -> Result<Vec<JobId>, ClientError> {
        let request = EnqueueBatchRequest {
            jobs: jobs.to_vec(),
        };
        let response: EnqueueBatchResponse = self
            .call(
                Method::POST,
                &["api", "v1", "jobs", "batch"],
                Some(&request),
            )
            .await?;
        Ok(response.ids)
    }

    /// A page of jobs, newest first, as `query` filters them.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::InvalidInput`] for a bad queue name, state or
    /// limit.
    pub async fn list(&self, query: &ListQuery) -> Result<JobList, ClientError> {
        let mut url = self.url(&["api", "v1", "jobs"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(queue) = &query.queue {
                pairs.append_pair("queue", queue);
            }
            if let Some(state) = &query.state {
                pairs.append_pair("state", state);
            }
            if let Some(before) = query.before {
                pairs.append_pair("before", &before.to_string());
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        self.call_url(Method::GET, url, None::<&()>).await
    }

    /// The job with `id`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::NotFound`] for an unknown job.
    pub async fn job(&self, id: JobId) -> Result<Job, ClientError> {
        let id = id.to_string();
        self.call(Method::GET, &["api", "v1", "jobs", &id], None::<&()>)
            .await
    }

    /// Cancels the job with `id`; returns it as it now is.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::NotFound`] for an unknown job, or
    /// [`ErrorKind::Conflict`] for one that already succeeded or failed.
    pub async fn cancel(&self, id: JobId) -> Result<Job, ClientError> {
        let id = id.to_string();
        self.call(
            Method::POST,
            &["api", "v1", "jobs", &id, "cancel"],
            None::<&()>,
        )
        .await
    }

    /// Runs a failed or canceled job again; the job as it now is.
    ///
    /// # Errors
    ///
    /// As [`Self::cancel`]; [`ErrorKind::Conflict`] for a job that succeeded.
    pub async fn retry(&self, id: JobId) -> Result<Job, ClientError> {
        let id = id.to_string();
        self.call(
            Method::POST,
            &["api", "v1", "jobs", &id, "retry"],
            None::<&()>,
        )
        .await
    }

    /// How many jobs of `queue` are in each state.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::InvalidInput`] for a bad queue name.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts, ClientError> {
        self.call(
            Method::GET,
            &["api", "v1", "queues", queue, "counts"],
            None::<&()>,
        )
        .await
    }

    /// The workers connected to the server's broker.
    ///
    /// # Errors
    ///
    /// The server cannot be reached or answers with an error.
    pub async fn workers(&self) -> Result<WorkerList, ClientError> {
        self.call(Method::GET, &["api", "v1", "workers"], None::<&()>)
            .await
    }

    /// Pauses `queue`: none of its jobs is handed to workers until it is resumed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with [`ErrorKind::InvalidInput`] for a bad queue name.
    pub async fn pause(&self, queue: &str) -> Result<QueueState, ClientError> {
        self.queue_action(queue, "pause").await
    }

    /// Resumes `queue` and wakes its workers.
    ///
    /// # Errors
    ///
    /// As [`Self::pause`].
    pub async fn resume(&self, queue: &str) -> Result<QueueState, ClientError> {
        self.queue_action(queue, "resume").await
    }

    /// `POST /api/v1/queues/{queue}/{action}`.
    async fn queue_action(&self, queue: &str, action: &str) -> Result<QueueState, ClientError> {
        self.call(
            Method::POST,
            &["api", "v1", "queues", queue, action],
            None::<&()>,
        )
        .await
    }

    /// Whether the server answers `/healthz`.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`] as the request fails or the answer is not `200 ok`.
    pub async fn health(&self) -> Result<(), ClientError> {
        let url = self.url(&["healthz"]);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(self.protocol(format!("/healthz answered {}", response.status())))
        }
    }

    /// Sends one request to the path made of `segments` (each percent-encoded) and reads a
    /// JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        self.call_url(method, self.url(segments), body).await
    }

    /// [`Self::call`] to a whole URL, such as one with a query.
    async fn call_url<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                self.protocol(format!("status {status} with an unreadable body: {e}"))
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status,
                kind: body.kind,
                message: body.error,
            }),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let snippet: String = text.chars().take(200).collect();
                Err(self.protocol(format!("status {status}: {snippet}")))
            }
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.display_base(),
            source,
        }
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            server: self.display_base(),
            message,
        }
    }

    fn display_base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}
