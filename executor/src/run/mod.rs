//! The run loop: a run moves step by step through its workflow, journaling each step before and
//! after it acts.
//!
//! - **model** steps ask a model (with cascade, cache and canary prompt routing) and hold their
//!   decision span until the decision is final.
//! - **route** steps jump on conditions over the input and earlier outputs; **transform** steps
//!   shape data (`set: {field: path}`).
//! - **connector** steps are authorized (`execute`, when the connector has side effects), their
//!   intent journaled, the call made with the idempotency key `RUN/STEP`, and the result
//!   journaled. A deny routes to the workflow's human step when the run has no human approval
//!   yet and the deny is a default deny or its advice names a human; otherwise the run fails.
//! - **human** steps open a review task and park the run until a reviewer decides (authorized as
//!   `approve_review` and audited) or the task times out (`on_timeout`: `escalate` or a step).
//!   Approval continues the run (with `human_approved`); rejection escalates it.
//! - Attempts are bounded by the step's timeout and retried with its retry policy; a step that
//!   fails for good fails the run, which then runs the compensations of its completed effects in
//!   reverse order (saga): outcome `compensated`, or `failure` when there was nothing to undo.
//! - Steps named only as another step's `compensate` never run in the normal flow.
//!
//! Outcomes: `success`, `failure`, `compensated`, `escalated` (handed to people: a rejected
//! review or an escalated timeout).
//!
//! The loop and what every step kind shares (the record, its journaling, attempts with
//! timeouts and retries, authorization, finishing a run) live here; each step kind has its own
//! module: `route` (route and transform steps), `model`, `connector`, `human` (review
//! tasks and their decisions) and `compensate` (failing a run and its saga compensation).

mod compensate;
mod connector;
mod human;
mod model;
mod route;

pub use human::{review_entity, review_uid, starting_user};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_audit::AuditLog;
use custos_policy::engine::{AuthzRequest, Decision};
use custos_policy::live::Live;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::connector::Connectors;
use crate::journal::{Journal, ReviewTask, RunRecord, RunStatus, SpanRecord, Write};
use crate::model::sha256_u64;
use crate::telemetry::{Telemetry, root_span_id, span_id, trace_id};
use crate::workflow::{self, StepFile, Workflow};
use crate::{Error, Result, StepError, now_ms};

/// How to open an executor.
#[derive(Clone)]
pub struct ExecutorOptions {
    /// The data directory: `executor/journal.redb`, `connectors/`, `audit/` live under it.
    pub data_dir: PathBuf,
    /// The policy engine; `None` denies every side effect (fail closed).
    pub engine: Option<Live>,
    /// Where spans go.
    pub telemetry: Telemetry,
    /// The executor's principal (`Custos::Service`).
    pub principal: String,
    /// What the audit log does to every record's context before chaining it (the server's
    /// redaction rules); `None` keeps contexts as they are.
    pub scrub: Option<custos_audit::Scrub>,
}

impl std::fmt::Debug for ExecutorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorOptions")
            .field("data_dir", &self.data_dir)
            .field("principal", &self.principal)
            .field("scrub", &self.scrub.is_some())
            .finish_non_exhaustive()
    }
}

/// The answer to a start request.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The run.
    pub run_id: String,
    /// The idempotency key had started this run before: nothing new was started.
    pub existing: bool,
}

/// A reviewer's decision.
#[derive(Debug, Clone)]
pub struct ReviewDecision {
    /// The task after the decision.
    pub task: ReviewTask,
    /// The policy decision on the reviewer's request.
    pub decision: Decision,
    /// The audit record's sequence number.
    pub audit_seq: u64,
}

/// The executor.
pub struct Executor {
    journal: Journal,
    connectors: Connectors,
    engine: Option<Live>,
    audit: Arc<AuditLog>,
    telemetry: Telemetry,
    http: reqwest::Client,
    principal: String,
    definitions: std::sync::Mutex<HashMap<String, Arc<Workflow>>>,
    start_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("journal", &self.journal)
            .finish()
    }
}

/// The journal file of a data directory.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("executor").join("journal.redb")
}

