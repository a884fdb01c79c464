//! The custos HTTP API as one typed contract: the request and answer types of `/api/*`
//! ([`types`]) and the one client that speaks it ([`Client`]).
//!
//! The server's handlers read these requests and write these answers; `custos top` and every
//! `--server` mode of the CLI use [`Client`]. The crate depends on no other custos crate, so a
//! client builds without the engine, and the wire format is changed here or not at all. Answers
//! whose shape is owned by the analytics engine (metric, threshold and SLO reports) are carried
//! as the caller's own `Deserialize` type (`Client::get`), so their definition stays in one place.

pub mod client;
pub mod types;

pub use client::{Client, Connection};
pub use types::*;

/// Errors of an API call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL cannot be used.
    #[error("invalid server URL `{url}`{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Url {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The TLS settings (CA, client certificate) cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The server could not be reached (connection refused, reset, timed out).
    #[error("cannot reach `{url}`: {cause}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// The transport error.
        cause: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("`{url}` answered {status}: {message}")]
    Refused {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The answer's `error` message (or its body when it has none).
        message: String,
        /// The whole answer, when it is JSON (a denied decision carries its policies).
        body: serde_json::Value,
    },
    /// The answer is not what this endpoint answers.
    #[error("unexpected answer from `{url}`: {cause}")]
    Decode {
        /// The request's URL.
        url: String,
        /// What did not match.
        cause: String,
    },
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 4xx refusal: the request was wrong, not the server.
    pub fn is_client_error(&self) -> bool {
        self.status().is_some_and(|s| s.is_client_error())
    }

    /// The server's own message for a refusal, otherwise this error's text.
    pub fn message(&self) -> String {
        match self {
            Self::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Result type of API calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
