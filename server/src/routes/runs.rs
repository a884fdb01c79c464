//! Run and review routes: `POST /api/runs`, `GET /api/runs/{id}`, `GET /api/reviews`,
//! `GET /api/reviews/{id}` and `POST /api/reviews/{id}/approve|reject`, on the server's runner.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use custos_executor::journal::{ReviewStatus, ReviewTask};
use custos_governance::access::{self, Operation};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::json;

use super::json_error;
use crate::auth::Caller;
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
/// repeated idempotency key started (200). The caller, asking for `start_run` on the workflow,
/// is who started it.
#[utoipa::path(
    post,
    path = "/api/runs",
    tag = "runs",
    request_body = custos_api::StartRun,
    responses(
        (status = 202, description = "A new run started", body = custos_api::Started),
        (status = 200, description = "The run a repeated idempotency key started", body = custos_api::Started),
        (status = 400, description = "Not a start request, input the workflow refuses, or `started_by` naming someone else", body = custos_api::ErrorBody),
        (status = 404, description = "No such deployed workflow", body = custos_api::ErrorBody),
        (status = 409, description = "The idempotency key started a run with other input", body = custos_api::ErrorBody),
        (status = 503, description = "The executor is off (no `[executor] workflows`)", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn start_run(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Deployed(runner): Deployed,
    body: Bytes,
) -> Response {
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
    let workflows = runner.workflows();
    let Some((text, file)) = workflows.get(&req.workflow) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!(
                "no deployed workflow `{}`; deployed: {}",
                req.workflow,
                workflows.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    };
    if let Some(r) = caller.refuse_named("started_by", req.started_by.as_deref(), "starts a run") {
        return r;
    }
    let op = Operation::read("start_run", "POST /api/runs")
        .on(access::workflow(&req.workflow))
        .writing();
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    let by = caller.uid().to_string();
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

/// `GET /api/runs/{id}`: the run's journaled state, for callers who may `read_runs` of its
/// workflow.
#[utoipa::path(
    get,
    path = "/api/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's journaled state, redacted", body = serde_json::Value),
        (status = 404, description = "No such run", body = custos_api::ErrorBody),
        (status = 503, description = "The executor is off (no `[executor] workflows`)", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn get_run(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let found = runner.executor.journal().run(&id);
    if let Ok(Some(run)) = &found {
        let op = Operation::read("read_runs", format!("GET /api/runs/{id}"))
            .on(access::workflow(&run.workflow));
        if let Err(r) = state.allow(&caller, op).await {
            return r;
        }
    } else {
        // Whether a run exists is itself something to be allowed to know.
        let op =
            Operation::read("read_runs", format!("GET /api/runs/{id}")).on(access::workflow("?"));
        if let Err(r) = state.allow(&caller, op).await {
            return r;
        }
    }
    lookup(&state, found, || format!("no run `{id}`"))
}

/// `t` as JSON with the redaction rules applied: the journal keeps the inputs a run needs to
/// resume, the API serves them redacted like the spans.
fn redacted<T: serde::Serialize>(state: &ApiState, t: T) -> Response {
    match serde_json::to_value(t) {
        Ok(mut v) => {
            state.redactor.json(&mut v);
            axum::Json(v).into_response()
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A journal lookup as a response: the record (redacted), a 404 saying what is missing, or the
/// error.
fn lookup<T: serde::Serialize>(
    state: &ApiState,
    found: custos_executor::Result<Option<T>>,
    missing: impl FnOnce() -> String,
) -> Response {
    match found {
        Ok(Some(t)) => redacted(state, t),
        Ok(None) => json_error(StatusCode::NOT_FOUND, missing()),
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewQuery {
    /// `pending` (default) or `all`.
    #[serde(default)]
    status: Option<String>,
}

/// The operation of reading review task `t` (its entity carries the queue and who asked).
fn read_review(runner: &Runner, t: &ReviewTask, route: String) -> Operation {
    let started_by = runner
        .executor
        .journal()
        .run(&t.run_id)
        .ok()
        .flatten()
        .map(|r| r.started_by)
        .unwrap_or_default();
    Operation::read("read_review", route)
        .on(custos_executor::run::review_uid(&t.id))
        .with_entities(vec![custos_executor::run::review_entity(t, &started_by)])
}

/// `GET /api/reviews[?status=pending|all]`: pending tasks, most urgent first; only the tasks
/// the caller may `read_review` (a reviewer sees the queues it reviews).
#[utoipa::path(
    get,
    path = "/api/reviews",
    tag = "runs",
    params(ReviewQuery),
    responses(
        (status = 200, description = "The review tasks the caller may read, most urgent first", body = custos_api::Reviews),
        (status = 400, description = "Unknown `status` or parameters", body = custos_api::ErrorBody),
        (status = 503, description = "The executor is off (no `[executor] workflows`)", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn list_reviews(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Deployed(runner): Deployed,
    q: super::QueryParams<ReviewQuery>,
) -> Response {
    let q = match super::query_params(q, "status") {
        Ok(q) => q,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
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
    let tasks = match tasks {
        Ok(t) => t,
        Err(e) => return json_error(status_of(&e), e.to_string()),
    };
    let engine = state.access.engine.current();
    let visible = tasks
        .into_iter()
        .filter(|t| {
            let op = read_review(&runner, t, "GET /api/reviews".into());
            access::decide(&engine, caller.uid(), &op).allowed()
        })
        .map(review_task)
        .collect();
    redacted(&state, custos_api::Reviews { reviews: visible })
}

/// `GET /api/reviews/{id}`, for callers who may `read_review` it.
#[utoipa::path(
    get,
    path = "/api/reviews/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The review task's id")),
    responses(
        (status = 200, description = "The review task, redacted", body = custos_api::ReviewTask),
        (status = 404, description = "No such review task", body = custos_api::ErrorBody),
        (status = 503, description = "The executor is off (no `[executor] workflows`)", body = custos_api::ErrorBody),
    )
)]
pub(crate) async fn get_review(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let found = runner.executor.journal().review(&id);
    let route = format!("GET /api/reviews/{id}");
    let op = match &found {
        Ok(Some(t)) => read_review(&runner, t, route),
        // No such task: asked about a task of no queue, so only a role may learn that.
        _ => Operation::read("read_review", route)
            .on(custos_executor::run::review_uid(&id))
            .with_entities(vec![json!({
                "uid": {"type": "Custos::ReviewTask", "id": id},
                "attrs": {
                    "workflow": {"__entity": {"type": "Custos::Workflow", "id": ""}},
                    "reviewers": {"__entity": {"type": "Custos::Team", "id": ""}},
                },
                "parents": [],
            })]),
    };
    if let Err(r) = state.allow(&caller, op).await {
        return r;
    }
    lookup(&state, found.map(|t| t.map(review_task)), || {
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

/// A review decision by the caller: the reviewer is the authenticated person, and the
/// `approve_review` policies (assigned team, four eyes) decide, recorded by the executor.
async fn decide(
    caller: Caller,
    runner: Arc<Runner>,
    id: String,
    body: Bytes,
    approve: bool,
) -> Response {
    let req: custos_api::ReviewDecision = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("body must be a JSON object with `reason`: {e}"),
            );
        }
    };
    if req.reason.trim().is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "`reason` must not be empty");
    }
    let Some(reviewer) = caller.user_name() else {
        return json_error(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` may not `approve_review`: reviews are decided by people (`Custos::User`), not services",
                caller.uid()
            ),
        );
    };
    if let Some(r) = caller.refuse_named("reviewer", req.reviewer.as_deref(), "reviews") {
        return r;
    }
    match runner
        .executor
        .decide_review(&id, &reviewer, approve, &req.reason)
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

/// What an approval or a rejection answers (described once for both).
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    clippy::large_enum_variant,
    reason = "never built: it only describes the answers in the API document"
)]
enum DecisionAnswers {
    /// The decision, recorded
    #[response(status = 200)]
    Decided(custos_api::Decided),
    /// Not a decision, an empty reason, or a reviewer naming someone else
    #[response(status = 400)]
    BadRequest(custos_api::ErrorBody),
    /// No such review task
    #[response(status = 404)]
    NotFound(custos_api::ErrorBody),
    /// The task is already decided
    #[response(status = 409)]
    Conflict(custos_api::ErrorBody),
    /// The executor is off (no `[executor] workflows`)
    #[response(status = 503)]
    Unavailable(custos_api::ErrorBody),
}

/// `POST /api/reviews/{id}/approve` with `{"reason"}`.
#[utoipa::path(
    post,
    path = "/api/reviews/{id}/approve",
    tag = "runs",
    params(("id" = String, Path, description = "The review task's id")),
    request_body = custos_api::ReviewDecision,
    responses(DecisionAnswers)
)]
pub(crate) async fn approve(
    caller: Caller,
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(caller, runner, id, body, true).await
}

/// `POST /api/reviews/{id}/reject` with `{"reason"}`.
#[utoipa::path(
    post,
    path = "/api/reviews/{id}/reject",
    tag = "runs",
    params(("id" = String, Path, description = "The review task's id")),
    request_body = custos_api::ReviewDecision,
    responses(DecisionAnswers)
)]
pub(crate) async fn reject(
    caller: Caller,
    Deployed(runner): Deployed,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(caller, runner, id, body, false).await
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
