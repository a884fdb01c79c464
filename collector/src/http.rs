//! OTLP/HTTP: `POST /v1/traces` with protobuf or OTLP/JSON bodies, optionally gzip-compressed.
//!
//! The body limit applies to the decompressed size: the compressed stream is inflated through a
//! reader capped at the limit, so a gzip bomb costs at most `max_body_bytes` of memory before it is
//! refused with 413.

use std::future::Future;
use std::io::Read as _;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde::Serialize;

use crate::admit::Rejection;
use crate::ingest::{Ingest, Refusal};
use crate::{Error, Result};

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    /// Parses a `Content-Type` header value, ignoring parameters such as `charset`.
    pub fn from_content_type(v: &str) -> Option<Self> {
        let media = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// `google.rpc.Status` in OTLP/JSON form.
#[derive(Serialize)]
struct JsonStatus<'a> {
    code: i32,
    message: &'a str,
    details: [(); 0],
}

/// An error response: HTTP status, gRPC code for the `google.rpc.Status` body, message.
struct Failure {
    status: StatusCode,
    code: i32,
    message: String,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn into_response(self, encoding: Encoding) -> Response {
        let body: Vec<u8> = match encoding {
            Encoding::Protobuf => tonic_types::Status {
                code: self.code,
                message: self.message.clone(),
                details: Vec::new(),
            }
            .encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&JsonStatus {
                code: self.code,
                message: &self.message,
                details: [],
            })
            .unwrap_or_default(),
        };
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        );
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
/// How long a client may take to send its request body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNKNOWN: i32 = 2;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

/// Reads the body, enforcing `max` on the decompressed size.
async fn read_body(body: Body, gzip: bool, max: usize) -> std::result::Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            RESOURCE_EXHAUSTED,
            format!(
                "request body exceeds the limit of {max} bytes (measured after decompression); send smaller batches"
            ),
        )
    };
    let limited = http_body_util::Limited::new(body, max);
    let raw: Bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("cannot read request body: {e}"),
            ));
        }
    };
    if !gzip {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity((raw.len() * 4).min(max));
    let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(max as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            INVALID_ARGUMENT,
            format!("cannot decompress gzip body: {e}"),
        )
    })?;
    if out.len() > max {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// Decodes an export request body (already decompressed); the error is the client-facing message.
pub fn decode_request(
    bytes: &[u8],
    encoding: Encoding,
) -> std::result::Result<ExportTraceServiceRequest, String> {
    decode(bytes, encoding).map_err(|f| f.message)
}

fn decode(
    bytes: &[u8],
    encoding: Encoding,
) -> std::result::Result<ExportTraceServiceRequest, Failure> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("cannot decode protobuf ExportTraceServiceRequest: {e}"),
            )
        }),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!(
                    "cannot decode OTLP/JSON ExportTraceServiceRequest at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        }),
    }
}

/// The answer to an export that is not admitted, in OTLP's error form.
fn rejected(r: &Rejection, encoding: Encoding) -> Response {
    let (status, code) = match r {
        Rejection::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, UNAUTHENTICATED),
        Rejection::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED),
        Rejection::Forbidden { .. } => (StatusCode::FORBIDDEN, PERMISSION_DENIED),
    };
    let mut f = Failure::new(status, code, r.message());
    if let Rejection::Throttled {
        retry_after_secs, ..
    } = r
    {
        f.retry_after = Some(*retry_after_secs);
    }
    let mut res = f.into_response(encoding);
    if let Some(v) = r
        .www_authenticate()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

