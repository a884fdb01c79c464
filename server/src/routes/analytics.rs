//! Analytics routes: `GET /api/metrics`, `/api/thresholds`, `/api/slo` and
//! `/api/slo/{name}/runs`, each the same computation as the CLI's offline command.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use custos_analytics::format::{Format, render};
use custos_analytics::slo::SloReport;
use http::StatusCode;
use serde::Deserialize;

use super::{QueryParams, analytics_error, bad_request, json_error, parse_at, query_params};
use crate::auth::Caller;
use crate::start::ApiState;
use custos_governance::access::Operation;

/// Query parameters of `GET /api/metrics`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsParams {
    /// How far back from `at`: `15m`, `24h`, `7d` (default `24h`).
    window: Option<String>,
    /// Group by `workflow` (default), `model`, `step`, `workflow,model`, ...
    by: Option<String>,
    /// The window's end, RFC 3339 (default now).
    at: Option<String>,
}

/// Builds a metrics request from user-facing parameters (CLI flags or API query).
pub fn metrics_request(
    window: Option<&str>,
    by: Option<&str>,
    at: Option<&str>,
) -> std::result::Result<custos_analytics::metrics::MetricsRequest, String> {
    use custos_analytics::metrics::{GroupBy, MetricsRequest};
    Ok(MetricsRequest {
        window: custos_analytics::duration::parse(window.unwrap_or("24h"))
            .map_err(|e| e.to_string())?,
        by: GroupBy::parse(by.unwrap_or("workflow")).map_err(|e| e.to_string())?,
        at: parse_at(at)?,
    })
}

