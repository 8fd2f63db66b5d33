//! Baton's ZeroMQ transport, on the pure-Rust `zeromq` crate.
//!
//! - [`Router`]: the broker's ROUTER socket. Every message a peer sends is checked before anyone
//!   reads it: a REQ peer's message is `[identity, "", body]`, a DEALER peer's `[identity, body]`;
//!   any other shape, an empty body or a body over the size limit arrives as
//!   [`Incoming::Malformed`] with the peer's identity, so the broker can answer it and go on.
//!   Sends never block the caller for long: a peer whose outbound queue stays full is given up on
//!   ([`SendError::Stalled`]). Disconnections arrive as [`Incoming::Disconnected`].
//! - [`Publisher`]: a PUB socket for state-change notices.
//! - [`Requester`]: a REQ peer with a reply timeout that replaces its socket after a timeout or an
//!   error (the `zeromq` crate's REQ cannot recover from a lost reply by itself), and
//!   [`Dealer`], a DEALER peer for one-way requests whose replies may be ignored.

mod peer;
mod router;

pub use peer::{Dealer, Requester};
pub use router::{Incoming, Malformed, PeerId, Publisher, Router, RouterLimits, SendError};

/// What can go wrong on a socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not bind or connect, or a send or receive failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zeromq::ZmqError),
    /// No reply came within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The reply had a shape no broker sends.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// The crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