impl Executor {
    /// Opens the journal and the connectors of `options.data_dir`.
    pub fn open(options: ExecutorOptions) -> Result<Arc<Self>> {
        let journal = Journal::open(&journal_path(&options.data_dir))?;
        let mut audit = AuditLog::open(&options.data_dir.join("audit"))?;
        if let Some(scrub) = options.scrub.clone() {
            audit = audit.scrubbing(scrub);
        }
        let audit = Arc::new(audit);
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Telemetry(format!("cannot build an HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            journal,
            connectors: Connectors::new(&options.data_dir.join("connectors"), http.clone()),
            engine: options.engine,
            audit,
            telemetry: options.telemetry,
            http,
            principal: options.principal,
            definitions: std::sync::Mutex::default(),
            start_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The connectors.
    pub fn connectors(&self) -> &Connectors {
        &self.connectors
    }

    /// The telemetry sink.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn definition(&self, hash: &str) -> Result<Arc<Workflow>> {
        if let Ok(defs) = self.definitions.lock()
            && let Some(w) = defs.get(hash)
        {
            return Ok(w.clone());
        }
        let text = self
            .journal
            .definition(hash)?
            .ok_or_else(|| Error::Journal(format!("definition `{hash}` is missing")))?;
        let w = Arc::new(workflow::parse(&text, &format!("journal:{hash}"))?);
        if let Ok(mut defs) = self.definitions.lock() {
            defs.insert(hash.to_string(), w.clone());
        }
        Ok(w)
    }

    /// Starts a run of the workflow whose definition is `text` (validated), with `input`.
    ///
    /// A repeated `key` answers with the run it started the first time. The run is journaled
    /// but not driven: call [`Executor::drive`].
    pub async fn start(
        &self,
        text: &str,
        file: &str,
        input: Value,
        key: Option<String>,
        started_by: &str,
    ) -> Result<Started> {
        let w = workflow::parse(text, file)?;
        check_input(&w, &input)?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        let _guard = self.start_lock.lock().await;
        if let Some(k) = &key
            && let Some(run_id) = self.journal.run_for_key(k)?
        {
            return Ok(Started {
                run_id,
                existing: true,
            });
        }
        let started_ms = now_ms();
        let run_id = new_run_id(&w, key.as_deref(), started_ms, &input);
        let record = new_record(
            &w,
            &run_id,
            &hash,
            input,
            started_by,
            key.clone(),
            started_ms,
        );
        let mut writes = vec![
            Write::Definition {
                hash: hash.clone(),
                text: text.to_string(),
            },
            Write::Run(Box::new(record)),
        ];
        if let Some(k) = key {
            writes.push(Write::Key {
                key: k,
                run_id: run_id.clone(),
            });
        }
        self.journal.commit(writes).await?;
        if let Ok(mut defs) = self.definitions.lock() {
            defs.insert(hash, Arc::new(w));
        }
        Ok(Started {
            run_id,
            existing: false,
        })
    }

    /// Runs `run_id` until it finishes or waits for a review; returns its record.
    pub async fn drive(&self, run_id: &str) -> Result<RunRecord> {
        let mut r = self
            .journal
            .run(run_id)?
            .ok_or_else(|| Error::NotFound(format!("no run `{run_id}`")))?;
        let w = self.definition(&r.definition)?;
        loop {
            match r.status {
                RunStatus::Finished | RunStatus::Waiting => return Ok(r),
                RunStatus::Compensating => {
                    self.compensate(&w, &mut r).await?;
                    continue;
                }
                RunStatus::Running => {}
            }
            let steps = &w.file.steps;
            let Some(step) = steps.get(r.cursor) else {
                self.finish(&mut r, "success").await?;
                continue;
            };
            if compensate::is_compensation_only(&w, r.cursor) {
                r.cursor += 1;
                continue;
            }
            match step.kind.as_str() {
                "route" => self.route_step(&w, step, &mut r).await?,
                "transform" => self.transform_step(step, &mut r).await?,
                "model" => self.model_step(&w, &mut r).await?,
                "connector" => self.connector_step(&w, &mut r).await?,
                "human" => self.human_step(&w, &mut r).await?,
                other => {
                    // Validation admits no other kind; a journal from a newer version might.
                    let e = StepError::fatal(
                        "invalid_input",
                        format!("step `{}` has unknown kind `{other}`", step.id),
                    );
                    self.fail(&mut r, &e).await?;
                }
            }
        }
    }

    async fn save(&self, r: &RunRecord) -> Result<()> {
        self.journal
            .commit(vec![Write::Run(Box::new(r.clone()))])
            .await
    }

    fn base_attributes(&self, r: &RunRecord, step: &StepFile) -> BTreeMap<String, Value> {
        let mut a = BTreeMap::new();
        a.insert("automation.workflow".into(), json!(r.workflow));
        a.insert(
            "automation.workflow.version".into(),
            json!(r.workflow_version),
        );
        a.insert("automation.run_id".into(), json!(r.run_id));
        a.insert("automation.step".into(), json!(step.id));
        a.insert("automation.step.kind".into(), json!(step.kind));
        a
    }

    /// Runs attempts of the cursor step until one succeeds or the retry policy gives up; failed
    /// attempts are emitted as error spans.
    async fn attempts<F, Fut>(
        &self,
        w: &Workflow,
        r: &mut RunRecord,
        mut f: F,
    ) -> std::result::Result<(Value, i64, u32), StepError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Value, StepError>>,
    {
        let idx = r.cursor;
        let step = &w.file.steps[idx];
        let timeout = w.timeouts[idx];
        let policy = &w.retries[idx];
        loop {
            let attempt = r.attempt;
            let started = now_ms();
            let result = match tokio::time::timeout(timeout, f(attempt)).await {
                Ok(r) => r,
                Err(_) => Err(StepError::retryable(
                    "timeout",
                    format!(
                        "step `{}` timed out after {} ms",
                        step.id,
                        timeout.as_millis()
                    ),
                )),
            };
            match result {
                Ok(v) => return Ok((v, started, attempt)),
                Err(e) => {
                    let mut attrs = self.base_attributes(r, step);
                    attrs.insert("automation.attempt".into(), json!(attempt));
                    attrs.insert("automation.error.type".into(), json!(e.kind));
                    if let Some(c) = &step.connector {
                        attrs.insert("automation.connector".into(), json!(c));
                    }
                    self.telemetry.emit(
                        &r.run_id,
                        &SpanRecord {
                            name: step.id.clone(),
                            span_id: span_id(&r.run_id, &step.id, attempt),
                            start_ms: started,
                            end_ms: now_ms(),
                            attributes: attrs,
                            error: Some(e.to_string()),
                        },
                    );
                    r.steps_run += 1;
                    let give_up = !e.retryable || policy.non_retryable_errors.contains(&e.kind);
                    let delay = if give_up {
                        None
                    } else {
                        policy.delay_before(attempt + 1)
                    };
                    let Some(delay) = delay else { return Err(e) };
                    r.attempt += 1;
                    r.retries += 1;
                    self.save(r)
                        .await
                        .map_err(|j| StepError::fatal("journal", j.to_string()))?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The most recent model decision of the run: (step id, output).
    fn last_decision<'a>(w: &Workflow, r: &'a RunRecord) -> Option<(String, &'a Value)> {
        w.file
            .steps
            .iter()
            .filter(|s| s.kind == "model" && s.task.as_deref() != Some("generate"))
            .filter_map(|s| r.outputs.get(&s.id).map(|o| (s.id.clone(), o)))
            .next_back()
    }

    async fn authorize(&self, req: AuthzRequest) -> Result<(Decision, u64)> {
        let engine = self.engine.as_ref().map(Live::current);
        let audit = self.audit.clone();
        let done = tokio::task::spawn_blocking(move || match engine {
            Some(e) => custos_governance::authorize_and_record(&e, &audit, &req),
            None => custos_governance::deny_without_policies(&audit, &req),
        })
        .await
        .map_err(|e| Error::Journal(format!("authorization task failed: {e}")))??;
        Ok((done.0, done.1.seq))
    }

    async fn finish(&self, r: &mut RunRecord, outcome: &str) -> Result<()> {
        let outcome = r.outcome.clone().unwrap_or_else(|| outcome.to_string());
        r.outcome = Some(outcome.clone());
        r.status = RunStatus::Finished;
        let end = now_ms();
        r.finished_ms = Some(end);
        let pending = r.pending_decision.take();
        self.save(r).await?;
        if let Some(s) = pending {
            self.telemetry.emit(&r.run_id, &s);
        }
        let mut attrs = BTreeMap::new();
        attrs.insert("automation.workflow".into(), json!(r.workflow));
        attrs.insert(
            "automation.workflow.version".into(),
            json!(r.workflow_version),
        );
        attrs.insert("automation.run_id".into(), json!(r.run_id));
        attrs.insert("automation.outcome".into(), json!(outcome));
        attrs.insert("automation.retries".into(), json!(r.retries));
        if r.canary.values().any(|c| *c) {
            attrs.insert("automation.canary".into(), json!(true));
        }
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: r.workflow.clone(),
                span_id: root_span_id(&r.run_id),
                start_ms: r.started_ms,
                end_ms: end,
                attributes: attrs,
                error: (outcome == "failure" || outcome == "compensated")
                    .then(|| r.error.clone().unwrap_or_else(|| outcome.clone())),
            },
        );
        Ok(())
    }
}

/// The id of a new run: from the key when there is one, else from the moment and the input.
fn new_run_id(w: &Workflow, key: Option<&str>, started_ms: i64, input: &Value) -> String {
    match key {
        Some(k) => format!("run-{:016x}", sha256_u64(&[&w.file.name, k])),
        None => format!(
            "run-{:016x}",
            sha256_u64(&[
                &w.file.name,
                &started_ms.to_string(),
                &input.to_string(),
                &format!("{:?}", std::time::Instant::now()),
            ])
        ),
    }
}

/// The journal record of a run about to start, with its canary draws.
fn new_record(
    w: &Workflow,
    run_id: &str,
    hash: &str,
    input: Value,
    started_by: &str,
    key: Option<String>,
    started_ms: i64,
) -> RunRecord {
    let mut canary = BTreeMap::new();
    for s in &w.file.steps {
        if let Some(p) = s.canary_percent {
            let draw = sha256_u64(&[run_id, &s.id, "canary"]) % 10_000;
            canary.insert(s.id.clone(), (draw as f64) < p * 100.0);
        }
    }
    RunRecord {
        run_id: run_id.to_string(),
        workflow: w.file.name.clone(),
        workflow_version: w.file.version.clone(),
        definition: hash.to_string(),
        input,
        started_by: started_by.to_string(),
        idempotency_key: key,
        status: RunStatus::Running,
        outcome: None,
        started_ms,
        finished_ms: None,
        cursor: 0,
        attempt: 1,
        intent: None,
        outputs: BTreeMap::new(),
        effects: Vec::new(),
        human_approved: false,
        resume_at: None,
        review: None,
        trace_id: trace_id(run_id),
        pending_decision: None,
        steps_run: 0,
        retries: 0,
        error: None,
        canary,
        erased_ms: None,
    }
}

/// Checks an input against the workflow's input schema.
pub fn check_input(w: &Workflow, input: &Value) -> Result<()> {
    let Value::Object(o) = input else {
        return Err(Error::Input {
            workflow: w.file.name.clone(),
            problems: "the input must be a JSON object".into(),
        });
    };
    let mut problems = Vec::new();
    for (field, ty) in &w.file.input {
        match o.get(field) {
            None => problems.push(format!("field `{field}` ({ty}) is missing")),
            Some(v) => {
                let ok = match ty.as_str() {
                    "string" => v.is_string(),
                    "number" => v.is_number(),
                    "integer" => v.is_i64() || v.is_u64(),
                    "boolean" => v.is_boolean(),
                    "object" => v.is_object(),
                    _ => v.is_array(),
                };
                if !ok {
                    problems.push(format!("field `{field}` must be a {ty}, not `{v}`"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Input {
            workflow: w.file.name.clone(),
            problems: problems.join("; "),
        })
    }
}