async fn export(State(ingest): State<Ingest>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Admitted from the headers alone: an unknown caller's body is never read.
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<custos_net::Peer>>()
        .map(|c| &c.0);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = match ingest.admission.admit(authorization, peer) {
        Ok(source) => source,
        Err(r) => {
            let status = r.http_status().to_string();
            ingest
                .metrics
                .record("http", status, 0, 0, started.elapsed().as_secs_f64());
            return rejected(
                &r,
                Encoding::from_content_type(ct).unwrap_or(Encoding::Json),
            );
        }
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(ct) else {
        ingest
            .metrics
            .record("http", "415", 0, 0, started.elapsed().as_secs_f64());
        return Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_ARGUMENT,
            format!("unsupported content type `{ct}`; use `application/x-protobuf` or `application/json`"),
        )
        .into_response(Encoding::Json);
    };
    let result = handle(&ingest, &headers, body, encoding, &source).await;
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok((bytes, accepted, rejected)) => {
            ingest
                .metrics
                .record("http", "200", accepted, rejected, secs);
            let mut res = (StatusCode::OK, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoding.content_type()),
            );
            res
        }
        Err(f) => {
            ingest
                .metrics
                .record("http", f.status.as_str().to_string(), 0, 0, secs);
            f.into_response(encoding)
        }
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    source: &crate::admit::Source,
) -> std::result::Result<(Vec<u8>, u64, u64), Failure> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) => {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!("unsupported content encoding `{e}`; use `gzip` or none"),
            ));
        }
    };
    let max = ingest.options.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A body declared larger than the limit is still read up to the limit before the 413, so
    // that clients which write the whole body before reading the answer get the 413 rather than
    // a broken pipe; memory stays bounded by the limit either way.
    // Reserve what the body will take before reading it (its decoded size is reserved once it
    // has been counted).
    let estimate = declared.map_or(max / 4, |l| if gzip { l.saturating_mul(8) } else { l });
    let retry = ingest.options.retry_after.as_secs().max(1);
    let admission = ingest.store.admit(estimate.min(max)).map_err(|e| Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: UNAVAILABLE,
        message: format!("server overloaded: {e}"),
        retry_after: Some(retry),
    })?;
    // A client that trickles its body must not hold the reservation forever.
    let bytes = tokio::time::timeout(BODY_TIMEOUT, read_body(body, gzip, max))
        .await
        .map_err(|_| {
            Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                DEADLINE_EXCEEDED,
                format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    let accepted = ingest
        .export_body(bytes, admission, encoding, source)
        .await
        .map_err(|r| match r {
            Refusal::Invalid(m) => Failure::new(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, m),
            Refusal::Overloaded(m) | Refusal::Unavailable(m) => Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: UNAVAILABLE,
                message: m,
                retry_after: Some(retry),
            },
            Refusal::TooLarge(m) => {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED, m)
            }
            Refusal::Internal(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, UNKNOWN, m),
        })?;
    let response = accepted.response();
    let bytes = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        // A success without rejections leaves `partialSuccess` unset, as the specification asks;
        // `rejectedSpans` is an int64, which OTLP/JSON writes as a decimal string.
        Encoding::Json => match &response.partial_success {
            None => b"{}".to_vec(),
            Some(p) => serde_json::json!({
                "partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }
            })
            .to_string()
            .into_bytes(),
        },
    };
    Ok((bytes, accepted.accepted, accepted.rejected))
}

/// The OTLP/HTTP router: `POST /v1/traces`; other methods get 405 with an `Allow` header.
pub fn router(ingest: Ingest) -> Router {
    let on_panic = ingest.metrics.on_panic("otlp_http");
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(ingest)
        .layer(custos_net::panics::guard("otlp_http", false, on_panic))
}

/// Serves OTLP/HTTP on `listener` under `limits` until `shutdown` resolves, then finishes
/// requests in flight.
pub async fn serve(
    listener: custos_net::Listener,
    ingest: Ingest,
    limits: custos_net::serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    custos_net::serve::serve(listener, router(ingest), limits, false, shutdown)
        .await
        .map_err(|e| Error::Io {
            context: "OTLP/HTTP server failed".into(),
            cause: e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary bytes in either encoding decode to an error or to a request that normalizes
        /// without panicking.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                if let Ok(req) = decode_request(&body, encoding) {
                    let _ = crate::normalize(&req, Some("s"));
                    let _ = crate::normalize::expanded_size(&req);
                }
            }
        }

        /// Structurally valid OTLP/JSON with arbitrary ids, times and values never panics either.
        #[test]
        fn arbitrary_json_spans_never_panic(
            trace in "[0-9a-fA-F]{0,40}",
            span in "[0-9a-fA-F]{0,20}",
            start in any::<u64>(),
            end in any::<u64>(),
            kind in any::<i32>(),
            code in any::<i32>(),
            int in any::<i64>(),
            dbl in any::<f64>(),
        ) {
            let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": trace, "spanId": span, "parentSpanId": span,
                "startTimeUnixNano": start.to_string(), "endTimeUnixNano": end,
                "kind": kind, "status": {"code": code},
                "attributes": [
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": int.to_string()}},
                    {"key": "automation.cost_usd", "value": {"doubleValue": if dbl.is_finite() { dbl } else { 0.0 }}},
                    {"key": "automation.decision.confidence", "value": {"intValue": int}}
                ],
                "events": [{"timeUnixNano": end.to_string(), "name": "e"}],
                "links": [{"traceId": trace, "spanId": span}]
            }]}]}]})
            .to_string();
            let req = decode_request(body.as_bytes(), Encoding::Json);
            if let Ok(req) = req {
                let n = crate::normalize(&req, None).unwrap();
                let rows = n.batch.map_or(0, |b| b.num_rows()) as u64;
                prop_assert_eq!(rows + n.rejected, 1);
            }
        }
    }
}
