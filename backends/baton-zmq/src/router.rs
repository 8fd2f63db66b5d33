//! The ROUTER side: validated incoming messages, bounded sends, and a publisher.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use zeromq::{
    PubSocket, RouterSendHalf, RouterSocket, Socket, SocketEvent, SocketRecv, SocketSend,
    ZmqMessage,
};

use crate::{Error, Result};

/// A peer's ZeroMQ identity, as the ROUTER reports it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Bytes);

impl PeerId {
    /// An identity from its bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The identity's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The identity in lowercase hex, as status reports name peers.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.to_hex())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Bounds on what peers may send and on how long a send may wait.
#[derive(Clone, Copy, Debug)]
pub struct RouterLimits {
    /// The largest message body accepted, in bytes; a larger one arrives as
    /// [`Malformed::TooLarge`].
    pub max_message_bytes: usize,
    /// How long a send may wait for room in a peer's outbound queue before the message is
    /// dropped and the send fails with [`SendError::Stalled`].
    pub send_timeout: Duration,
    /// How many received messages wait for the reader at most; past it the socket stops
    /// reading, and peers' own queues hold what they send.
    pub inbound_capacity: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            send_timeout: Duration::from_millis(200),
            inbound_capacity: 4096,
        }
    }
}

/// Why a message was refused before it was read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A message of the wrong shape: neither `["", body]` (REQ) nor `[body]` (DEALER).
    #[error(
        "expected one body frame (after an empty delimiter for REQ peers), got {frames} frames"
    )]
    Frames {
        /// Frames after the identity.
        frames: usize,
    },
    /// An empty body frame.
    #[error("empty message")]
    Empty,
    /// A body over the size limit.
    #[error("message of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// One event from the ROUTER.
#[derive(Clone, Debug)]
pub enum Incoming {
    /// A well-formed message.
    Message {
        /// Who sent it.
        peer: PeerId,
        /// Whether it came with an empty delimiter frame (a REQ peer): a reply must too.
        delimited: bool,
        /// The body.
        body: Bytes,
    },
    /// A message refused before it was read.
    Malformed {
        /// Who sent it.
        peer: PeerId,
        /// Whether its first frame was an empty delimiter: a REQ peer, waiting for one reply.
        delimited: bool,
        /// What was wrong.
        error: Malformed,
    },
    /// A peer's connection closed.
    Disconnected(PeerId),
}

/// Why a send failed. The broker goes on either way.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The peer's outbound queue stayed full for the send timeout: it is not reading.
    #[error("peer {0} is not reading its messages")]
    Stalled(PeerId),
    /// The peer is gone, or the socket failed.
    #[error("sending to {peer}: {error}")]
    Failed {
        /// The peer.
        peer: PeerId,
        /// The socket's error.
        error: zeromq::ZmqError,
    },
}

/// The broker's ROUTER socket: one reader task checks every message and hands it over through
/// a bounded channel; sends go straight to the socket.
pub struct Router {
    sender: RouterSendHalf,
    incoming: mpsc::Receiver<Incoming>,
    limits: RouterLimits,
    endpoint: String,
    reader: tokio::task::JoinHandle<()>,
}

