//! The transport every listener shares: TCP, optionally TLS (rustls), and who is on the other
//! end of a connection.
//!
//! - [`tls`]: the `[tls]` files made into rustls configurations, with one crypto provider
//!   (ring) chosen explicitly: the dependency tree holds both ring and aws-lc-rs, and rustls
//!   refuses to guess. With a client CA, a client must present a certificate it signed (mutual
//!   TLS); the certificate's subject common name is what the server maps to a principal.
//! - [`listen`]: a [`Listener`] that accepts connections, runs TLS handshakes concurrently (a
//!   slow or silent client delays only itself, for at most [`listen::HANDSHAKE_TIMEOUT`]) and
//!   hands each connection on with its [`Peer`]: the address and, under mutual TLS, the client
//!   certificate's common name. It plugs into axum (`axum::serve`, `ConnectInfo<Peer>`) and
//!   tonic (`serve_with_incoming`, the `Peer` request extension).
//!
//! - [`serve`]: HTTP/1.1 and HTTP/2 on a [`Listener`] with a connection cap, header and idle
//!   timeouts, and graceful shutdown: what every listener is served with.
//! - [`panics`]: the guard every listener wears, so a panic in a handler is a logged and counted
//!   error answer (500, or gRPC `INTERNAL`) and never a dropped connection.
//!
//! Which principal a certificate stands for is the server's decision (its `[tls] clients` table),
//! not this crate's.

pub mod listen;
pub mod panics;
#[cfg(feature = "test-pki")]
pub mod pki;
pub mod serve;
pub mod tls;

pub use listen::{Conn, Listener, Peer};
pub use tls::{ClientTls, ServerTls};

use std::path::PathBuf;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} `{path}`: {cause}")]
    Read {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A certificate or key file holds nothing usable.
    #[error("{what} `{path}`: {reason}")]
    Pem {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, say).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
