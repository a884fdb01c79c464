//! Who may send spans: every export is admitted from its headers before its body is read.
//!
//! The receivers know only this trait; the server implements it with bearer tokens and the
//! `ingest` policy decision, so the collector stays free of token stores and policy engines.

use custos_net::Peer;

/// The principal an export comes from (Cedar syntax, `Custos::Service::"otel-collector"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source(pub String);

/// Why an export is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No credentials, or credentials nobody issued, expired or revoked: HTTP 401 with
    /// `WWW-Authenticate: Bearer`, gRPC `UNAUTHENTICATED`.
    Unauthenticated {
        /// What is wrong and how to fix it.
        message: String,
        /// Whether credentials were sent (RFC 6750 `error="invalid_token"`).
        presented: bool,
    },
    /// Too many failures from the client's address: HTTP 429 with `Retry-After`, gRPC
    /// `RESOURCE_EXHAUSTED`.
    Throttled {
        /// What happened.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A known caller the policies do not let send spans: HTTP 403, gRPC `PERMISSION_DENIED`.
    Forbidden {
        /// The action, the policies and what to do.
        message: String,
    },
}

impl Rejection {
    /// The HTTP status (`401`, `429`, `403`), also the metrics label.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unauthenticated { .. } => 401,
            Self::Throttled { .. } => 429,
            Self::Forbidden { .. } => 403,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated { message, .. }
            | Self::Throttled { message, .. }
            | Self::Forbidden { message } => message,
        }
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Self::Unauthenticated {
                presented: false, ..
            } => Some("Bearer realm=\"custos\"".to_string()),
            Self::Unauthenticated {
                presented: true, ..
            } => Some("Bearer realm=\"custos\", error=\"invalid_token\"".to_string()),
            _ => None,
        }
    }
}

/// Decides whether an export may be stored, from its `authorization` header (or gRPC metadata)
/// and the connection's peer (its address, and under mutual TLS its certificate). Called on the request path: it must not block for long.
pub trait Admission: Send + Sync {
    /// The source of an export, or why it is refused.
    fn admit(&self, authorization: Option<&str>, peer: Option<&Peer>) -> Result<Source, Rejection>;
}