impl Router {
    /// Binds a ROUTER to `endpoint` (`tcp://127.0.0.1:5555`; port 0 picks a free port, see
    /// [`endpoint`](Self::endpoint)).
    ///
    /// # Errors
    ///
    /// `Zmq` if the endpoint is invalid or cannot be bound.
    pub async fn bind(endpoint: &str, limits: RouterLimits) -> Result<Self> {
        let mut socket = RouterSocket::new();
        let mut events = socket.monitor();
        let bound = socket.bind(endpoint).await?;
        let (sender, mut receiver) = socket.split();
        let (tx, incoming) = mpsc::channel(limits.inbound_capacity.max(1));
        let max = limits.max_message_bytes;
        let reader = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    message = receiver.recv() => match message {
                        Ok(message) => check(message, max),
                        Err(error) => {
                            tracing::debug!(%error, "router receive failed");
                            continue;
                        }
                    },
                    event = events.next() => match event {
                        Some(SocketEvent::Disconnected(peer)) => {
                            Some(Incoming::Disconnected(PeerId::new(Bytes::from(peer))))
                        }
                        Some(_) => None,
                        None => {
                            // The monitor closed: keep reading messages alone.
                            events = futures::channel::mpsc::channel(1).1;
                            None
                        }
                    },
                };
                if let Some(next) = next
                    && tx.send(next).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Self {
            sender,
            incoming,
            limits,
            endpoint: bound.to_string(),
            reader,
        })
    }

    /// The endpoint bound, with the port filled in.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message or disconnection; `None` once the socket has closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Sends `body` to `peer`, after an empty delimiter frame if `delimited` (a REQ peer).
    ///
    /// # Errors
    ///
    /// `Stalled` if the peer's queue stayed full for the send timeout (the message is
    /// dropped); `Failed` if the peer is gone.
    pub async fn send(
        &mut self,
        peer: &PeerId,
        delimited: bool,
        body: Bytes,
    ) -> Result<(), SendError> {
        let mut message = ZmqMessage::from(body);
        if delimited {
            message.push_front(Bytes::new());
        }
        message.push_front(peer.0.clone());
        match tokio::time::timeout(self.limits.send_timeout, self.sender.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(SendError::Failed {
                peer: peer.clone(),
                error,
            }),
            Err(_) => Err(SendError::Stalled(peer.clone())),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Checks a message's frames: `[identity, "", body]` or `[identity, body]`.
fn check(message: ZmqMessage, max: usize) -> Option<Incoming> {
    let mut frames = message.into_vecdeque();
    let peer = PeerId::new(frames.pop_front()?);
    let delimited = frames.front().is_some_and(|frame| frame.is_empty());
    if delimited {
        frames.pop_front();
    }
    let malformed = |error| {
        Some(Incoming::Malformed {
            peer: peer.clone(),
            delimited,
            error,
        })
    };
    if frames.len() != 1 {
        return malformed(Malformed::Frames {
            frames: frames.len() + usize::from(delimited),
        });
    }
    let body = frames.pop_front()?;
    if body.is_empty() {
        return malformed(Malformed::Empty);
    }
    if body.len() > max {
        return malformed(Malformed::TooLarge {
            size: body.len(),
            max,
        });
    }
    Some(Incoming::Message {
        peer,
        delimited,
        body,
    })
}

/// A PUB socket: each notice is one frame, so subscribers can filter on its start.
pub struct Publisher {
    socket: PubSocket,
    endpoint: String,
}

impl Publisher {
    /// Binds a PUB socket to `endpoint`.
    ///
    /// # Errors
    ///
    /// `Zmq` if the endpoint is invalid or cannot be bound.
    pub async fn bind(endpoint: &str) -> Result<Self> {
        let mut socket = PubSocket::new();
        let bound = socket.bind(endpoint).await?;
        Ok(Self {
            socket,
            endpoint: bound.to_string(),
        })
    }

    /// The endpoint bound, with the port filled in.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Publishes `notice`; subscribers that cannot keep up miss notices rather than slow the
    /// publisher.
    ///
    /// # Errors
    ///
    /// `Zmq` if the socket failed.
    pub async fn publish(&mut self, notice: String) -> Result<()> {
        self.socket
            .send(ZmqMessage::from(notice))
            .await
            .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(frames: &[&[u8]]) -> ZmqMessage {
        let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
        ZmqMessage::try_from(frames).expect("at least one frame")
    }

    #[test]
    fn req_and_dealer_shapes_are_accepted() {
        let Some(Incoming::Message {
            delimited, body, ..
        }) = check(message(&[b"id", b"", b"{}"]), 10)
        else {
            panic!("a REQ message was refused");
        };
        assert!(delimited);
        assert_eq!(&body[..], b"{}");
        let Some(Incoming::Message { delimited, .. }) = check(message(&[b"id", b"{}"]), 10) else {
            panic!("a DEALER message was refused");
        };
        assert!(!delimited);
    }

    #[test]
    fn other_shapes_are_malformed_with_the_reason() {
        let malformed = |frames: &[&[u8]]| match check(message(frames), 10) {
            Some(Incoming::Malformed {
                error, delimited, ..
            }) => (error, delimited),
            other => panic!("{frames:?} was not refused: {other:?}"),
        };
        assert_eq!(
            malformed(&[b"id"]),
            (Malformed::Frames { frames: 0 }, false)
        );
        assert_eq!(
            malformed(&[b"id", b""]),
            (Malformed::Frames { frames: 1 }, true)
        );
        assert_eq!(
            malformed(&[b"id", b"", b"a", b"b"]),
            (Malformed::Frames { frames: 3 }, true)
        );
        assert_eq!(malformed(&[b"id", b"", b""]), (Malformed::Empty, true));
        assert_eq!(
            malformed(&[b"id", b"01234567890"]),
            (Malformed::TooLarge { size: 11, max: 10 }, false)
        );
    }
}
