//! Telemetry: every run and step as an OTLP span, through the `opentelemetry` SDK and the
//! `opentelemetry-otlp` exporter.
//!
//! Spans are built from the journal, after the fact: a step's span is emitted once its result is
//! journaled, with the start and end times the journal holds, and a run's root span when the run
//! finishes. Ids are derived from the run (trace id) and from run, step and attempt (span ids), so
//! a run resumed by another process continues the same trace. A model step's decision span waits
//! in the journal until its human review (if any) completes it, so the review's verdict
//! (`automation.human.*`) is on the decision span itself (docs/conventions.md).
//!
//! Attributes follow docs/conventions.md: `automation.workflow`, `automation.run_id`,
//! `automation.step`, `automation.step.kind`, `gen_ai.request.model`, `gen_ai.response.model`,
//! `gen_ai.provider.name`, `automation.model.version`, `automation.prompt.version`,
//! `gen_ai.usage.*`, `automation.cost_usd`, `automation.decision.confidence`,
//! `automation.decision.outcome`, `automation.human.*`, `automation.outcome` on the root.
//!
//! Spans are sent in batches; a crash loses the batch not yet sent (at most a few seconds of
//! spans), never the run: the resumed run still ends with its root span.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use serde_json::Value;

use crate::journal::SpanRecord;
use crate::{Error, Result};

/// The trace id and span id the next span built on this thread gets.
type NextIds = (Option<[u8; 16]>, Option<[u8; 8]>);

thread_local! {
    static NEXT_IDS: Cell<NextIds> = const { Cell::new((None, None)) };
}

/// Ids chosen by the executor (derived from run and step); random when none is set.
#[derive(Debug, Default)]
struct DerivedIds(RandomIdGenerator);

impl IdGenerator for DerivedIds {
    fn new_trace_id(&self) -> TraceId {
        let (t, s) = NEXT_IDS.with(Cell::get);
        match t {
            Some(t) => {
                NEXT_IDS.with(|c| c.set((None, s)));
                TraceId::from_bytes(t)
            }
            None => self.0.new_trace_id(),
        }
    }
    fn new_span_id(&self) -> SpanId {
        let (t, s) = NEXT_IDS.with(Cell::get);
        match s {
            Some(s) => {
                NEXT_IDS.with(|c| c.set((t, None)));
                SpanId::from_bytes(s)
            }
            None => self.0.new_span_id(),
        }
    }
}

/// Where spans go.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    tracer: Option<SdkTracer>,
}

/// Root span id of a run's trace.
pub fn root_span_id(run_id: &str) -> String {
    span_id(run_id, "", 0)
}

/// A span id derived from run, step and attempt (16 hex digits, never zero).
pub fn span_id(run_id: &str, step: &str, attempt: u32) -> String {
    let h = crate::model::sha256_u64(&[run_id, step, &attempt.to_string()]).max(1);
    format!("{h:016x}")
}

