//! The peer side: a REQ requester that survives lost replies and broker restarts, and a DEALER
//! for one-way requests.

use std::time::Duration;

use bytes::Bytes;
use zeromq::{DealerSocket, ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::{Error, Result};

/// A REQ peer: one request, then its one reply.
///
/// A REQ socket that lost a reply can send nothing more, so after a timeout or an error the
/// socket is closed and the next request goes out on a new one (a new identity). The `zeromq`
/// crate reconnects a socket whose broker went away; a new socket also covers a broker that
/// came back at the same endpoint.
pub struct Requester {
    endpoint: String,
    socket: Option<ReqSocket>,
}

impl Requester {
    /// A requester for `endpoint`; it connects on its first request.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            socket: None,
        }
    }

    /// The broker's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `body` and waits up to `timeout` for the reply's body. With no timeout it waits
    /// as long as it takes (a worker waiting for a job).
    ///
    /// # Errors
    ///
    /// `Zmq` if connecting or sending failed, `Timeout` if no reply came in time, `Malformed`
    /// for a reply that is not one frame; after any error the socket is replaced.
    pub async fn request(&mut self, body: Bytes, timeout: Option<Duration>) -> Result<Bytes> {
        self.send(body).await?;
        self.receive(timeout).await
    }

    /// Sends `body` without waiting for the reply; [`receive`](Self::receive) reads it.
    ///
    /// # Errors
    ///
    /// `Zmq` if connecting or sending failed; the socket is then replaced.
    pub async fn send(&mut self, body: Bytes) -> Result<()> {
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None => {
                let mut socket = ReqSocket::new();
                socket.connect(&self.endpoint).await?;
                self.socket.insert(socket)
            }
        };
        if let Err(error) = socket.send(ZmqMessage::from(body)).await {
            self.reset();
            return Err(error.into());
        }
        Ok(())
    }

    /// Waits up to `timeout` (or for ever) for the reply to the request sent last.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn receive(&mut self, timeout: Option<Duration>) -> Result<Bytes> {
        let Some(socket) = &mut self.socket else {
            return Err(Error::Malformed("no request is waiting for a reply".into()));
        };
        let reply = match timeout {
            Some(limit) => match tokio::time::timeout(limit, socket.recv()).await {
                Ok(reply) => reply,
                Err(_) => {
                    self.reset();
                    return Err(Error::Timeout(limit));
                }
            },
            None => socket.recv().await,
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                self.reset();
                return Err(error.into());
            }
        };
        let mut frames = reply.into_vec();
        if frames.len() != 1 {
            self.reset();
            return Err(Error::Malformed(format!(
                "a reply of {} frames, expected 1",
                frames.len()
            )));
        }
        Ok(frames.remove(0))
    }

    /// Closes the socket; the next request opens a new one.
    pub fn reset(&mut self) {
        self.socket = None;
    }
}

/// A DEALER peer for requests whose replies the sender may ignore (a worker's `touch`).
pub struct Dealer {
    socket: DealerSocket,
}

impl Dealer {
    /// Connects a DEALER to `endpoint`.
    ///
    /// # Errors
    ///
    /// `Zmq` if the endpoint is invalid or cannot be reached.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let mut socket = DealerSocket::new();
        socket.connect(endpoint).await?;
        Ok(Self { socket })
    }

    /// Sends `body` as one frame (no delimiter).
    ///
    /// # Errors
    ///
    /// `Zmq` if the send failed.
    pub async fn send(&mut self, body: Bytes) -> Result<()> {
        self.socket
            .send(ZmqMessage::from(body))
            .await
            .map_err(Error::from)
    }

    /// Waits up to `timeout` for the next message's last frame.
    ///
    /// # Errors
    ///
    /// `Timeout` if none came, `Zmq` if the socket failed.
    pub async fn receive(&mut self, timeout: Duration) -> Result<Bytes> {
        let message = tokio::time::timeout(timeout, self.socket.recv())
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        message
            .into_vec()
            .pop()
            .ok_or_else(|| Error::Malformed("an empty message".into()))
    }
}
