//! A panic in a request handler is a logged, counted error answer, never a dropped connection:
//! without a guard, a panic ends the connection task, and with it every other HTTP/2 stream on
//! the connection. Every listener (OTLP/gRPC, OTLP/HTTP, the API) is wrapped in [`guard`].

use std::any::Any;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// Called once per caught panic (the server counts them in `custos_panics_total`).
pub type OnPanic = Arc<dyn Fn() + Send + Sync>;

/// How a caught panic is answered on one listener.
#[derive(Clone)]
pub struct Answer {
    listener: &'static str,
    grpc: bool,
    on_panic: OnPanic,
}

fn message(err: &(dyn Any + Send)) -> &str {
    err.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

impl ResponseForPanic for Answer {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> Response<Body> {
        tracing::error!(
            listener = self.listener,
            panic = message(err.as_ref()),
            "a request handler panicked; answered with an internal error"
        );
        (self.on_panic)();
        let text = "internal error: the request handler failed and it was logged; the server is still serving";
        let mut res = if self.grpc {
            // gRPC errors travel as HTTP 200 with a `grpc-status` (13: INTERNAL).
            let mut r = Response::new(Body::empty());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from_static("13"));
            h.insert("grpc-message", HeaderValue::from_static("internal error"));
            r
        } else {
            let body = format!("{{\"error\":\"{text}\"}}");
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        res
    }
}

/// The layer that turns panics on `listener` into error answers (`grpc`: a gRPC `INTERNAL`
/// status; else a 500 with a JSON error), logging each and calling `on_panic`.
pub fn guard(listener: &'static str, grpc: bool, on_panic: OnPanic) -> CatchPanicLayer<Answer> {
    CatchPanicLayer::custom(Answer {
        listener,
        grpc,
        on_panic,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Reads one HTTP/1.1 response (headers and a `content-length` body) from `s`.
    async fn response(s: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).await.unwrap(),
                1,
                "connection closed: {buf:?}"
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        format!("{head}{}", String::from_utf8_lossy(&body))
    }

    async fn boom() -> &'static str {
        panic!("index out of bounds")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_and_the_connection_serves_the_next_request() {
        let panics = Arc::new(AtomicU64::new(0));
        let counted = panics.clone();
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(guard(
                "test",
                false,
                Arc::new(move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                }),
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let r = response(&mut s).await;
            assert!(r.starts_with("http/1.1 500"), "{r}");
            assert!(r.contains("\"error\":\"internal error"), "{r}");
        }
        s.write_all(b"GET /fine HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let r = response(&mut s).await;
        assert!(r.starts_with("http/1.1 200") && r.ends_with("fine"), "{r}");
        assert_eq!(panics.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn grpc_answers_carry_the_internal_status() {
        let mut a = Answer {
            listener: "test",
            grpc: true,
            on_panic: Arc::new(|| {}),
        };
        let r = a.response_for_panic(Box::new("boom"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "13");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }
}
