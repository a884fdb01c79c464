//! `GET /api/status` (what an operator's header shows), `GET /api/whoami`, `GET /healthz` (the
//! process answers) and `GET /readyz` (it can take writes).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::auth::Caller;
use crate::start::ApiState;

/// `GET /api/status`: what an operator's header shows (`custos top`): ingest counters (a client
/// derives rates from two readings), memtable, WAL, last flush, policy set, executor.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "status",
    responses((status = 200, description = "Ingest, store, policy and executor state", body = custos_api::Status))
)]
pub(crate) async fn api_status(State(state): State<Arc<ApiState>>, caller: Caller) -> Response {
    let op = custos_governance::access::Operation::read("read_status", "GET /api/status");
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    use custos_collector::metrics::TransportLabels;
    let count = |f: &Family<TransportLabels, Counter>| -> u64 {
        ["grpc", "http"]
            .iter()
            .map(|t| f.get_or_create(&TransportLabels { transport: t }).get())
            .sum()
    };
    let s = state.store.stats();
    let pending_reviews = state
        .runner
        .as_ref()
        .and_then(|r| r.executor.pending_reviews().ok())
        .map(|v| v.len());
    let body = custos_api::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        spans_accepted: count(&state.collector_metrics.spans_accepted),
        spans_rejected: count(&state.collector_metrics.spans_rejected),
        memtable_rows: state.store.memtable_rows() as u64,
        memtable_bytes: state.store.memtable_bytes() as u64,
        wal_bytes: s.wal_bytes.load(Ordering::Relaxed),
        flushes: s.flushes.load(Ordering::Relaxed),
        last_flush_unix: match s.last_flush_unix.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        },
        flush_errors: s.flush_errors.load(Ordering::Relaxed),
        policy_hash: Some(state.access.engine.current().hash().to_string()),
        workflows: state
            .runner
            .as_ref()
            .map(|r| r.workflows().keys().cloned().collect()),
        pending_reviews,
        redactions: Some(state.redactor.counts().total()),
        encryption_at_rest: Some(state.at_rest.describe()),
    };
    axum::Json(body).into_response()
}

/// `GET /api/whoami`: who the token says the caller is (any authenticated caller may ask).
#[utoipa::path(
    get,
    path = "/api/whoami",
    tag = "status",
    responses((status = 200, description = "The caller as its token names it", body = custos_api::WhoAmI))
)]
pub(crate) async fn whoami(caller: Caller) -> Response {
    axum::Json(custos_api::WhoAmI {
        principal: caller.0.uid.clone(),
        token_id: caller.0.token_id.clone(),
    })
    .into_response()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "status",
    security(()),
    responses((status = 200, description = "The process answers", body = serde_json::Value))
)]
pub(crate) async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "memtable_rows": state.store.memtable_rows(),
    });
    axum::Json(body).into_response()
}

/// `GET /readyz`: 200 when the WAL takes appends, flushes progress, the audit log takes records
/// and a policy set is loaded; 503 naming each part that fails otherwise. No token needed, like
/// `/healthz`, so load balancers and orchestrators can ask.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "status",
    security(()),
    responses(
        (status = 200, description = "Ready: the WAL, flushes, the audit log and the policies work", body = serde_json::Value),
        (status = 503, description = "Not ready: `failing` names each failing part", body = serde_json::Value),
    )
)]
pub(crate) async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let health = state.store.health();
    let grace = (state.store.options().flush_interval * 3).max(std::time::Duration::from_secs(30));
    let mut failing = health.not_ready(grace);
    if let Some(e) = state.audit.failing() {
        failing.push(format!("audit: the last append failed: {e}"));
    }
    let log = state.audit.log_path();
    if let Err(e) = std::fs::OpenOptions::new().append(true).open(&log) {
        failing.push(format!(
            "audit: cannot open `{}` for appending: {e}",
            log.display()
        ));
    }
    let policy_hash = state.access.engine.current().hash().to_string();
    let ready = failing.is_empty();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "failing": failing,
        "wal": health.wal,
        "flush": health.flush,
        "policy_hash": policy_hash,
    });
    let status = if ready {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
