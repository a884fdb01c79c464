//! The HTTP API's routes, one module per API area; what the handlers share (error answers,
//! query parameters).

pub(crate) mod analytics;
pub(crate) mod erase;
pub(crate) mod governance;
pub(crate) mod openapi;
pub(crate) mod runs;
pub(crate) mod sql;
pub(crate) mod status;
pub(crate) mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::start::ApiState;

/// Every route of the API with its OpenAPI description: a route is served only as described.
fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(sql::sql))
        .routes(routes!(analytics::api_metrics))
        .routes(routes!(analytics::api_thresholds))
        .routes(routes!(analytics::api_slo))
        .routes(routes!(analytics::api_slo_runs))
        .routes(routes!(governance::api_authorize))
        .routes(routes!(governance::api_gate))
        .routes(routes!(governance::api_reload))
        .routes(routes!(erase::api_erase))
        .routes(routes!(governance::api_audit_verify))
        .routes(routes!(governance::api_audit_record))
        .routes(routes!(runs::start_run))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::list_reviews))
        .routes(routes!(runs::get_review))
        .routes(routes!(runs::approve))
        .routes(routes!(runs::reject))
        .routes(routes!(status::api_status))
        .routes(routes!(status::whoami))
        .routes(routes!(status::healthz))
        .routes(routes!(status::readyz))
        .routes(routes!(crate::prom::metrics))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(openapi::document))
}

/// The OpenAPI document of [`routes`], with what every route shares.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    utoipa::Modify::modify(&openapi::Common, &mut doc);
    doc
}

pub(crate) fn api_router(state: Arc<ApiState>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
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
