//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! tonic decodes the request before the service sees it and reports its own failures with codes the
//! OTLP specification gives other meanings: a message over the size limit is `OUT_OF_RANGE` (which
//! OTLP clients retry) and undecodable protobuf is `INTERNAL`. [`otlp_status_codes`] rewrites them to
//! `RESOURCE_EXHAUSTED` (without RetryInfo, so clients do not retry) and `INVALID_ARGUMENT`. The
//! service itself never answers `INTERNAL` or `OUT_OF_RANGE`, so the rewrite touches only tonic's
//! own answers.

use std::future::Future;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::admit::Rejection;
use crate::ingest::{Ingest, Refusal};
use crate::{Error, Result};

/// The gRPC trace service.
#[derive(Clone)]
pub struct GrpcReceiver {
    ingest: Ingest,
}

impl GrpcReceiver {
    /// A receiver storing into `ingest`.
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    fn unavailable(&self, message: String) -> Status {
        Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(Some(self.ingest.options.retry_after)),
        )
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<Response<ExportTraceServiceResponse>, Status> {
        let started = Instant::now();
        let m = &self.ingest.metrics;
        // Put there by the admitting interceptor; a request without one was not admitted.
        let Some(source) = request.extensions().get::<crate::admit::Source>().cloned() else {
            m.record(
                "grpc",
                "UNAUTHENTICATED",
                0,
                0,
                started.elapsed().as_secs_f64(),
            );
            return Err(Status::unauthenticated("the export was not admitted"));
        };
        let mut req = request.into_inner();
        let admission = match self.ingest.store.admit(req.encoded_len()) {
            Ok(a) => a,
            Err(e) => {
                m.record("grpc", "UNAVAILABLE", 0, 0, started.elapsed().as_secs_f64());
                return Err(self.unavailable(format!("server overloaded: {e}")));
            }
        };
        let result = self.ingest.export(&mut req, &source).await;
        drop(admission);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(accepted) => {
                m.record("grpc", "OK", accepted.accepted, accepted.rejected, secs);
                Ok(Response::new(accepted.response()))
            }
            Err(Refusal::Overloaded(msg)) | Err(Refusal::Unavailable(msg)) => {
                m.record("grpc", "UNAVAILABLE", 0, 0, secs);
                Err(self.unavailable(msg))
            }
            Err(Refusal::TooLarge(msg)) => {
                // No RetryInfo: the same request will never fit.
                m.record("grpc", "RESOURCE_EXHAUSTED", 0, 0, secs);
                Err(Status::resource_exhausted(msg))
            }
            Err(Refusal::Internal(msg)) => {
                // Not INTERNAL: the rewrite layer would turn it into INVALID_ARGUMENT. UNKNOWN is
                // not retried by OTLP clients either, and it says what it is.
                m.record("grpc", "UNKNOWN", 0, 0, secs);
                Err(Status::unknown(msg))
            }
        }
    }
}

/// The interceptor that admits each export from its metadata, before tonic decodes the message.
fn admitting(
    ingest: &Ingest,
) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone + use<> {
    let admission = ingest.admission.clone();
    let metrics = ingest.metrics.clone();
    move |req: Request<()>| {
        let started = Instant::now();
        let authorization = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<custos_net::Peer>();
        match admission.admit(authorization, peer) {
            Ok(source) => {
                // The handler stores who sent the spans.
                let mut req = req;
                req.extensions_mut().insert(source);
                Ok(req)
            }
            Err(r) => {
                let (status, label) = match &r {
                    Rejection::Unauthenticated { .. } => {
                        (Status::unauthenticated(r.message()), "UNAUTHENTICATED")
                    }
                    Rejection::Throttled { .. } => (
                        Status::resource_exhausted(r.message()),
                        "RESOURCE_EXHAUSTED",
                    ),
                    Rejection::Forbidden { .. } => {
                        (Status::permission_denied(r.message()), "PERMISSION_DENIED")
                    }
                };
                metrics.record("grpc", label, 0, 0, started.elapsed().as_secs_f64());
                Err(status)
            }
        }
    }
}

/// Rewrites tonic's own decode failures to the codes OTLP specifies (see the module docs).
pub fn otlp_status_codes<B>(mut res: http::Response<B>) -> http::Response<B> {
    let code = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let new = match code {
        Some(11) => Some("8"), // OUT_OF_RANGE → RESOURCE_EXHAUSTED
        Some(13) => Some("3"), // INTERNAL (prost decode error) → INVALID_ARGUMENT
        _ => None,
    };
    if let Some(new) = new {
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(new));
    }
    res
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, then finishes requests in flight.
pub async fn serve(
    listener: custos_net::Listener,
    receiver: GrpcReceiver,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let max = receiver.ingest.options.max_body_bytes;
    let admit = admitting(&receiver.ingest);
    let on_panic = receiver.ingest.metrics.on_panic("otlp_grpc");
    let svc = TraceServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, admit);
    let incoming = listener.incoming();
    tonic::transport::Server::builder()
        .layer(custos_net::panics::guard("otlp_grpc", true, on_panic))
        .layer(tower::util::MapResponseLayer::new(
            otlp_status_codes::<tonic::body::Body>,
        ))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    use super::*;

    /// Panics on its first export, then answers.
    struct FirstPanics(AtomicU64);

    #[tonic::async_trait]
    impl TraceService for FirstPanics {
        async fn export(
            &self,
            _: Request<ExportTraceServiceRequest>,
        ) -> std::result::Result<Response<ExportTraceServiceResponse>, Status> {
            if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                panic!("a bug in a handler");
            }
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    #[tokio::test]
    async fn a_panicking_export_is_internal_and_the_channel_serves_the_next_one() {
        let panics = Arc::new(AtomicU64::new(0));
        let counted = panics.clone();
        let on_panic: custos_net::panics::OnPanic = Arc::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(custos_net::panics::guard("test", true, on_panic))
                .layer(tower::util::MapResponseLayer::new(
                    otlp_status_codes::<tonic::body::Body>,
                ))
                .add_service(TraceServiceServer::new(FirstPanics(AtomicU64::new(0))))
                .serve_with_incoming(incoming),
        );
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let err = client
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        // The same channel (one HTTP/2 connection) goes on serving.
        client
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap();
        assert_eq!(panics.load(Ordering::Relaxed), 1);
    }
}
