//! Token routes: `POST /api/tokens` (201 with the token, shown once), `GET /api/tokens` and
//! `DELETE /api/tokens/{id}` (204), for callers who may `manage_tokens`. Each create and revoke
//! is an audit record naming the caller.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use custos_auth::TokenRecord;
use custos_governance::access::Operation;
use custos_governance::tokens;
use http::StatusCode;

use super::json_error;
use crate::auth::Caller;
use crate::start::ApiState;

/// A stored token as the API lists it (the CLI's offline list prints the same).
pub fn token_info(t: TokenRecord) -> custos_api::TokenInfo {
    custos_api::TokenInfo {
        id: t.id,
        principal: t.principal,
        created: t.created.to_rfc3339(),
        expires: t.expires.map(|e| e.to_rfc3339()),
        note: t.note,
        revoked: t.revoked.map(|r| r.to_rfc3339()),
    }
}

fn governance_error(e: custos_governance::Error) -> Response {
    let status = match &e {
        custos_governance::Error::NotFound(_) => StatusCode::NOT_FOUND,
        custos_governance::Error::Token(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, e.to_string())
}

/// The expiry of `90d`, `12h`, ... from now.
fn expiry(v: Option<&str>) -> std::result::Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    let Some(v) = v else { return Ok(None) };
    let d = custos_analytics::duration::parse(v).map_err(|e| format!("`expires`: {e}"))?;
    let d = chrono::Duration::from_std(d).map_err(|e| format!("`expires` = `{v}`: {e}"))?;
    Ok(Some(chrono::Utc::now() + d))
}

#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    request_body = custos_api::CreateToken,
    responses(
        (status = 201, description = "The new token, shown this once", body = custos_api::TokenCreated),
        (status = 400, description = "Not a token request, an unknown principal or a bad expiry", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let op = Operation::read("manage_tokens", "POST /api/tokens");
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let req: custos_api::CreateToken = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be JSON like {{\"principal\": \"Custos::User::\\\"ana\\\"\", \"expires\": \"90d\", \"note\": \"laptop\"}}: {e}"
                ),
            );
        }
    };
    let expires = match expiry(req.expires.as_deref()) {
        Ok(e) => e,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    let a = &state.access;
    let (engine, authn, audit, by) = (
        a.engine.current(),
        a.authn.clone(),
        a.audit.clone(),
        caller.uid().to_string(),
    );
    let request = tokens::Request {
        principal: req.principal,
        expires,
        note: req.note,
    };
    let done = tokio::task::spawn_blocking(move || {
        tokens::create(&engine, authn.file(), &audit, &by, &request)
    })
    .await;
    match done {
        Ok(Ok((new, record))) => {
            let body = custos_api::TokenCreated {
                id: new.record.id,
                token: new.token,
                principal: new.record.principal,
                expires: new.record.expires.map(|e| e.to_rfc3339()),
                audit_seq: record.seq,
            };
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => governance_error(e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    responses((status = 200, description = "Every token, without its secret", body = custos_api::Tokens))
)]
pub(crate) async fn list(State(state): State<Arc<ApiState>>, caller: Caller) -> Response {
    let op = Operation::read("manage_tokens", "GET /api/tokens");
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    match state.access.authn.file().read() {
        Ok(t) => axum::Json(custos_api::Tokens {
            tokens: t.into_iter().map(token_info).collect(),
        })
        .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let op = Operation::read("manage_tokens", format!("DELETE /api/tokens/{id}"));
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let a = &state.access;
    let (engine, authn, audit, by) = (
        a.engine.current(),
        a.authn.clone(),
        a.audit.clone(),
        caller.uid().to_string(),
    );
    let done = tokio::task::spawn_blocking(move || {
        tokens::revoke(&engine, authn.file(), &audit, &by, &id)
    })
    .await;
    match done {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => governance_error(e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