#[utoipa::path(
    get,
    path = "/api/metrics",
    tag = "analytics",
    params(MetricsParams),
    responses(
        (status = 200, description = "The standard metrics per group (docs/metrics.md)", body = serde_json::Value),
        (status = 400, description = "A parameter is malformed or out of range", body = custos_api::ErrorBody),
        (status = 413, description = "The result is over the result caps", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_metrics(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    params: QueryParams<MetricsParams>,
) -> Result<Response, Response> {
    state
        .allow(&caller, Operation::read("query", "GET /api/metrics"))
        .await?;
    let p = query_params(params, "window, by, at").map_err(bad_request)?;
    let req = metrics_request(p.window.as_deref(), p.by.as_deref(), p.at.as_deref())
        .map_err(bad_request)?;
    let _slot = state.analytics.admit().map_err(analytics_error)?;
    Ok(
        match custos_analytics::metrics::compute(&state.analytics, &req).await {
            Ok(r) => axum::Json(r).into_response(),
            Err(e) => analytics_error(e),
        },
    )
}

/// Query parameters of `GET /api/thresholds`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThresholdParams {
    /// The workflow whose decision steps to tune.
    #[param(required = true)]
    workflow: Option<String>,
    /// One decision step (default every one of the workflow).
    step: Option<String>,
    /// The error rate to meet among automated decisions (default 0.03).
    target_error: Option<f64>,
    /// How far back from `at` (default `30d`).
    window: Option<String>,
    /// The window's end, RFC 3339 (default now).
    at: Option<String>,
}

/// Builds a threshold request from user-facing parameters.
pub fn threshold_request(
    workflow: &str,
    step: Option<&str>,
    target_error: Option<f64>,
    window: Option<&str>,
    at: Option<&str>,
) -> std::result::Result<custos_analytics::thresholds::ThresholdRequest, String> {
    let window =
        custos_analytics::duration::parse(window.unwrap_or("30d")).map_err(|e| e.to_string())?;
    let end = parse_at(at)?;
    let start = end - chrono::Duration::from_std(window).map_err(|e| e.to_string())?;
    Ok(custos_analytics::thresholds::ThresholdRequest {
        workflow: workflow.to_string(),
        step: step.map(String::from),
        target_error: target_error.unwrap_or(0.03),
        start,
        end,
    })
}

#[utoipa::path(
    get,
    path = "/api/thresholds",
    tag = "analytics",
    params(ThresholdParams),
    responses(
        (status = 200, description = "The confidence threshold per decision step that meets the target error", body = serde_json::Value),
        (status = 400, description = "A parameter is malformed or out of range", body = custos_api::ErrorBody),
        (status = 413, description = "The result is over the result caps", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_thresholds(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    params: QueryParams<ThresholdParams>,
) -> Result<Response, Response> {
    state
        .allow(&caller, Operation::read("query", "GET /api/thresholds"))
        .await?;
    let p =
        query_params(params, "workflow, step, target_error, window, at").map_err(bad_request)?;
    let Some(workflow) = p.workflow.as_deref() else {
        return Err(bad_request("the `workflow` query parameter is required"));
    };
    let req = threshold_request(
        workflow,
        p.step.as_deref(),
        p.target_error,
        p.window.as_deref(),
        p.at.as_deref(),
    )
    .map_err(bad_request)?;
    let _slot = state.analytics.admit().map_err(analytics_error)?;
    Ok(
        match custos_analytics::thresholds::compute(&state.analytics, &req).await {
            Ok(r) => axum::Json(r).into_response(),
            Err(e) => analytics_error(e),
        },
    )
}

/// Query parameters of `GET /api/slo`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SloParams {
    /// Evaluate as of this time, RFC 3339 (default now).
    at: Option<String>,
    /// Accept the server's background evaluation when it is at most this old (`30s`).
    max_age: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/slo",
    tag = "analytics",
    params(SloParams),
    responses(
        (status = 200, description = "Every SLO's SLI, budget and burn rates", body = serde_json::Value),
        (status = 400, description = "A parameter is malformed or out of range", body = custos_api::ErrorBody),
        (status = 413, description = "The result is over the result caps", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
        (status = 404, description = "No SLO file is configured", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_slo(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    params: QueryParams<SloParams>,
) -> Result<Response, Response> {
    state
        .allow(&caller, Operation::read("query", "GET /api/slo"))
        .await?;
    let p = query_params(params, "at, max_age").map_err(bad_request)?;
    let set = state.rules.slos.as_ref().ok_or_else(no_slo_file)?;
    let at = parse_at(p.at.as_deref()).map_err(bad_request)?;
    if let Some(max_age) = &p.max_age {
        let max_age = custos_analytics::duration::parse(max_age)
            .map_err(|e| bad_request(format!("`max_age`: {e}")))?;
        // The background evaluation (every `rules.slo_interval_secs`) serves callers that accept
        // its age: dashboards polling every few seconds then cost no evaluation at all.
        if p.at.is_none()
            && let Some(report) = cached_slo_report(&state, max_age)
        {
            return Ok(axum::Json(report).into_response());
        }
    }
    let _slot = state.analytics.admit().map_err(analytics_error)?;
    let report = custos_analytics::slo::evaluate(&state.analytics, set, at)
        .await
        .map_err(analytics_error)?;
    // A caller that accepts an age and found none fresh enough leaves its evaluation for the next
    // (before the first background evaluation ends, each dashboard poll would evaluate again).
    if p.max_age.is_some()
        && p.at.is_none()
        && let Ok(mut slot) = state.slo_report.lock()
    {
        *slot = Some(report.clone());
    }
    Ok(axum::Json(report).into_response())
}

/// Query parameters of `GET /api/slo/{name}/runs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SloRunsParams {
    /// How far back from `at` (default the SLO's period).
    window: Option<String>,
    /// The window's end, RFC 3339 (default now).
    at: Option<String>,
    /// At most this many runs, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /api/slo/{name}/runs`: the runs the SLO's error query counts over its period (or
/// `window`) ending `at`, slowest first; the SQL used is part of the answer.
#[utoipa::path(
    get,
    path = "/api/slo/{name}/runs",
    tag = "analytics",
    params(("name" = String, Path, description = "The SLO's name"), SloRunsParams),
    responses(
        (status = 200, description = "The runs the SLO counts as errors over the window, slowest first, and the SQL used", body = serde_json::Value),
        (status = 400, description = "A parameter is malformed or out of range", body = custos_api::ErrorBody),
        (status = 413, description = "The result is over the result caps", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
        (status = 404, description = "No such SLO, or no SLO file", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_slo_runs(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    params: QueryParams<SloRunsParams>,
) -> Result<Response, Response> {
    state
        .allow(
            &caller,
            Operation::read("query", "GET /api/slo/{name}/runs"),
        )
        .await?;
    let p = query_params(params, "window, at, limit").map_err(bad_request)?;
    let set = state.rules.slos.as_ref().ok_or_else(no_slo_file)?;
    let Some(slo) = set.slos.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = set.slos.iter().map(|s| s.name.as_str()).collect();
        return Err(json_error(
            StatusCode::NOT_FOUND,
            format!("no SLO `{name}`; known: {}", known.join(", ")),
        ));
    };
    let end = parse_at(p.at.as_deref()).map_err(bad_request)?;
    let window = match p.window.as_deref() {
        None => slo.period,
        Some(w) => custos_analytics::duration::parse(w)
            .map_err(|e| bad_request(format!("`window`: {e}")))?,
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let start = end - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
    let sql = match custos_analytics::slo::burning_runs_sql(slo, start, end, limit) {
        Ok(s) => s,
        Err(e) => return Err(analytics_error(e)),
    };
    let _slot = state.analytics.admit().map_err(analytics_error)?;
    let rows = match state
        .analytics
        .query(&sql)
        .await
        .and_then(|r| render(&r, Format::Json))
    {
        Ok(bytes) => {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or(serde_json::Value::Null)
        }
        Err(e) => return Err(analytics_error(e)),
    };
    Ok(axum::Json(serde_json::json!({
        "slo": slo.name,
        "window_start": start.to_rfc3339(),
        "window_end": end.to_rfc3339(),
        "sql": sql,
        "runs": rows,
    }))
    .into_response())
}

/// The server's latest SLO evaluation when it is at most `max_age` old.
pub(crate) fn cached_slo_report(state: &ApiState, max_age: Duration) -> Option<SloReport> {
    let report = state.slo_report.lock().ok()?.clone()?;
    let at = chrono::DateTime::parse_from_rfc3339(&report.at).ok()?;
    let age = chrono::Utc::now()
        .signed_duration_since(at)
        .to_std()
        .unwrap_or_default();
    (age <= max_age).then_some(report)
}

/// The 404 of the SLO routes when no SLO file is configured.
fn no_slo_file() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no SLO file is configured; set `rules.slos` in the config file or add rules/slos.yaml",
    )
}
