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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use custos_audit::AuditLog;
use custos_policy::engine::{AuthzRequest, Decision, Engine};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::connector::{Call, Connectors};
use crate::journal::{
    Effect, Intent, Journal, ReviewStatus, ReviewTask, RunRecord, RunStatus, SpanRecord, Write,
};
use crate::model::{Answer, Question, sha256_u64 as hash64};
use crate::telemetry::{Telemetry, root_span_id, span_id, trace_id};
use crate::workflow::{self, StepFile, Workflow};
use crate::{Error, Result, StepError, crash_point, now_ms};

/// How to open an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The data directory: `executor/journal.redb`, `connectors/`, `audit/` live under it.
    pub data_dir: PathBuf,
    /// The policy engine; `None` denies every side effect (fail closed).
    pub engine: Option<Arc<Engine>>,
    /// Where spans go.
    pub telemetry: Telemetry,
    /// The executor's principal (`Custos::Service`).
    pub principal: String,
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
    engine: Option<Arc<Engine>>,
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

fn entity(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": format!("Custos::{ty}"), "id": id}})
}

fn decimal(x: f64) -> String {
    format!("{:.4}", if x.is_finite() { x } else { 0.0 })
}

impl Executor {
    /// Opens the journal and the connectors of `options.data_dir`.
    pub fn open(options: ExecutorOptions) -> Result<Arc<Self>> {
        let journal = Journal::open(&journal_path(&options.data_dir))?;
        let audit = Arc::new(AuditLog::open(&options.data_dir.join("audit"))?);
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
        let run_id = match &key {
            Some(k) => format!("run-{:016x}", hash64(&[&w.file.name, k])),
            None => format!(
                "run-{:016x}",
                hash64(&[
                    &w.file.name,
                    &started_ms.to_string(),
                    &input.to_string(),
                    &format!("{:?}", std::time::Instant::now()),
                ])
            ),
        };
        let mut canary = BTreeMap::new();
        for s in &w.file.steps {
            if let Some(p) = s.canary_percent {
                let draw = hash64(&[&run_id, &s.id, "canary"]) % 10_000;
                canary.insert(s.id.clone(), (draw as f64) < p * 100.0);
            }
        }
        let record = RunRecord {
            run_id: run_id.clone(),
            workflow: w.file.name.clone(),
            workflow_version: w.file.version.clone(),
            definition: hash.clone(),
            input,
            started_by: started_by.to_string(),
            idempotency_key: key.clone(),
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
            trace_id: trace_id(&run_id),
            pending_decision: None,
            steps_run: 0,
            retries: 0,
            error: None,
            canary,
        };
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
            if is_compensation_only(&w, r.cursor) {
                r.cursor += 1;
                continue;
            }
            match step.kind.as_str() {
                "route" => {
                    let target = route(&w, step, &r);
                    r.outputs
                        .insert(step.id.clone(), json!({ "goto": steps[target].id }));
                    r.cursor = target;
                    r.attempt = 1;
                    self.save(&r).await?;
                }
                "transform" => {
                    let mut out = serde_json::Map::new();
                    for (field, path) in &step.set {
                        out.insert(field.clone(), lookup(&r, path).unwrap_or(Value::Null));
                    }
                    r.outputs.insert(step.id.clone(), Value::Object(out));
                    r.cursor += 1;
                    r.attempt = 1;
                    self.save(&r).await?;
                }
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

    async fn ask(
        &self,
        w: &Workflow,
        model_name: &str,
        q: &Question<'_>,
        cache: bool,
    ) -> std::result::Result<(Answer, bool), StepError> {
        let Some(m) = w.file.models.get(model_name) else {
            return Err(StepError::fatal(
                "invalid_input",
                format!("unknown model `{model_name}`"),
            ));
        };
        let key = format!(
            "{}/{}/{}/{}/{:016x}",
            m.model,
            m.version,
            q.prompt_version,
            q.task,
            hash64(&[&q.input.to_string()])
        );
        if cache
            && let Ok(Some(v)) = self.journal.cached(&key)
            && let Some(a) = Answer::from_json(&v)
        {
            return Ok((a, true));
        }
        if let Some(ms) = m.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let a = match m.provider.as_str() {
            "openai" => crate::model::openai(&self.http, m, q).await?,
            _ => crate::model::local(m, q),
        };
        if cache {
            self.journal
                .commit(vec![Write::Cache {
                    key,
                    value: a.to_json(),
                }])
                .await
                .map_err(|e| StepError::retryable("journal", e.to_string()))?;
        }
        Ok((a, false))
    }

    async fn model_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let step = w.file.steps[r.cursor].clone();
        let canary = r.canary.get(&step.id).copied().unwrap_or(false);
        let prompt = if canary {
            step.canary_prompt_version.clone()
        } else {
            step.prompt_version.clone()
        }
        .unwrap_or_default();
        let input = r.input.clone();
        let task = step.task.clone().unwrap_or_default();
        let model = step.model.clone().unwrap_or_default();
        let q = Question {
            task: &task,
            step: &step.id,
            prompt_version: &prompt,
            input: &input,
        };
        let mut extra: Vec<(Answer, bool)> = Vec::new();
        let result = self
            .attempts(w, r, |_| {
                let model = model.clone();
                let step = step.clone();
                async move {
                    let first = self.ask(w, &model, &q, step.cache).await?;
                    match (&step.fallback_model, step.cascade_below) {
                        (Some(big), Some(below)) if first.0.confidence < below => {
                            let second = self.ask(w, big, &q, step.cache).await?;
                            Ok(json!({"final": second.0.to_json(), "cached": second.1,
                                      "first": first.0.to_json(), "first_cached": first.1}))
                        }
                        _ => Ok(json!({"final": first.0.to_json(), "cached": first.1})),
                    }
                }
            })
            .await;
        let (v, started, attempt) = match result {
            Ok(x) => x,
            Err(e) => return self.fail(r, &e).await,
        };
        let (Some(answer), cached) = (
            v.get("final").and_then(Answer::from_json),
            v.get("cached").and_then(Value::as_bool).unwrap_or(false),
        ) else {
            return self
                .fail(
                    r,
                    &StepError::fatal("invalid_response", "unreadable model answer"),
                )
                .await;
        };
        if let Some(first) = v.get("first").and_then(Answer::from_json) {
            extra.push((
                first,
                v.get("first_cached")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ));
        }
        let ended = now_ms();
        let version_of = |name: &str| {
            w.file
                .models
                .values()
                .find(|x| x.model == name)
                .map(|x| x.version.clone())
                .unwrap_or_default()
        };
        let usage = |a: &mut BTreeMap<String, Value>, ans: &Answer, cached: bool| {
            a.insert("gen_ai.request.model".into(), json!(ans.model));
            a.insert("gen_ai.response.model".into(), json!(ans.model));
            a.insert("gen_ai.provider.name".into(), json!(ans.provider));
            a.insert("gen_ai.operation.name".into(), json!("chat"));
            a.insert(
                "automation.model.version".into(),
                json!(version_of(&ans.model)),
            );
            a.insert("automation.prompt.version".into(), json!(prompt));
            a.insert("automation.cache.hit".into(), json!(cached));
            if !cached {
                a.insert("gen_ai.usage.input_tokens".into(), json!(ans.input_tokens));
                a.insert(
                    "gen_ai.usage.output_tokens".into(),
                    json!(ans.output_tokens),
                );
                a.insert("automation.cost_usd".into(), json!(ans.cost_usd));
            } else {
                a.insert("automation.cost_usd".into(), json!(0.0));
            }
        };
        // The cascade's first, smaller call: usage only, not a step of its own.
        for (first, cached) in &extra {
            let mut a = BTreeMap::new();
            a.insert("automation.workflow".into(), json!(r.workflow));
            a.insert("automation.run_id".into(), json!(r.run_id));
            a.insert("automation.cascade".into(), json!("escalated"));
            usage(&mut a, first, *cached);
            self.telemetry.emit(
                &r.run_id,
                &SpanRecord {
                    name: format!("chat {}", first.model),
                    span_id: span_id(&r.run_id, &format!("{}#cascade", step.id), attempt),
                    start_ms: started,
                    end_ms: ended,
                    attributes: a,
                    error: None,
                },
            );
        }
        let mut attrs = self.base_attributes(r, &step);
        usage(&mut attrs, &answer, cached);
        attrs.insert("automation.canary".into(), json!(canary));
        // A draft is not a decision: only classifications and extractions are judged.
        let decides = task != "generate";
        if decides {
            attrs.insert(
                "automation.decision.confidence".into(),
                json!(answer.confidence),
            );
            attrs.insert("automation.decision.outcome".into(), json!(answer.label));
        }
        attrs.insert("automation.attempt".into(), json!(attempt));
        let span = SpanRecord {
            name: step.id.clone(),
            span_id: span_id(&r.run_id, &step.id, attempt),
            start_ms: started,
            end_ms: ended,
            attributes: attrs,
            error: None,
        };
        // A decision waits for its review (if any); a draft is emitted at once.
        let (earlier, now) = if decides {
            (r.pending_decision.replace(span), None)
        } else {
            (None, Some(span))
        };
        let mut out = answer.to_json();
        if let Value::Object(o) = &mut out {
            o.insert("prompt_version".into(), json!(prompt));
            o.insert("canary".into(), json!(canary));
        }
        r.outputs.insert(step.id.clone(), out);
        r.cursor += 1;
        r.attempt = 1;
        r.steps_run += 1;
        self.save(r).await?;
        for s in earlier.iter().chain(now.iter()) {
            self.telemetry.emit(&r.run_id, s);
        }
        Ok(())
    }

    /// The payload a connector step sends: the input, with every transform's fields over it, and
    /// the outputs of earlier steps under `steps`.
    fn payload(w: &Workflow, r: &RunRecord) -> Value {
        let mut p = match &r.input {
            Value::Object(o) => o.clone(),
            _ => serde_json::Map::new(),
        };
        p.remove("expected");
        for s in &w.file.steps {
            if s.kind == "transform"
                && let Some(Value::Object(o)) = r.outputs.get(&s.id)
            {
                for (k, v) in o {
                    p.insert(k.clone(), v.clone());
                }
            }
        }
        p.insert("run_id".into(), json!(r.run_id));
        Value::Object(p)
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
        let engine = self.engine.clone();
        let audit = self.audit.clone();
        let done = tokio::task::spawn_blocking(move || match engine {
            Some(e) => custos_governance::authorize_and_record(&e, &audit, &req),
            None => custos_governance::deny_without_policies(&audit, &req),
        })
        .await
        .map_err(|e| Error::Journal(format!("authorization task failed: {e}")))??;
        Ok((done.0, done.1.seq))
    }

    async fn connector_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let idx = r.cursor;
        let step = w.file.steps[idx].clone();
        let name = step.connector.clone().unwrap_or_default();
        let Some(config) = w.file.connectors.get(&name).cloned() else {
            let e = StepError::fatal("invalid_input", format!("unknown connector `{name}`"));
            return self.fail(r, &e).await;
        };
        // The decision that led to a side effect is final: no review came in between. (A
        // read-only lookup leaves it waiting.)
        if config.side_effects.unwrap_or(true)
            && let Some(s) = r.pending_decision.take()
        {
            self.save(r).await?;
            self.telemetry.emit(&r.run_id, &s);
        }
        let payload = Self::payload(w, r);
        let key = format!("{}/{}", r.run_id, step.id);
        let mut policy_attrs = BTreeMap::new();
        if config.side_effects.unwrap_or(true) && r.intent.is_none() {
            let confidence = Self::last_decision(w, r)
                .and_then(|(_, o)| o.get("confidence").and_then(Value::as_f64))
                .unwrap_or(0.0);
            let amount = payload
                .get("amount_usd")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let req = AuthzRequest {
                principal: json!(format!("Custos::Service::\"{}\"", self.principal)),
                action: json!("Custos::Action::\"execute\""),
                resource: json!(format!("Custos::Connector::\"{name}\"")),
                context: json!({
                    "workflow": entity("Workflow", &r.workflow),
                    "confidence": decimal(confidence),
                    "amount_usd": format!("{:.2}", if amount.is_finite() { amount } else { 0.0 }),
                    "human_approved": r.human_approved,
                }),
                entities: Vec::new(),
            };
            let (d, seq) = self.authorize(req).await?;
            policy_attrs.insert("automation.policy.decision".into(), json!(d.decision));
            policy_attrs.insert(
                "automation.policy.ids".into(),
                json!(d.policy_ids().join(",")),
            );
            policy_attrs.insert("automation.audit.seq".into(), json!(seq));
            if d.decision != "allow" {
                let ids = d.policy_ids().join(", ");
                let advice = d.advice.join("; ");
                let default_deny = d.determining_policies.is_empty() && d.errors.is_empty();
                let names_human = d.advice.iter().any(|a| a.contains("human"));
                // A human step this run went through already is not asked twice.
                let human = match human_step_for(w, idx) {
                    Some(h)
                        if self
                            .journal
                            .review(&format!("{}-{}", r.run_id, w.file.steps[h].id))?
                            .is_none() =>
                    {
                        Some(h)
                    }
                    _ => None,
                };
                let mut attrs = self.base_attributes(r, &step);
                attrs.insert("automation.connector".into(), json!(name));
                attrs.extend(policy_attrs.clone());
                if let (Some(h), false, true) =
                    (human, r.human_approved, default_deny || names_human)
                {
                    r.outputs.insert(
                        step.id.clone(),
                        json!({"policy": {"decision": d.decision, "policies": d.policy_ids(),
                               "advice": d.advice, "audit_seq": seq}}),
                    );
                    r.resume_at = Some(idx);
                    r.cursor = h;
                    r.attempt = 1;
                    self.save(r).await?;
                    attrs.insert("automation.policy.route".into(), json!(w.file.steps[h].id));
                    let now = now_ms();
                    self.telemetry.emit(
                        &r.run_id,
                        &SpanRecord {
                            name: format!("{} (policy)", step.id),
                            span_id: span_id(&r.run_id, &format!("{}#policy", step.id), r.retries),
                            start_ms: now,
                            end_ms: now,
                            attributes: attrs,
                            error: None,
                        },
                    );
                    return Ok(());
                }
                let why = if ids.is_empty() {
                    format!("denied by policy (no policy permits it): {advice}")
                } else {
                    format!("denied by policy `{ids}`: {advice}")
                };
                let e = StepError::fatal("policy_denied", why);
                return self.fail(r, &e).await;
            }
        }
        // The intent, durable before the call.
        crash_point("before_intent", &step.id);
        if r.intent.is_none() {
            r.intent = Some(Intent {
                step: idx,
                attempt: r.attempt,
                key: key.clone(),
                started_ms: now_ms(),
            });
            self.save(r).await?;
        }
        crash_point("after_intent", &step.id);
        let operation = step.operation.clone().unwrap_or_default();
        let run_id = r.run_id.clone();
        let connectors = self.connectors.clone();
        let result = self
            .attempts(w, r, |attempt| {
                let connectors = connectors.clone();
                let (config, name, operation, key, payload, run_id, step_id) = (
                    config.clone(),
                    name.clone(),
                    operation.clone(),
                    key.clone(),
                    payload.clone(),
                    run_id.clone(),
                    step.id.clone(),
                );
                async move {
                    let call = Call {
                        name: &name,
                        config: &config,
                        operation: &operation,
                        key: &key,
                        run_id: &run_id,
                        step: &step_id,
                        attempt,
                        payload: &payload,
                    };
                    match connectors.call(&call).await {
                        // Our key made this effect before (an attempt whose answer was lost).
                        Err(e) if e.kind == "duplicate_key" && e.existing.is_some() => {
                            Ok(e.existing.unwrap_or_default())
                        }
                        other => other,
                    }
                }
            })
            .await;
        crash_point("after_call", &step.id);
        let started = r
            .intent
            .as_ref()
            .map(|i| i.started_ms)
            .unwrap_or_else(now_ms);
        let (output, attempt) = match result {
            Ok((v, _, attempt)) => (v, attempt),
            Err(e) => {
                r.intent = None;
                return self.fail(r, &e).await;
            }
        };
        r.intent = None;
        if step.compensate.is_some() {
            r.effects.push(Effect {
                step: idx,
                key: key.clone(),
                output: output.clone(),
                compensated: false,
            });
        }
        r.outputs.insert(step.id.clone(), output);
        r.cursor += 1;
        r.attempt = 1;
        r.steps_run += 1;
        self.save(r).await?;
        crash_point("after_result", &step.id);
        let mut attrs = self.base_attributes(r, &step);
        attrs.insert("automation.connector".into(), json!(name));
        attrs.insert("automation.connector.operation".into(), json!(operation));
        attrs.insert("automation.idempotency_key".into(), json!(key));
        attrs.insert("automation.attempt".into(), json!(attempt));
        attrs.extend(policy_attrs);
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: step.id.clone(),
                span_id: span_id(&r.run_id, &step.id, attempt),
                start_ms: started,
                end_ms: now_ms(),
                attributes: attrs,
                error: None,
            },
        );
        Ok(())
    }

    async fn human_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let idx = r.cursor;
        let step = &w.file.steps[idx];
        let id = format!("{}-{}", r.run_id, step.id);
        if self.journal.review(&id)?.is_some() && r.review.is_none() {
            // Reviewed already in this run (a route came back): go on.
            r.cursor += 1;
            return self.save(r).await;
        }
        let created = now_ms();
        let decision = Self::last_decision(w, r);
        let mut summary = match &r.input {
            Value::Object(o) => o.clone(),
            _ => serde_json::Map::new(),
        };
        summary.remove("expected");
        for v in summary.values_mut() {
            if let Value::String(s) = v
                && s.chars().count() > 200
            {
                *s = format!("{}…", s.chars().take(200).collect::<String>());
            }
        }
        let policy = w
            .file
            .steps
            .get(r.resume_at.unwrap_or(usize::MAX))
            .and_then(|s| {
                r.outputs
                    .get(&s.id)
                    .and_then(|o| o.get("policy"))
                    .map(|p| json!({"step": s.id, "decision": p}))
            });
        let context = json!({
            "input": summary,
            "decision_step": decision.as_ref().map(|d| d.0.clone()),
            "proposal": decision.as_ref().map(|d| d.1.get("output").cloned()),
            "label": decision.as_ref().and_then(|d| d.1.get("label").cloned()),
            "confidence": decision.as_ref().and_then(|d| d.1.get("confidence").cloned()),
            "model": decision.as_ref().and_then(|d| d.1.get("model").cloned()),
            "prompt_version": decision.as_ref().and_then(|d| d.1.get("prompt_version").cloned()),
            "policy": policy,
            "trace_id": r.trace_id,
            "started_by": r.started_by,
        });
        let task = ReviewTask {
            id: id.clone(),
            run_id: r.run_id.clone(),
            workflow: r.workflow.clone(),
            step: step.id.clone(),
            queue: step.queue.clone().unwrap_or_default(),
            priority: step.priority.clone().unwrap_or_else(|| "normal".into()),
            created_ms: created,
            due_ms: created.saturating_add(w.timeouts[idx].as_millis() as i64),
            status: ReviewStatus::Pending,
            context,
            reviewer: None,
            reason: None,
            decided_ms: None,
            audit_seq: None,
        };
        r.status = RunStatus::Waiting;
        r.review = Some(id.clone());
        self.journal
            .commit(vec![
                Write::Run(Box::new(r.clone())),
                Write::Review(Box::new(task.clone())),
            ])
            .await?;
        // Makes the waiting run visible (`in_progress` in `runs`) while its decision span waits
        // for the verdict; not a step of its own (no `automation.step`).
        let mut attrs = BTreeMap::new();
        attrs.insert("automation.workflow".into(), json!(r.workflow));
        attrs.insert("automation.run_id".into(), json!(r.run_id));
        attrs.insert("automation.review.id".into(), json!(id));
        attrs.insert("automation.review.queue".into(), json!(task.queue));
        attrs.insert("automation.review.priority".into(), json!(task.priority));
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: "review requested".into(),
                span_id: span_id(&r.run_id, &format!("{}#requested", step.id), 1),
                start_ms: created,
                end_ms: created,
                attributes: attrs,
                error: None,
            },
        );
        Ok(())
    }

    /// Pending review tasks, most urgent first (priority, then age).
    pub fn pending_reviews(&self) -> Result<Vec<ReviewTask>> {
        let rank = |p: &str| match p {
            "urgent" => 0,
            "high" => 1,
            "normal" => 2,
            _ => 3,
        };
        let mut v: Vec<ReviewTask> = self
            .journal
            .reviews()?
            .into_iter()
            .filter(|t| t.status == ReviewStatus::Pending)
            .collect();
        v.sort_by(|a, b| {
            rank(&a.priority)
                .cmp(&rank(&b.priority))
                .then(a.created_ms.cmp(&b.created_ms))
                .then(a.id.cmp(&b.id))
        });
        Ok(v)
    }

    /// A reviewer approves (`approve`) or rejects a pending task, with a reason. The decision is
    /// authorized (`approve_review`, context `override` = rejection) and audited first; a deny
    /// changes nothing and is [`Error::Denied`]. The run goes on: call [`Executor::drive`].
    pub async fn decide_review(
        &self,
        id: &str,
        reviewer: &str,
        approve: bool,
        reason: &str,
    ) -> Result<ReviewDecision> {
        let mut task = self
            .journal
            .review(id)?
            .ok_or_else(|| Error::NotFound(format!("no review task `{id}`")))?;
        if task.status != ReviewStatus::Pending {
            return Err(Error::Conflict(format!(
                "review task `{id}` is {:?} already",
                task.status
            )));
        }
        if reviewer.trim().is_empty() || reason.trim().is_empty() {
            return Err(Error::Conflict(
                "a review decision needs a reviewer and a reason".into(),
            ));
        }
        let mut r = self
            .journal
            .run(&task.run_id)?
            .ok_or_else(|| Error::NotFound(format!("no run `{}`", task.run_id)))?;
        let w = self.definition(&r.definition)?;
        let req = AuthzRequest {
            principal: json!(format!("Custos::User::{}", json!(reviewer))),
            action: json!("Custos::Action::\"approve_review\""),
            resource: json!(format!("Custos::ReviewTask::{}", json!(id))),
            context: json!({ "override": !approve }),
            entities: vec![json!({
                "uid": {"type": "Custos::ReviewTask", "id": id},
                "attrs": {
                    "workflow": {"__entity": {"type": "Custos::Workflow", "id": task.workflow}},
                    "reviewers": {"__entity": {"type": "Custos::Team", "id": task.queue}},
                    "requested_by": {"__entity": {"type": "Custos::User", "id": r.started_by}},
                },
                "parents": [],
            })],
        };
        let (decision, seq) = self.authorize(req).await?;
        if decision.decision != "allow" {
            return Err(Error::Denied(format!(
                "`{reviewer}` may not decide review `{id}`: {} (audit record {seq})",
                decision.advice.join("; ")
            )));
        }
        let now = now_ms();
        task.status = if approve {
            ReviewStatus::Approved
        } else {
            ReviewStatus::Rejected
        };
        task.reviewer = Some(reviewer.to_string());
        task.reason = Some(reason.to_string());
        task.decided_ms = Some(now);
        task.audit_seq = Some(seq);
        let review_ms = now - task.created_ms;
        let idx = w
            .file
            .steps
            .iter()
            .position(|s| s.id == task.step)
            .unwrap_or(r.cursor);
        let step = &w.file.steps[idx];
        let pending = r.pending_decision.take().map(|mut s| {
            s.attributes
                .insert("automation.human.reviewer".into(), json!(reviewer));
            s.attributes
                .insert("automation.human.override".into(), json!(!approve));
            s.attributes
                .insert("automation.human.review_ms".into(), json!(review_ms));
            s
        });
        r.outputs.insert(
            step.id.clone(),
            json!({"review": id, "approved": approve, "reviewer": reviewer, "reason": reason}),
        );
        r.review = None;
        r.steps_run += 1;
        if approve {
            r.human_approved = true;
            r.status = RunStatus::Running;
            r.cursor = r.resume_at.take().unwrap_or(idx + 1);
        } else {
            r.outcome = Some("escalated".into());
            r.error = Some(format!("rejected by `{reviewer}`: {reason}"));
            r.status = RunStatus::Compensating;
        }
        r.attempt = 1;
        let mut attrs = BTreeMap::new();
        attrs.insert("automation.human.reviewer".into(), json!(reviewer));
        attrs.insert("automation.human.review_ms".into(), json!(review_ms));
        attrs.insert(
            "automation.review.outcome".into(),
            json!(if approve { "approved" } else { "rejected" }),
        );
        attrs.insert("automation.review.queue".into(), json!(task.queue));
        attrs.insert("automation.audit.seq".into(), json!(seq));
        self.close_review(&r, &task, step, pending, attrs, now, None)
            .await?;
        Ok(ReviewDecision {
            task,
            decision,
            audit_seq: seq,
        })
    }

    /// Times out pending reviews due at `now`: `on_timeout: escalate` finishes the run as
    /// `escalated`; `on_timeout: STEP` continues there without a human approval. Returns the
    /// runs that can go on (call [`Executor::drive`]).
    pub async fn expire_reviews(&self, now: i64) -> Result<Vec<String>> {
        let mut moved = Vec::new();
        for mut task in self.journal.reviews()? {
            if task.status != ReviewStatus::Pending || task.due_ms > now {
                continue;
            }
            let Some(mut r) = self.journal.run(&task.run_id)? else {
                continue;
            };
            let w = self.definition(&r.definition)?;
            let idx = w
                .file
                .steps
                .iter()
                .position(|s| s.id == task.step)
                .unwrap_or(r.cursor);
            let step = &w.file.steps[idx];
            task.status = ReviewStatus::TimedOut;
            task.decided_ms = Some(now);
            r.review = None;
            r.steps_run += 1;
            let on_timeout = step.on_timeout.clone().unwrap_or_else(|| "escalate".into());
            let pending = r.pending_decision.take();
            if on_timeout == "escalate" {
                r.outcome = Some("escalated".into());
                r.status = RunStatus::Running;
                r.cursor = w.file.steps.len();
            } else {
                r.status = RunStatus::Running;
                r.resume_at = None;
                r.cursor = w
                    .file
                    .steps
                    .iter()
                    .position(|s| s.id == on_timeout)
                    .unwrap_or(idx + 1);
            }
            r.attempt = 1;
            let mut attrs = BTreeMap::new();
            attrs.insert("automation.review.outcome".into(), json!("timed_out"));
            attrs.insert("automation.review.on_timeout".into(), json!(on_timeout));
            let error = format!("review timed out after {} ms", now - task.created_ms);
            self.close_review(&r, &task, step, pending, attrs, now, Some(error))
                .await?;
            moved.push(r.run_id.clone());
        }
        Ok(moved)
    }

    /// Journals a decided or timed-out review with its run, then emits the decision span the
    /// review completed and the human step's span (with `extra` attributes).
    #[allow(clippy::too_many_arguments)]
    async fn close_review(
        &self,
        r: &RunRecord,
        task: &ReviewTask,
        step: &StepFile,
        pending: Option<SpanRecord>,
        extra: BTreeMap<String, Value>,
        end_ms: i64,
        error: Option<String>,
    ) -> Result<()> {
        self.journal
            .commit(vec![
                Write::Run(Box::new(r.clone())),
                Write::Review(Box::new(task.clone())),
            ])
            .await?;
        if let Some(s) = pending {
            self.telemetry.emit(&r.run_id, &s);
        }
        let mut attributes = self.base_attributes(r, step);
        attributes.extend(extra);
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: step.id.clone(),
                span_id: span_id(&r.run_id, &step.id, 1),
                start_ms: task.created_ms,
                end_ms,
                attributes,
                error,
            },
        );
        Ok(())
    }

    async fn fail(&self, r: &mut RunRecord, e: &StepError) -> Result<()> {
        r.error = Some(e.to_string());
        r.status = RunStatus::Compensating;
        r.attempt = 1;
        self.save(r).await
    }

    /// Undoes completed effects in reverse order, then finishes the run.
    async fn compensate(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let mut any = false;
        for i in (0..r.effects.len()).rev() {
            if r.effects[i].compensated {
                any = true;
                continue;
            }
            let effect = r.effects[i].clone();
            let original = &w.file.steps[effect.step];
            let Some(comp_id) = &original.compensate else {
                continue;
            };
            let Some(comp_idx) = w.file.steps.iter().position(|s| &s.id == comp_id) else {
                continue;
            };
            let comp = &w.file.steps[comp_idx];
            let name = comp.connector.clone().unwrap_or_default();
            let Some(config) = w.file.connectors.get(&name).cloned() else {
                continue;
            };
            let key = format!("{}/{}/{}", r.run_id, comp.id, original.id);
            let payload =
                json!({"run_id": r.run_id, "compensates": original.id, "effect": effect.output});
            let operation = comp.operation.clone().unwrap_or_default();
            let policy = &w.retries[comp_idx];
            let started = now_ms();
            let mut attempt = 1;
            let outcome = loop {
                let call = Call {
                    name: &name,
                    config: &config,
                    operation: &operation,
                    key: &key,
                    run_id: &r.run_id,
                    step: &comp.id,
                    attempt,
                    payload: &payload,
                };
                let res =
                    match tokio::time::timeout(w.timeouts[comp_idx], self.connectors.call(&call))
                        .await
                    {
                        Ok(Err(e)) if e.kind == "duplicate_key" && e.existing.is_some() => {
                            Ok(e.existing.unwrap_or_default())
                        }
                        Ok(x) => x,
                        Err(_) => Err(StepError::retryable("timeout", "compensation timed out")),
                    };
                match res {
                    Ok(v) => break Ok(v),
                    Err(e) => {
                        let stop = !e.retryable || policy.non_retryable_errors.contains(&e.kind);
                        match (stop, policy.delay_before(attempt + 1)) {
                            (false, Some(d)) => {
                                attempt += 1;
                                tokio::time::sleep(d).await;
                            }
                            _ => break Err(e),
                        }
                    }
                }
            };
            let mut attrs = self.base_attributes(r, comp);
            attrs.insert("automation.connector".into(), json!(name));
            attrs.insert("automation.compensates".into(), json!(original.id));
            attrs.insert("automation.idempotency_key".into(), json!(key));
            let span = |error: Option<String>| SpanRecord {
                name: comp.id.clone(),
                span_id: span_id(&r.run_id, &format!("{}#{}", comp.id, original.id), attempt),
                start_ms: started,
                end_ms: now_ms(),
                attributes: attrs.clone(),
                error,
            };
            match outcome {
                Ok(v) => {
                    r.effects[i].compensated = true;
                    r.outputs.insert(format!("{}#{}", comp.id, original.id), v);
                    r.steps_run += 1;
                    any = true;
                    self.save(r).await?;
                    self.telemetry.emit(&r.run_id, &span(None));
                }
                Err(e) => {
                    self.telemetry.emit(&r.run_id, &span(Some(e.to_string())));
                    r.error = Some(format!(
                        "{}; compensation `{}` of `{}` failed: {e}",
                        r.error.clone().unwrap_or_default(),
                        comp.id,
                        original.id
                    ));
                    r.outcome.get_or_insert_with(|| "failure".into());
                    return self.finish(r, "failure").await;
                }
            }
        }
        let outcome = if any { "compensated" } else { "failure" };
        self.finish(r, outcome).await
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

/// Steps that are only some other step's compensation.
fn is_compensation_only(w: &Workflow, idx: usize) -> bool {
    let id = &w.file.steps[idx].id;
    let compensates = w
        .file
        .steps
        .iter()
        .any(|s| s.compensate.as_deref() == Some(id.as_str()));
    let reached = w.file.steps.iter().any(|s| {
        s.when.iter().any(|r| &r.goto == id)
            || s.default.as_deref() == Some(id.as_str())
            || s.on_timeout.as_deref() == Some(id.as_str())
    });
    compensates && !reached
}

/// The human step a denied step at `idx` goes to: the nearest one before it, else the first.
fn human_step_for(w: &Workflow, idx: usize) -> Option<usize> {
    let humans: Vec<usize> = w
        .file
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "human")
        .map(|(i, _)| i)
        .collect();
    humans
        .iter()
        .rev()
        .find(|i| **i < idx)
        .or(humans.first())
        .copied()
}

