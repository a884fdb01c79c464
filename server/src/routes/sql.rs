//! `POST /api/sql`: one read-only query, rendered as the `Accept` header asks.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use custos_analytics::format::{Format, render};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{analytics_error, json_error};
use crate::auth::Caller;
use crate::start::ApiState;
use custos_governance::access::Operation;

/// `POST /api/sql`: `query` for every statement, and `read_audit` as well when its plan reads
/// the `audit` table (through a view or a subquery too).
#[utoipa::path(
    post,
    path = "/api/sql",
    tag = "analytics",
    request_body = custos_api::SqlRequest,
    params(("Accept" = Option<String>, Header, description = "`application/json` (default), `text/csv`, `application/x-ndjson`, `application/vnd.apache.arrow.stream` or `text/plain` (a table)")),
    responses(
        (status = 200, description = "The result, in the format `Accept` asks for", content(
            (Vec<serde_json::Value> = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
            (String = "text/plain"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
        )),
        (status = 400, description = "Not JSON, not one read-only statement, bad SQL, over the memory limit or the timeout", body = custos_api::ErrorBody),
        (status = 413, description = "The result is over `[query] max_result_rows` or `max_result_mib`", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot (`[query] max_concurrent`) is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn sql(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = state
        .allow(&caller, Operation::read("query", "POST /api/sql"))
        .await
    {
        return r;
    }
    let req: custos_api::SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("request body must be JSON like {{\"sql\": \"SELECT ...\"}}: {e}"),
            );
        }
    };
    let format = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(Format::from_accept)
        .unwrap_or(Format::Json);
    // A slot before anything is planned: beyond `[query] max_concurrent`, 429 at once.
    let _slot = match state.analytics.admit() {
        Ok(s) => s,
        Err(e) => return analytics_error(e),
    };
    let started = Instant::now();
    let prepared = match state.analytics.prepare(&req.sql).await {
        Ok(p) => p,
        Err(e) => return analytics_error(e),
    };
    if prepared.tables().contains(custos_analytics::AUDIT_TABLE)
        && let Err(r) = state
            .allow(&caller, Operation::read("read_audit", "POST /api/sql"))
            .await
    {
        return r;
    }
    let result = prepared.run().await;
    state.sql_seconds.observe(started.elapsed().as_secs_f64());
    // Rendering up to the result caps is CPU work: off the async workers.
    let rendered = match result {
        Ok(r) => tokio::task::spawn_blocking(move || render(&r, format))
            .await
            .unwrap_or_else(|e| {
                Err(custos_analytics::Error::Execution(format!(
                    "rendering the result failed: {e}"
                )))
            }),
        Err(e) => Err(e),
    };
    match rendered {
        Ok(bytes) => {
            let mut res = (StatusCode::OK, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            res
        }
        Err(e) => analytics_error(e),
    }
}
