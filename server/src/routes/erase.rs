//! `POST /api/erase`: erasure of one person's data or of chosen spans (action `erase`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use custos_api::EraseRequest;
use custos_governance::access::Operation;
use http::StatusCode;

use super::{bad_request, json_error};
use crate::auth::Caller;
use crate::start::ApiState;

/// Erases what the body selects (`where` or `person`, optionally `now`), records it with the
/// caller as principal and answers what was erased: 400 for a selection that is not usable, 500
/// when the store or the journal fails (what was committed before the failure stays erased).
#[utoipa::path(
    post,
    path = "/api/erase",
    tag = "privacy",
    request_body = custos_api::EraseRequest,
    responses(
        (status = 200, description = "What was erased, and its audit record", body = custos_api::Erased),
        (status = 400, description = "Not a usable selection; nothing was erased", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn api_erase(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let op = Operation::read("erase", "POST /api/erase").writing();
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let req: EraseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the body must be a JSON object with `where` (a SQL condition) or `person` (a value), and optionally `now`: {e}"
            ));
        }
    };
    let executor = state
        .runner
        .as_ref()
        .map(|r| (r.executor.journal(), r.executor.connectors()));
    let parts = crate::erase::Parts {
        store: &state.store,
        redactor: &state.redactor,
        executor,
        audit: &state.audit,
        by: caller.uid(),
        grace: state.store.options().erase_grace,
    };
    match crate::erase::erase(parts, &req).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(e @ crate::Error::Request(_)) => bad_request(format!("nothing was erased: {e}")),
        Err(e) => {
            tracing::error!(error = %e, "erasure failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the erasure failed: {e}"),
            )
        }
    }
}
