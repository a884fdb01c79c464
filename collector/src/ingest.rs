//! The path both receivers share: count, decode, redact, normalize, make durable, report.
//!
//! A body is counted first ([`crate::census`]) and refused at once when it holds too much; what
//! passes reserves its decoded size of the memory budget, then is decoded, redacted and
//! normalized on a blocking thread (at most `max_decoders` at once), so neither a large export
//! nor many of them keep the async workers from answering other clients.

use std::sync::Arc;

use axum::body::Bytes;
use custos_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::{CollectorMetrics, ReceiverOptions};

/// Why an export was not acknowledged.
#[derive(Debug)]
pub enum Refusal {
    /// The body is not a valid export (HTTP 400, gRPC `INVALID_ARGUMENT`); the message is
    /// redacted like the spans, since a decoder may quote the body.
    Invalid(String),
    /// The memory budget is used up; the client should retry later.
    Overloaded(String),
    /// The store cannot make data durable right now (WAL failure, shutdown).
    Unavailable(String),
    /// The export is too large to store (it expands past the limit once normalized); retrying
    /// will not help.
    TooLarge(String),
    /// A bug while converting valid data.
    Internal(String),
}

/// What was stored of an export.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Spans stored.
    pub accepted: u64,
    /// Spans rejected as invalid.
    pub rejected: u64,
    /// Explanation of the rejections.
    pub message: Option<String>,
}

impl Accepted {
    /// The OTLP response: `partial_success` only when spans were rejected.
    pub fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected as i64,
                error_message: self.message.clone().unwrap_or_default(),
            }),
        }
    }
}

/// The receivers' shared state: the store, options and metrics.
#[derive(Clone)]
pub struct Ingest {
    /// Where accepted spans go.
    pub store: Store,
    /// Limits.
    pub options: ReceiverOptions,
    /// Metrics.
    pub metrics: CollectorMetrics,
    /// Who may send spans.
    pub admission: std::sync::Arc<dyn crate::admit::Admission>,
    /// What comes out of every export before anything is written.
    pub redactor: std::sync::Arc<custos_redact::Redactor>,
    /// Decodes in flight at once (`ReceiverOptions::max_decoders` permits).
    pub decoders: Arc<tokio::sync::Semaphore>,
}

/// An export decoded and normalized, holding its share of the memory budget until stored.
struct Prepared {
    normalized: crate::Normalized,
    _admission: custos_store::Admission,
}

impl Ingest {
    /// The decode permits for `options` (one per core unless configured).
    pub fn decoders(options: &ReceiverOptions) -> Arc<tokio::sync::Semaphore> {
        let n = if options.max_decoders == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.max_decoders
        };
        Arc::new(tokio::sync::Semaphore::new(n))
    }

    /// Counts, decodes, redacts, normalizes and stores the export in `body` (decompressed) from
    /// `source` (stored in every span's `source` column); returns once the accepted spans are
    /// durable and visible. `held` is the body's share of the memory budget: it goes with the
    /// body into the decoding thread and is released when the body is, so a client that gives up
    /// mid-request frees neither its decoder nor its memory before the work ends.
    pub async fn export_body(
        &self,
        body: Bytes,
        held: custos_store::Admission,
        encoding: crate::http::Encoding,
        source: &crate::admit::Source,
    ) -> Result<Accepted, Refusal> {
        let permit = self
            .decoders
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Refusal::Unavailable("the receiver is shutting down".into()))?;
        let this = self.clone();
        let src = source.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = this.prepare(&body, encoding, &src);
            drop((body, held, permit));
            prepared
        })
        .await
        .map_err(|e| Refusal::Internal(format!("decoding the export failed: {e}")))??;
        self.store_normalized(prepared.normalized).await
    }

    /// The blocking part of [`Ingest::export_body`].
    fn prepare(
        &self,
        body: &[u8],
        encoding: crate::http::Encoding,
        source: &crate::admit::Source,
    ) -> Result<Prepared, Refusal> {
        use crate::census::{self, Refused};
        let limits = &self.options.census;
        let counted = match encoding {
            crate::http::Encoding::Protobuf => census::protobuf(body, limits),
            crate::http::Encoding::Json => census::json(body, limits),
        };
        let counted = counted.map_err(|r| match r {
            Refused::Invalid(m) => Refusal::Invalid(self.redactor.text(&m)),
            Refused::TooMuch(m) => Refusal::TooLarge(m),
        })?;
        let decoded = usize::try_from(counted.decoded_bytes()).unwrap_or(usize::MAX);
        let admission = self
            .store
            .admit(decoded)
            .map_err(|e| Refusal::Overloaded(format!("server overloaded: {e}")))?;
        let mut req = crate::http::decode_request(body, encoding)
            .map_err(|m| Refusal::Invalid(self.redactor.text(&m)))?;
        let normalized = self.normalize(&mut req, source)?;
        Ok(Prepared {
            normalized,
            _admission: admission,
        })
    }

    /// Redacts, normalizes and stores an export already decoded (the server's own executor);
    /// returns once the accepted spans are durable and visible. The request is redacted in
    /// place, so no unredacted value outlives this call.
    pub async fn export(
        &self,
        req: &mut ExportTraceServiceRequest,
        source: &crate::admit::Source,
    ) -> Result<Accepted, Refusal> {
        let normalized = self.normalize(req, source)?;
        self.store_normalized(normalized).await
    }

    fn normalize(
        &self,
        req: &mut ExportTraceServiceRequest,
        source: &crate::admit::Source,
    ) -> Result<crate::Normalized, Refusal> {
        self.redactor.request(req);
        // Resource attributes are copied onto every span of the resource: refuse exports that
        // would expand far beyond their size on the wire before building anything.
        let limit = self.options.max_body_bytes.saturating_mul(4);
        let expanded = crate::normalize::expanded_size(req);
        if expanded > limit {
            return Err(Refusal::TooLarge(format!(
                "the export expands to about {expanded} bytes once resource attributes are copied \
                 onto each span, over the limit of {limit} bytes; send fewer spans per request"
            )));
        }
        let window = self
            .options
            .span_window
            .map(|(past, future)| crate::Window::around_now(past, future));
        crate::normalize_within(req, Some(&source.0), window)
            .map_err(|e| Refusal::Internal(e.to_string()))
    }

    /// Stores what normalization accepted (if anything) and says what was accepted and rejected.
    async fn store_normalized(&self, n: crate::Normalized) -> Result<Accepted, Refusal> {
        let mut out = Accepted {
            accepted: 0,
            rejected: n.rejected,
            message: n.message,
        };
        if let Some(batch) = n.batch {
            out.accepted = batch.num_rows() as u64;
            self.store.append(batch).await.map_err(|e| match e {
                custos_store::Error::Overloaded { .. } => Refusal::Overloaded(e.to_string()),
                custos_store::Error::TooLarge(m) => Refusal::TooLarge(m),
                other => Refusal::Unavailable(other.to_string()),
            })?;
        }
        Ok(out)
    }
}