/// A trace id derived from the run (32 hex digits).
pub fn trace_id(run_id: &str) -> String {
    let a = crate::model::sha256_u64(&[run_id, "trace-a"]).max(1);
    let b = crate::model::sha256_u64(&[run_id, "trace-b"]);
    format!("{a:016x}{b:016x}")
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn kv(key: &str, v: &Value) -> Option<KeyValue> {
    let key = key.to_string();
    Some(match v {
        Value::String(s) => KeyValue::new(key, s.clone()),
        Value::Bool(b) => KeyValue::new(key, *b),
        Value::Number(n) if n.is_i64() => KeyValue::new(key, n.as_i64()?),
        Value::Number(n) => KeyValue::new(key, n.as_f64()?),
        Value::Null => return None,
        other => KeyValue::new(key, other.to_string()),
    })
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

impl Telemetry {
    /// No telemetry.
    pub fn off() -> Self {
        Self {
            provider: None,
            tracer: None,
        }
    }

    /// Spans to an OTLP endpoint: `http://HOST:PORT` sends OTLP/HTTP protobuf to
    /// `/v1/traces` (a URL with a path is used as is); `grpc://HOST:PORT` sends OTLP/gRPC.
    /// With `token`, every export carries `authorization: Bearer TOKEN`; without one, the
    /// standard `OTEL_EXPORTER_OTLP_HEADERS` (and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`) apply, as
    /// they do in any OpenTelemetry SDK.
    pub fn otlp(endpoint: &str, service_name: &str, token: Option<&str>) -> Result<Self> {
        let bad = |e: String| Error::Telemetry(format!("OTLP endpoint `{endpoint}`: {e}"));
        use opentelemetry_otlp::{
            WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
        };
        let bearer = token.map(|t| format!("Bearer {t}"));
        let exporter = if let Some(rest) = endpoint.strip_prefix("grpc://") {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{rest}"));
            if let Some(b) = &bearer {
                let mut metadata = tonic::metadata::MetadataMap::new();
                let v = b
                    .parse()
                    .map_err(|_| bad("the token is not a valid header value".into()))?;
                metadata.insert("authorization", v);
                builder = builder.with_metadata(metadata);
            }
            builder.build().map_err(|e| bad(e.to_string()))?
        } else {
            let url = url::Url::parse(endpoint).map_err(|e| {
                bad(format!(
                    "{e}; write it like `http://127.0.0.1:4318` or `grpc://127.0.0.1:4317`"
                ))
            })?;
            let full = if url.path() == "/" || url.path().is_empty() {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            } else {
                endpoint.to_string()
            };
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(full);
            if let Some(b) = bearer {
                builder = builder.with_headers([("authorization".to_string(), b)].into());
            }
            builder.build().map_err(|e| bad(e.to_string()))?
        };
        Ok(Self::exporting(exporter, service_name))
    }

    /// Spans as OTLP/HTTP protobuf through `client` (the server's own executor hands in a
    /// client that calls its receiver in process), with `authorization: Bearer TOKEN`.
    pub fn otlp_via(
        client: std::sync::Arc<dyn opentelemetry_http::HttpClient>,
        service_name: &str,
        token: &str,
    ) -> Result<Self> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint("http://in-process/v1/traces")
            .with_shared_http_client(client)
            .with_headers([("authorization".to_string(), format!("Bearer {token}"))].into())
            .build()
            .map_err(|e| Error::Telemetry(format!("in-process OTLP exporter: {e}")))?;
        Ok(Self::exporting(exporter, service_name))
    }

    fn exporting(exporter: opentelemetry_otlp::SpanExporter, service_name: &str) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(DerivedIds::default())
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service_name.to_string())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("custos-executor");
        Self {
            provider: Some(provider),
            tracer: Some(tracer),
        }
    }

    /// Whether spans are sent anywhere.
    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Emits one span of a run: the root when `span.span_id` is the run's root id, else a child
    /// of the root.
    pub fn emit(&self, run_id: &str, span: &SpanRecord) {
        let Some(tracer) = &self.tracer else { return };
        let (Some(trace), Some(root), Some(own)) = (
            hex_bytes::<16>(&trace_id(run_id)),
            hex_bytes::<8>(&root_span_id(run_id)),
            hex_bytes::<8>(&span.span_id),
        ) else {
            return;
        };
        let is_root = own == root;
        let parent = if is_root {
            Context::new()
        } else {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(trace),
                SpanId::from_bytes(root),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        };
        let attributes: Vec<KeyValue> = span
            .attributes
            .iter()
            .filter_map(|(k, v)| kv(k, v))
            .collect();
        let builder = tracer
            .span_builder(span.name.clone())
            .with_kind(if is_root {
                SpanKind::Server
            } else {
                SpanKind::Internal
            })
            .with_start_time(time(span.start_ms))
            .with_attributes(attributes);
        NEXT_IDS.with(|c| c.set((is_root.then_some(trace), Some(own))));
        let mut s = tracer.build_with_context(builder, &parent);
        NEXT_IDS.with(|c| c.set((None, None)));
        use opentelemetry::trace::Span as _;
        match &span.error {
            Some(e) => s.set_status(Status::error(e.clone())),
            None => s.set_status(Status::Ok),
        }
        s.end_with_timestamp(time(span.end_ms.max(span.start_ms)));
    }

    /// Sends what is buffered and waits for it (blocking: call off the async threads).
    pub fn flush(&self) -> Result<()> {
        if let Some(p) = &self.provider {
            p.force_flush()
                .map_err(|e| Error::Telemetry(format!("cannot send spans: {e}")))?;
        }
        Ok(())
    }

    /// Flushes and stops the exporter (blocking).
    pub fn shutdown(&self) -> Result<()> {
        if let Some(p) = &self.provider {
            p.shutdown()
                .map_err(|e| Error::Telemetry(format!("cannot send spans: {e}")))?;
        }
        Ok(())
    }
}