/// Reads `input.FIELD`, `STEP.FIELD` or `STEP.output.FIELD` from a run.
fn lookup(r: &RunRecord, path: &str) -> Option<Value> {
    let mut parts = path.split('.');
    let head = parts.next()?;
    let mut v = if head == "input" {
        &r.input
    } else {
        r.outputs.get(head)?
    };
    for p in parts {
        v = v.get(p)?;
    }
    Some(v.clone())
}

fn compare(left: &Value, op: &str, right: &Value) -> bool {
    if let (Some(a), Some(b)) = (left.as_f64(), right.as_f64()) {
        return match op {
            ">=" => a >= b,
            ">" => a > b,
            "<=" => a <= b,
            "<" => a < b,
            "==" => a == b,
            _ => a != b,
        };
    }
    match op {
        "==" => left == right,
        "!=" => left != right,
        _ => match (left.as_str(), right.as_str()) {
            (Some(a), Some(b)) => match op {
                ">=" => a >= b,
                ">" => a > b,
                "<=" => a <= b,
                _ => a < b,
            },
            _ => false,
        },
    }
}

/// The step a route goes to.
fn route(w: &Workflow, step: &StepFile, r: &RunRecord) -> usize {
    let target = step
        .when
        .iter()
        .find(|rule| lookup(r, &rule.field).is_some_and(|v| compare(&v, &rule.op, &rule.value)))
        .map(|rule| rule.goto.as_str())
        .or(step.default.as_deref())
        .unwrap_or_default();
    w.file
        .steps
        .iter()
        .position(|s| s.id == target)
        .unwrap_or(w.file.steps.len())
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
