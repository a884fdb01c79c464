//! The HTTP API's routes, one module per API area; what the handlers share (error answers,
//! query parameters).

pub(crate) mod analytics;
pub(crate) mod erase;
pub(crate) mod governance;
pub(crate) mod runs;
pub(crate) mod sql;
pub(crate) mod status;
pub(crate) mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

use crate::start::ApiState;

pub(crate) fn api_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/sql", post(sql::sql))
        .route("/api/metrics", get(analytics::api_metrics))
        .route("/api/thresholds", get(analytics::api_thresholds))
        .route("/api/slo", get(analytics::api_slo))
        .route("/api/slo/{name}/runs", get(analytics::api_slo_runs))
        .route("/api/authorize", post(governance::api_authorize))
        .route("/api/gate", post(governance::api_gate))
        .route("/api/reload", post(governance::api_reload))
        .route("/api/erase", post(erase::api_erase))
        .route("/api/audit/verify", get(governance::api_audit_verify))
        .route(
            "/api/audit/records/{seq}",
            get(governance::api_audit_record),
        )
        .route("/api/runs", post(runs::start_run))
        .route("/api/runs/{id}", get(runs::get_run))
        .route("/api/reviews", get(runs::list_reviews))
        .route("/api/reviews/{id}", get(runs::get_review))
        .route("/api/reviews/{id}/approve", post(runs::approve))
        .route("/api/reviews/{id}/reject", post(runs::reject))
        .route("/api/status", get(status::api_status))
        .route("/api/whoami", get(status::whoami))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(crate::prom::metrics))
        .route("/api/tokens", post(tokens::create).get(tokens::list))
        .route("/api/tokens/{id}", axum::routing::delete(tokens::revoke))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(custos_net::panics::guard(
            "api",
            false,
            state.collector_metrics.on_panic("api"),
        ))
        .with_state(state)
}

pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

/// A 400 answer with `message`.
pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    json_error(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn parse_at(
    at: Option<&str>,
) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    custos_analytics::metrics::parse_at(at).map_err(|e| format!("`at` = {e}"))
}

/// The answer to a failed query: 429 with `Retry-After` when all query slots are taken, 413
/// for a result over the caps, 400 for the caller's other mistakes (bad SQL, over the memory
/// limit or the timeout), else 500.
pub(crate) fn analytics_error(e: custos_analytics::Error) -> Response {
    use custos_analytics::Error;
    let status = match &e {
        Error::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        e if e.is_client_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut res = json_error(status, e.to_string());
    if status == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1u64));
    }
    res
}

pub(crate) type QueryParams<T> =
    std::result::Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// The parsed query parameters, or the message of a 400 naming the parameters the route knows.
pub(crate) fn query_params<T>(
    params: QueryParams<T>,
    known: &str,
) -> std::result::Result<T, String> {
    params
        .map(|p| p.0)
        .map_err(|e| format!("invalid query parameters: {e}; known: {known}"))
}
