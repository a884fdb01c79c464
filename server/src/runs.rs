//! The reference executor inside the server: runs started by events (`POST /api/runs`), their
//! state (`GET /api/runs/{id}`), and human review (`GET /api/reviews`,
//! `POST /api/reviews/{id}/approve|reject`).
//!
//! The server runs the workflows of its `[executor] workflows` directory, journals them in
//! `DATA/executor/journal.redb`, resumes unfinished runs at start, times out overdue reviews
//! every second, and sends the runs' spans to its own OTLP/HTTP receiver unless `[executor] otlp`
//! names another collector.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};
use custos_policy::engine::Engine;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::config::ExecutorSettings;
use crate::{ApiState, Error, Result, json_error};

/// The executor and the workflows it may run.
pub struct Runner {
    /// The executor.
    pub executor: Arc<Executor>,
    /// Deployed workflows by name: (definition text, file).
    pub workflows: BTreeMap<String, (String, String)>,
}

/// Reads and validates every `*.yaml`/`*.yml` definition of `dir`; any invalid one is an error.
pub fn load_workflows(dir: &Path) -> Result<BTreeMap<String, (String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "cannot read workflow directory `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut out = BTreeMap::new();
    for p in paths {
        let w = custos_executor::workflow::load(&p).map_err(|e| Error::Config(e.to_string()))?;
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::Config(format!("cannot read `{}`: {e}", p.display())))?;
        if let Some((_, other)) = out.insert(w.file.name.clone(), (text, p.display().to_string())) {
            return Err(Error::Config(format!(
                "workflow `{}` is defined twice: `{other}` and `{}`",
                w.file.name,
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Opens the executor when workflows are configured.
pub fn open(
    settings: &ExecutorSettings,
    data_dir: &Path,
    engine: Option<Engine>,
    otlp_http: SocketAddr,
) -> Result<Option<Arc<Runner>>> {
    let Some(dir) = &settings.workflows else {
        return Ok(None);
    };
    let workflows = load_workflows(dir)?;
    let endpoint = settings
        .otlp
        .clone()
        .unwrap_or_else(|| format!("http://{otlp_http}"));
    let telemetry = Telemetry::otlp(&endpoint, "custos-executor")
        .map_err(|e| Error::Config(format!("`executor.otlp`: {e}")))?;
    let executor = Executor::open(ExecutorOptions {
        data_dir: data_dir.to_path_buf(),
        engine: engine.map(Arc::new),
        telemetry,
        principal: "executor".into(),
    })
    .map_err(Error::Executor)?;
    Ok(Some(Arc::new(Runner {
        executor,
        workflows,
    })))
}

/// Resumes unfinished runs, then times out overdue reviews every second, until `stop`.
pub async fn background(runner: Arc<Runner>, stop: impl std::future::Future<Output = ()>) {
    let work = async {
        match custos_executor::batch::resume(&runner.executor, 16).await {
            Ok(s) if !s.runs.is_empty() => {
                tracing::info!(runs = s.runs.len(), "resumed unfinished runs");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot resume runs"),
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match runner
                .executor
                .expire_reviews(custos_executor::now_ms())
                .await
            {
                Ok(moved) => {
                    for id in moved {
                        spawn_drive(&runner, id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot time out reviews"),
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = work => {}
    }
}

fn spawn_drive(runner: &Arc<Runner>, run_id: String) {
    let ex = runner.executor.clone();
    tokio::spawn(async move {
        if let Err(e) = ex.drive(&run_id).await {
            tracing::error!(run = %run_id, error = %e, "run failed to progress");
        }
    });
}

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

fn runner(state: &ApiState) -> std::result::Result<Arc<Runner>, Box<Response>> {
    state.runner.clone().ok_or_else(|| {
        Box::new(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the executor is off: set `[executor] workflows` (or `custos serve --workflows DIR`)",
        ))
    })
}

/// `POST /api/runs`: starts a run of a deployed workflow (202), or answers with the run a
/// repeated idempotency key started (200).
pub(crate) async fn start_run(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let runner = match runner(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
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
pub(crate) async fn get_run(
    State(state): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let runner = match runner(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
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
    State(state): State<Arc<ApiState>>,
    Query(q): Query<ReviewQuery>,
) -> Response {
    let runner = match runner(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
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
    match tasks {
        Ok(t) => axum::Json(json!({ "reviews": t })).into_response(),
        Err(e) => json_error(status_of(&e), e.to_string()),
    }
}

/// `GET /api/reviews/{id}`.
pub(crate) async fn get_review(
    State(state): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let runner = match runner(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    lookup(runner.executor.journal().review(&id), || {
        format!("no review task `{id}`")
    })
}

async fn decide(state: Arc<ApiState>, id: String, body: Bytes, approve: bool) -> Response {
    let runner = match runner(&state) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
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
                "task": d.task,
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
    State(state): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(state, id, body, true).await
}

/// `POST /api/reviews/{id}/reject` with `{"reviewer", "reason"}`.
pub(crate) async fn reject(
    State(state): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    decide(state, id, body, false).await
}
