//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! tonic reads and inflates the message (refusing one over the size limit once inflated); the
//! service gets its bytes, and counts and decodes them on the ingest path. tonic reports its own
//! failures with codes the OTLP specification gives other meanings: a message over the size limit
//! is `OUT_OF_RANGE` (which OTLP clients retry) and a broken frame or gzip stream is `INTERNAL`.
//! [`otlp_status_codes`] rewrites them to `RESOURCE_EXHAUSTED` (without RetryInfo, so clients do
//! not retry) and `INVALID_ARGUMENT`. The service itself never answers `INTERNAL` or
//! `OUT_OF_RANGE`, so the rewrite touches only tonic's own answers; a panic caught by the guard
//! (`INTERNAL`, set outside the rewrite) stays `INTERNAL`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::admit::Rejection;
use crate::http::Encoding;
use crate::ingest::{Ingest, Refusal};
use crate::{Error, Result};

/// The method this receiver serves.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace service.
///
/// Written out rather than generated, for one reason: its request stays bytes (tonic reads and
/// inflates the message, within the size limit), so that the export is counted before it is
/// decoded and decoded off the async workers, exactly as on OTLP/HTTP ([`crate::ingest`]).
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

    async fn export(
        &self,
        request: Request<Bytes>,
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
        let body = request.into_inner();
        // The message tonic holds, until the export is stored.
        let held = match self.ingest.store.admit(body.len()) {
            Ok(a) => a,
            Err(e) => {
                m.record("grpc", "UNAVAILABLE", 0, 0, started.elapsed().as_secs_f64());
                return Err(self.unavailable(format!("server overloaded: {e}")));
            }
        };
        let result = self
            .ingest
            .export_body(body, held, Encoding::Protobuf, &source)
            .await;
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(accepted) => {
                m.record("grpc", "OK", accepted.accepted, accepted.rejected, secs);
                Ok(Response::new(accepted.response()))
            }
            Err(Refusal::Invalid(msg)) => {
                m.record("grpc", "INVALID_ARGUMENT", 0, 0, secs);
                Err(Status::invalid_argument(msg))
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

/// The export method's codec: the request is kept as bytes, the response is protobuf.
#[derive(Debug, Default, Clone, Copy)]
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ExportCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut EncodeBuf<'_>,
    ) -> std::result::Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::unknown(format!("cannot encode the response: {e}")))
    }
}

impl Decoder for ExportCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> std::result::Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The `TraceService` as a tower service, for tonic's router.
#[derive(Clone)]
pub struct TraceServer {
    receiver: Arc<GrpcReceiver>,
    max_message: usize,
}

impl TraceServer {
    /// The service of `receiver`, refusing messages over `max_message` bytes once inflated.
    pub fn new(receiver: GrpcReceiver, max_message: usize) -> Self {
        Self {
            receiver: Arc::new(receiver),
            max_message,
        }
    }
}

impl tonic::server::NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct ExportMethod(Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<
        Box<
            dyn Future<Output = std::result::Result<Response<Self::Response>, Status>>
                + Send
                + 'static,
        >,
    >;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { receiver.export(request).await })
    }
}

type ServiceFuture = Pin<
    Box<
        dyn Future<Output = std::result::Result<http::Response<tonic::body::Body>, Infallible>>
            + Send
            + 'static,
    >,
>;

impl<B> tower::Service<http::Request<B>> for TraceServer
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                let mut res = http::Response::new(tonic::body::Body::default());
                let h = res.headers_mut();
                h.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                h.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(res)
            });
        }
        let method = ExportMethod(self.receiver.clone());
        let max = self.max_message;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            Ok(grpc.unary(method, req).await)
        })
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

/// Serves OTLP/gRPC on `listener` under `limits` until `shutdown` resolves, then finishes
/// requests in flight.
pub async fn serve(
    listener: custos_net::Listener,
    receiver: GrpcReceiver,
    limits: custos_net::serve::Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let max = receiver.ingest.options.max_body_bytes;
    let admit = admitting(&receiver.ingest);
    let on_panic = receiver.ingest.metrics.on_panic("otlp_grpc");
    let svc = tonic::service::interceptor::InterceptedService::new(
        TraceServer::new(receiver, max),
        admit,
    );
    let svc = tower::ServiceBuilder::new()
        .layer(custos_net::panics::guard("otlp_grpc", true, on_panic))
        .layer(tower::util::MapResponseLayer::new(
            otlp_status_codes::<tonic::body::Body>,
        ))
        .service(tonic::service::Routes::new(svc));
    custos_net::serve::serve(listener, svc, limits, true, shutdown)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };

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
