//! Run and review routes: `POST /api/runs`, `GET /api/runs/{id}`, `GET /api/reviews`,
//! `GET /api/reviews/{id}` and `POST /api/reviews/{id}/approve|reject`, on the server's runner.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path as UrlPath, Query};
use axum::response::{IntoResponse, Response};
use custos_executor::journal::{ReviewStatus, ReviewTask};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::json;

use super::json_error;
use crate::runs::{Runner, spawn_drive};
use crate::start::ApiState;

fn status_of(e: &custos_executor::Error) -> StatusCode {
    use custos_executor::Error as E;
    match e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) => StatusCode::CONFLICT,
        E::Denied(_) => StatusCode::FORBIDDEN,
        E::Input { .. } | E::Workflow(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The server's runner, or the 503 saying the executor is off: an extractor, so every run and
/// review route starts from it.
pub(crate) struct Deployed(Arc<Runner>);

impl FromRequestParts<Arc<ApiState>> for Deployed {
    type Rejection = Response;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        state.runner.clone().map(Deployed).ok_or_else(|| {
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the executor is off: set `[executor] workflows` (or `custos serve --workflows DIR`)",
            )
        })
    }
}

/// `POST /api/runs`: starts a run of a deployed workflow (202), or answers with the run a
/// repeated idempotency key started (200).
pub(crate) async fn start_run(Deployed(runner): Deployed, body: Bytes) -> Response {
    let req: custos_api::StartRun = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be a JSON object with `workflow`, `input` and optionally `idempotency_key` and `started_by`: {e}"
                ),
            );
        }
    };
    let Some((text, file)) = runner.workflows.get(&req.workflow) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!(
                "no deployed workflow `{}`; deployed: {}",
                req.workflow,
                runner
                    .workflows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    let by = req.started_by.unwrap_or_else(|| "automation".into());
    match runner
        .executor
        .start(text, file, req.input, req.idempotency_key, &by)
        .await
    {
        Ok(s) => {
            if !s.existing {
                spawn_drive(&runner, s.run_id.clone());
            }
            let code = if s.existing {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let answer = custos_api::Started {
                status: if s.existing { "existing" } else { "started" }.into(),
                run_id: s.run_id,
                existing: s.existing,
            };
            (code, axum::Json(answer)).into_response()
        }
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

/// `GET /api/runs/{id}`: the run's journaled state.
pub(crate) async fn get_run(Deployed(runner): Deployed, UrlPath(id): UrlPath<String>) -> Response {
    lookup(runner.executor.journal().run(&id), || {
        format!("no run `{id}`")
    })
}

/// A journal lookup as a response: the record, a 404 saying what is missing, or the error.
fn lookup<T: serde::Serialize>(
    found: custos_executor::Result<Option<T>>,
    missing: impl FnOnce() -> String,
) -> Response {
    match found {
        Ok(Some(t)) => axum::Json(t).into_response(),
        Ok(None) => json_error(StatusCode::NOT_FOUND, missing()),
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ReviewQuery {
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/reviews[?status=pending|all]`: pending tasks, most urgent first.
pub(crate) async fn list_reviews(
    Deployed(runner): Deployed,
    Query(q): Query<ReviewQuery>,
) -> Response {
    let tasks = match q.status.as_deref().unwrap_or("pending") {
        "pending" => runner.executor.pending_reviews(),
        "all" => runner.executor.journal().reviews(),
        other => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{other}`; use pending or all"),
            );
        }
    };
    match tasks {
        Ok(t) => axum::Json(custos_api::Reviews {
            reviews: t.into_iter().map(review_task).collect(),
        })
        .into_response(),
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

/// `GET /api/reviews/{id}`.
pub(crate) async fn get_review(
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let found = runner.executor.journal().review(&id);
    lookup(found.map(|t| t.map(review_task)), || {
        format!("no review task `{id}`")
    })
}

/// A journaled review task as the API answers it: the field-for-field conversion is written out
/// so that a change to either type is a compile error here, not a silently missing field.
fn review_task(t: ReviewTask) -> custos_api::ReviewTask {
    let status = match t.status {
        ReviewStatus::Pending => "pending",
        ReviewStatus::Approved => "approved",
        ReviewStatus::Rejected => "rejected",
        ReviewStatus::TimedOut => "timed_out",
    };
    let ReviewTask {
        id,
        run_id,
        workflow,
        step,
        queue,
        priority,
        created_ms,
        due_ms,
        status: _,
        context,
        reviewer,
        reason,
        decided_ms,
        audit_seq,
    } = t;
    custos_api::ReviewTask {
        id,
        run_id,
        workflow,
        step,
        queue,
        priority,
        created_ms,
        due_ms,
        status: status.to_string(),
        context,
        reviewer,
        reason,
        decided_ms,
        audit_seq,
    }
}

async fn decide(runner: Arc<Runner>, id: String, body: Bytes, approve: bool) -> Response {
    let req: custos_api::ReviewDecision = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("body must be a JSON object with `reviewer` and `reason`: {e}"),
            );
        }
    };
    if req.reviewer.trim().is_empty() || req.reason.trim().is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`reviewer` and `reason` must not be empty",
        );
    }
    match runner
        .executor
        .decide_review(&id, &req.reviewer, approve, &req.reason)
        .await
    {
        Ok(d) => {
            spawn_drive(&runner, d.task.run_id.clone());
            axum::Json(json!({
                "task": review_task(d.task),
                "decision": d.decision,
                "audit_seq": d.audit_seq,
            }))
            .into_response()
        }
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

/// `POST /api/reviews/{id}/approve` with `{"reviewer", "reason"}`.
pub(crate) async fn approve(
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(runner, id, body, true).await
}

/// `POST /api/reviews/{id}/reject` with `{"reviewer", "reason"}`.
pub(crate) async fn reject(
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(runner, id, body, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_tasks_answer_what_the_journal_holds() {
        for status in [
            ReviewStatus::Pending,
            ReviewStatus::Approved,
            ReviewStatus::Rejected,
            ReviewStatus::TimedOut,
        ] {
            let task = ReviewTask {
                id: "r-1".into(),
                run_id: "run-1".into(),
                workflow: "invoice".into(),
                step: "review".into(),
                queue: "ap".into(),
                priority: "high".into(),
                created_ms: 1,
                due_ms: 2,
                status,
                context: json!({"confidence": 0.5}),
                reviewer: Some("ana".into()),
                reason: None,
                decided_ms: Some(3),
                audit_seq: Some(4),
            };
            let journal = serde_json::to_value(&task).unwrap();
            let api = serde_json::to_value(review_task(task)).unwrap();
            assert_eq!(api, journal, "{status:?}");
        }
    }
}
