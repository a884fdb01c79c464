//! Governance routes: `POST /api/authorize` (decide and record), `POST /api/gate` (the deploy
//! gate on the server's own data), `POST /api/reload` (the policies and workflows), `GET
//! /api/audit/verify` and `GET /api/audit/records/{seq}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use custos_governance::gate;
use custos_policy::engine::AuthzRequest;
use http::StatusCode;
use serde::Deserialize;

use super::{analytics_error, json_error, parse_at};
use crate::auth::Caller;
use crate::start::ApiState;
use custos_governance::access::{self, Operation};

pub(crate) fn deny_body(message: &str) -> serde_json::Value {
    serde_json::json!({
        "decision": "deny",
        "determining_policies": [],
        "advice": [],
        "errors": [{"kind": "evaluation", "message": message}],
        "error": message,
    })
}

/// `POST /api/reload`: loads and checks the policy directory and the workflow definitions and puts
/// them in force, recording what changed with the caller as who changed it; 422 naming the file
/// and what is wrong, with nothing changed, when they do not load.
#[utoipa::path(
    post,
    path = "/api/reload",
    tag = "governance",
    responses(
        (status = 200, description = "What the reload put in force", body = custos_api::Reloaded),
        (status = 422, description = "A policy, workflow or client file does not load; nothing changed", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_reload(State(state): State<Arc<ApiState>>, caller: Caller) -> Response {
    let op = Operation::read("reload", "POST /api/reload").writing();
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let (st, by) = (state.clone(), caller.uid().to_string());
    match tokio::task::spawn_blocking(move || crate::reload::reload(&st, &by)).await {
        Ok(Ok(r)) => {
            crate::reload::log_reloaded("POST /api/reload", &r);
            axum::Json(r).into_response()
        }
        Ok(Err(e @ (crate::Error::Audit(_) | crate::Error::Governance(_)))) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reload could not be recorded: {e}"),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reload refused; nothing changed");
            json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing was reloaded: {e}"),
            )
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reload failed: {e}"),
        ),
    }
}

/// The largest `POST /api/authorize` body: 64 KiB of principal, resource, context and entities.
pub(crate) const MAX_AUTHORIZE_BYTES: usize = 64 << 10;

