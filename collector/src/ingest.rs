//! The path both receivers share: redact, normalize, make durable, report.

use custos_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::{CollectorMetrics, ReceiverOptions, normalize};

/// Why an export was not acknowledged.
#[derive(Debug)]
pub enum Refusal {
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
}

impl Ingest {
    /// Redacts, normalizes and stores an export from `source` (stored in every span's `source`
    /// column); returns once the accepted spans are durable and visible. The request is redacted
    /// in place, so no unredacted value outlives this call.
    pub async fn export(
        &self,
        req: &mut ExportTraceServiceRequest,
        source: &crate::admit::Source,
    ) -> Result<Accepted, Refusal> {
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
        let n = normalize(req, Some(&source.0)).map_err(|e| Refusal::Internal(e.to_string()))?;
        let mut out = Accepted {
            accepted: 0,
            rejected: n.rejected,
            message: n.message,
        };
        if let Some(batch) = n.batch {
            let rows = batch.num_rows() as u64;
            self.store.append(batch).await.map_err(|e| match e {
                custos_store::Error::Overloaded { .. } => Refusal::Overloaded(e.to_string()),
                custos_store::Error::TooLarge(m) => Refusal::TooLarge(m),
                other => Refusal::Unavailable(other.to_string()),
            })?;
            out.accepted = rows;
        }
        Ok(out)
    }
}
