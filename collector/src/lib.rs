//! OTLP trace receivers: OTLP/gRPC (tonic) and OTLP/HTTP (axum), exactly as the OTLP specification
//! says.
//!
//! This crate owns the protocol edge: decoding (protobuf, OTLP/JSON, gzip), size limits measured
//! after decompression, validation and normalization ([`normalize`]) into the `spans` schema, and
//! the mapping of outcomes to OTLP responses and status codes. Accepted spans are handed to the
//! store, and the export is acknowledged only once the store says they are durable.
//!
//! | outcome                           | OTLP/HTTP                  | OTLP/gRPC                          |
//! |-----------------------------------|----------------------------|------------------------------------|
//! | all spans stored                  | 200, no `partial_success`  | OK                                 |
//! | some spans invalid, rest stored   | 200, `partial_success`     | OK, `partial_success`              |
//! | undecodable body                  | 400 + `google.rpc.Status`  | INVALID_ARGUMENT                   |
//! | body over the limit (decompressed)| 413                        | RESOURCE_EXHAUSTED, no RetryInfo   |
//! | too many spans or attributes      | 413                        | RESOURCE_EXHAUSTED, no RetryInfo   |
//! | unknown content type or encoding  | 415                        | (gRPC has one content type)        |
//! | method other than POST            | 405                        | n/a                                |
//! | memory budget used up, WAL down   | 503 + `Retry-After`        | UNAVAILABLE + RetryInfo            |
//! | no or bad bearer token            | 401 + `WWW-Authenticate`   | UNAUTHENTICATED                    |
//! | repeated bad tokens from a client | 429 + `Retry-After`        | RESOURCE_EXHAUSTED                 |
//! | caller not allowed to `ingest`    | 403                        | PERMISSION_DENIED                  |
//!
//! Every export is admitted ([`admit`]) from its headers before its body is read, and counted
//! ([`census`]) before it is decoded.

pub mod admit;
pub mod census;
mod census_json;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod normalize;

use std::time::Duration;

pub use metrics::CollectorMetrics;
pub use normalize::{Normalized, Window, normalize, normalize_within};

/// Errors of the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bug or an Arrow failure while building a batch.
    #[error("internal error: {0}")]
    Internal(String),
    /// A listener could not be bound or served.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(String),
}

/// Result type of the collector.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runtime options shared by both receivers.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Largest request body accepted, measured after decompression.
    pub max_body_bytes: usize,
    /// Delay suggested to clients when the server is overloaded.
    pub retry_after: Duration,
    /// Spans, attributes and decoded bytes one export may hold ([`census`]).
    pub census: census::Limits,
    /// Exports decoded at once; 0 means one per core.
    pub max_decoders: usize,
    /// Spans may start at most this long before now and this long after it (`None`: any time
    /// up to 2262); others are rejected as a partial success naming them.
    pub span_window: Option<(Duration, Duration)>,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            retry_after: Duration::from_secs(1),
            census: census::Limits::default(),
            max_decoders: 0,
            span_window: Some((Duration::from_secs(730 * 86_400), Duration::from_secs(3600))),
        }
    }
}
