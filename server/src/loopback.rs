//! The server's own executor sends its spans through the OTLP/HTTP receiver in process: the same
//! router, admission (its process token and the `ingest` policy), decoding and WAL as any export,
//! without a socket. So it needs neither TLS to itself nor, under mutual TLS, a client
//! certificate, and it does not depend on which address the receiver got.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError};
use tower::ServiceExt as _;

/// Responses larger than this are cut off (the receiver's answers are a few bytes).
const MAX_RESPONSE: usize = 1 << 20;

/// An `HttpClient` that calls a router in this process.
#[derive(Clone)]
pub(crate) struct InProcess {
    router: axum::Router,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InProcess")
    }
}

impl InProcess {
    /// A client of `router`, run on the current runtime (the SDK's batch exporter calls from a
    /// thread of its own).
    pub(crate) fn new(router: axum::Router) -> Self {
        Self {
            router,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

#[async_trait]
impl HttpClient for InProcess {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let router = self.router.clone();
        let call = self.runtime.spawn(async move {
            let response = router.oneshot(request.map(axum::body::Body::from)).await?;
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, MAX_RESPONSE).await?;
            Ok::<_, HttpError>(http::Response::from_parts(parts, bytes))
        });
        call.await.map_err(|e| Box::new(e) as HttpError)?
    }
}