/// `POST /api/authorize`: a service asks for a decision about someone else's request; the
/// request's own entities may describe its resource and context but never change the store's.
#[utoipa::path(
    post,
    path = "/api/authorize",
    tag = "governance",
    request_body(content = serde_json::Value, description = "`principal`, `action`, `resource`, `context` and optionally `entities`, in Cedar's JSON forms (docs/governance.md)"),
    responses(
        (status = 200, description = "The decision, recorded in the audit log", body = custos_api::PolicyDecision),
        (status = 400, description = "Not a decision request, or a request the schema refuses (a deny)", body = custos_api::PolicyDecision),
        (status = 413, description = "The request is over 64 KiB (a deny)", body = custos_api::PolicyDecision),
    )
)]
pub(crate) async fn api_authorize(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let op = Operation::read("authorize", "POST /api/authorize");
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    // Every decision is recorded with its context: a request may not grow the log by more.
    if body.len() > MAX_AUTHORIZE_BYTES {
        let msg = format!(
            "the authorization request is {} bytes, over the limit of {MAX_AUTHORIZE_BYTES}: \
             its context is recorded in the audit log, so send the attributes the policies \
             read, not whole documents",
            body.len()
        );
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(deny_body(&msg))).into_response();
    }
    let req: AuthzRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "request body must be a JSON object with `principal`, `action`, `resource`, `context` and optionally `entities` (docs/governance.md): {e}"
            );
            return (StatusCode::BAD_REQUEST, axum::Json(deny_body(&msg))).into_response();
        }
    };
    // The engine in force when the request arrived decides it, even if a reload follows.
    let engine = state.access.engine.current();
    let audit = state.audit.clone();
    let done = tokio::task::spawn_blocking(move || {
        custos_governance::authorize_and_record(&engine, &audit, &req)
    })
    .await;
    match done {
        Ok(Ok((d, record))) => {
            let status = if d.request_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            let mut body = serde_json::to_value(&d).unwrap_or_default();
            body["audit"] = serde_json::json!({"seq": record.seq, "hash": record.hash});
            (status, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => {
            let msg = format!("the decision could not be recorded, so it is a deny: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(deny_body(&msg)),
            )
                .into_response()
        }
        Err(e) => {
            let msg = format!("the decision failed, so it is a deny: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(deny_body(&msg)),
            )
                .into_response()
        }
    }
}

/// Body of `POST /api/gate`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// The change file's content.
    pub change: gate::ChangeFile,
    /// Evaluation time, RFC 3339 (default now).
    #[serde(default)]
    pub at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/gate",
    tag = "governance",
    request_body(content = serde_json::Value, description = "`{\"change\": {...change file...}, \"at\": \"RFC 3339\"}` (docs/ci.md)"),
    responses(
        (status = 200, description = "The gate's report, recorded in the audit log", body = serde_json::Value),
        (status = 400, description = "Not a change file, or a change naming someone else", body = custos_api::ErrorBody),
        (status = 413, description = "A measurement's result is over the result caps", body = custos_api::ErrorBody),
        (status = 429, description = "Every query slot is taken; retry after `Retry-After` seconds", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_gate(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let mut req: GateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body must be JSON like {{\"change\": {{...change file...}}, \"at\": \"2026-11-21T12:00:00Z\"}}: {e}"
                ),
            );
        }
    };
    // The caller asks for the deploy: a change naming someone else is refused.
    let named = req.change.requested_by.trim().to_string();
    if let Some(r) = caller.refuse_named(
        "change.requested_by",
        Some(named.as_str()).filter(|n| !n.is_empty()),
        "asks for a deploy",
    ) {
        return r;
    }
    req.change.requested_by = caller.uid().to_string();
    let op = Operation::read("gate", "POST /api/gate").on(access::workflow(&req.change.workflow));
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let change = match serde_json::to_string(&req.change)
        .map_err(|e| custos_governance::Error::Gate(e.to_string()))
        .and_then(|t| gate::ChangeFile::parse(&t, "request body"))
    {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let at = match parse_at(req.at.as_deref()) {
        Ok(t) => t,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    let engine = state.access.engine.current();
    let dir = state
        .rules
        .policy_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut report = match gate::evaluate(&state.analytics, &engine, &change, at, &dir).await {
        Ok(r) => r,
        Err(custos_governance::Error::Analytics(e)) => return analytics_error(e),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let audit = state.audit.clone();
    let recorded =
        tokio::task::spawn_blocking(move || gate::record(&audit, &mut report).map(|_| report))
            .await;
    match recorded {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the gate decision could not be recorded, so nothing is allowed: {e}"),
        ),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Query parameters of `GET /api/audit/verify`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyParams {
    /// A record hash published elsewhere that the log must still contain.
    anchor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "governance",
    params(VerifyParams),
    responses(
        (status = 200, description = "The hash chain checked end to end", body = custos_api::Verification),
        (status = 400, description = "Unknown parameters", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_audit_verify(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    params: super::QueryParams<VerifyParams>,
) -> Response {
    let op = Operation::read("read_audit", "GET /api/audit/verify");
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let anchor = match super::query_params(params, "anchor") {
        Ok(p) => p.anchor,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    let dir = state.audit.dir().to_path_buf();
    let verified =
        tokio::task::spawn_blocking(move || custos_audit::verify_anchored(&dir, anchor.as_deref()))
            .await;
    match verified {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/audit/records/{seq}`: one record of the audit log, whole (404 when the log has no
/// such record, 400 when `seq` is not a positive whole number).
#[utoipa::path(
    get,
    path = "/api/audit/records/{seq}",
    tag = "governance",
    params(("seq" = String, Path, description = "The record's number, from 1")),
    responses(
        (status = 200, description = "The record, whole", body = custos_api::AuditRecord),
        (status = 400, description = "`seq` is not a positive whole number", body = custos_api::ErrorBody),
        (status = 404, description = "No such record", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_audit_record(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    axum::extract::Path(seq): axum::extract::Path<String>,
) -> Response {
    let op = Operation::read("read_audit", format!("GET /api/audit/records/{seq}"));
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let Some(n) = seq.parse::<u64>().ok().filter(|n| *n > 0) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("`{seq}` is not a record number; records are numbered from 1"),
        );
    };
    let dir = state.audit.dir().to_path_buf();
    match tokio::task::spawn_blocking(move || custos_audit::read_one(&dir, n)).await {
        Ok(Ok(Some(r))) => axum::Json(r).into_response(),
        Ok(Ok(None)) => json_error(
            StatusCode::NOT_FOUND,
            format!("the audit log has no record `{n}`"),
        ),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
