//! `custos simulate`: drives workflows with synthetic inputs, simulated reviewers and scenarios
//! (drift from a given run, canary prompt versions that help or hurt, a slow connector, a cost
//! spike), through the real executor: journaled runs, policy checks and audit records, connector
//! effects on disk, and OTLP spans to a collector.
//!
//! A scenario file (YAML, docs/executor.md) lists changes; `from_run` counts the runs of that
//! workflow (0-based), so "drift from run 500" starts with the workflow's 501st run:
//!
//! ```yaml
//! canaries:
//!   - {workflow: support-triage, step: classify, prompt_version: v2, percent: 25, accuracy: 0.95}
//! drift:
//!   - {workflow: support-triage, model: classifier, from_run: 500, confidence_shift: -0.15}
//! slow_connectors:
//!   - {workflow: invoice-processing, connector: ledger, from_run: 200, latency_ms: 300}
//! cost_spikes:
//!   - {workflow: invoice-processing, model: large, from_run: 300, cost_per_1k_tokens: 0.05}
//! ```
//!
//! Simulated reviewers decide every pending task within `reviewers.poll_ms`: they approve a
//! proposal that matches the input's truth (`expected.label`, or the invoice's own amount) and
//! reject (override) one that does not. The reviewer of a queue is `ana` for `ap-team` and `ben`
//! otherwise (members of those teams in the shipped entity store). HTTP connectors are pointed at
//! a local stub that answers `{"terms": "net 30"}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use custos_policy::engine::Engine;
use custos_policy::live::Live;
use custos_synth::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::journal::RunStatus;
use crate::telemetry::Telemetry;
use crate::workflow::{self, WorkflowFile};
use crate::{Error, Executor, ExecutorOptions, Result};

/// A scenario: what changes during a simulation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Canary versions: a share of runs uses a candidate prompt version.
    #[serde(default)]
    pub canaries: Vec<Canary>,
    /// Confidence drift and accuracy changes of a model from a given run.
    #[serde(default)]
    pub drift: Vec<Drift>,
    /// A connector that turns slow from a given run.
    #[serde(default)]
    pub slow_connectors: Vec<SlowConnector>,
    /// A model whose price jumps from a given run.
    #[serde(default)]
    pub cost_spikes: Vec<CostSpike>,
    /// How the simulated reviewers work.
    #[serde(default)]
    pub reviewers: Option<Reviewers>,
}

/// A canary prompt version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Workflow name.
    pub workflow: String,
    /// The model step.
    pub step: String,
    /// The candidate prompt version.
    pub prompt_version: String,
    /// Share of runs on the candidate, in [0, 100].
    pub percent: f64,
    /// The models' accuracy under the candidate (below the current one: a regression).
    pub accuracy: f64,
}

/// Drift of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// Workflow name.
    pub workflow: String,
    /// The model's name in the workflow.
    pub model: String,
    /// First affected run of the workflow (0-based).
    pub from_run: usize,
    /// Added to every confidence, in [-1, 1].
    #[serde(default)]
    pub confidence_shift: Option<f64>,
    /// New accuracy, in [0, 1].
    #[serde(default)]
    pub accuracy: Option<f64>,
}

/// A connector turning slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConnector {
    /// Workflow name.
    pub workflow: String,
    /// The connector's name in the workflow.
    pub connector: String,
    /// First affected run of the workflow (0-based).
    pub from_run: usize,
    /// Added latency per call.
    pub latency_ms: u64,
}

/// A price jump.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpike {
    /// Workflow name.
    pub workflow: String,
    /// The model's name in the workflow.
    pub model: String,
    /// First affected run of the workflow (0-based).
    pub from_run: usize,
    /// New price per 1000 tokens, in USD.
    pub cost_per_1k_tokens: f64,
}

/// Simulated reviewers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reviewers {
    /// How often they look at the queue, in milliseconds (default 50).
    #[serde(default)]
    pub poll_ms: Option<u64>,
    /// Share of reviews answered wrongly, in [0, 1] (default 0).
    #[serde(default)]
    pub error_rate: Option<f64>,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read scenario `{}`: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a scenario's text (`source` names it in messages).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| {
            Error::Config(format!(
                "invalid scenario `{source}`: {e}; it may have canaries, drift, slow_connectors, cost_spikes and reviewers (docs/executor.md)"
            ))
        })?;
        for c in &s.canaries {
            if !(0.0..=100.0).contains(&c.percent) || !(0.0..=1.0).contains(&c.accuracy) {
                return Err(Error::Config(format!(
                    "invalid scenario `{source}`: canary `{}` of `{}` needs `percent` in [0, 100] and `accuracy` in [0, 1]",
                    c.prompt_version, c.workflow
                )));
            }
        }
        Ok(s)
    }
}

/// How to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Workflow definitions to drive.
    pub workflows: PathBuf,
    /// Runs in all (spread evenly over the workflows).
    pub runs: usize,
    /// Runs started per second; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// Seed of the synthetic inputs.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Data directory (journal under `executor/`, effects under `connectors/`, audit log).
    pub data_dir: PathBuf,
    /// Policy engine (none: every side effect denied).
    pub engine: Option<Engine>,
    /// Where spans go.
    pub telemetry: Telemetry,
    /// Runs in flight at once.
    pub concurrency: usize,
}

/// What a simulation did.
#[derive(Debug, Clone, Default)]
pub struct SimulationReport {
    /// Runs by workflow and outcome.
    pub outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Reviews decided by the simulated reviewers, and how many of those overrode the model.
    pub reviews: usize,
    /// Of which rejected.
    pub overrides: usize,
    /// Steps run (attempts included).
    pub steps: u64,
    /// Wall time.
    pub elapsed: Duration,
}

fn edit(base: &WorkflowFile, scenario: &Scenario, run: usize) -> WorkflowFile {
    let mut w = base.clone();
    for c in scenario.canaries.iter().filter(|c| c.workflow == w.name) {
        if let Some(step) = w.steps.iter_mut().find(|s| s.id == c.step) {
            step.canary_prompt_version = Some(c.prompt_version.clone());
            step.canary_percent = Some(c.percent);
            let models: Vec<String> = step
                .model
                .iter()
                .chain(step.fallback_model.iter())
                .cloned()
                .collect();
            for m in models {
                if let Some(m) = w.models.get_mut(&m) {
                    m.prompt_accuracy
                        .insert(c.prompt_version.clone(), c.accuracy);
                }
            }
        }
    }
    for d in scenario
        .drift
        .iter()
        .filter(|d| d.workflow == w.name && run >= d.from_run)
    {
        if let Some(m) = w.models.get_mut(&d.model) {
            if let Some(s) = d.confidence_shift {
                m.confidence_shift = Some(s);
            }
            if let Some(a) = d.accuracy {
                m.accuracy = Some(a);
            }
        }
    }
    for s in scenario
        .slow_connectors
        .iter()
        .filter(|s| s.workflow == w.name && run >= s.from_run)
    {
        if let Some(c) = w.connectors.get_mut(&s.connector) {
            c.latency_ms = Some(s.latency_ms);
        }
    }
    for c in scenario
        .cost_spikes
        .iter()
        .filter(|c| c.workflow == w.name && run >= c.from_run)
    {
        if let Some(m) = w.models.get_mut(&c.model) {
            m.cost_per_1k_tokens = Some(c.cost_per_1k_tokens);
        }
    }
    w
}

const LABELS: &[&str] = &["urgent", "normal", "low"];
const VENDORS: &[&str] = &["acme", "globex", "initech", "umbrella", "stark", "wayne"];

/// A synthetic input for a workflow's input schema; `expected` carries the truth.
fn input(w: &WorkflowFile, rng: &mut Rng, n: usize) -> Value {
    let label = LABELS[(rng.next_u64() % 3) as usize];
    let mut o = serde_json::Map::new();
    for (field, ty) in &w.input {
        let v = match (field.as_str(), ty.as_str()) {
            ("amount_usd", _) => {
                // Log-normal-ish: median about 1 800 USD, a tail above 10 000.
                let u = rng.unit().max(1e-9);
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * rng.unit()).cos();
                json!(((7.5 + 1.1 * z).exp() * 100.0).round() / 100.0)
            }
            ("vendor", _) => json!(VENDORS[(rng.next_u64() % VENDORS.len() as u64) as usize]),
            ("subject", _) => json!(format!("{label} request #{n}")),
            ("body", _) | ("text", _) => json!(format!("message {n} about an order ({label})")),
            (_, "number") => json!(rng.unit() * 100.0),
            (_, "integer") => json!(rng.next_u64() % 1000),
            (_, "boolean") => json!(rng.unit() < 0.5),
            (_, "object") => json!({}),
            (_, "array") => json!([]),
            _ => json!(format!("{field}-{n}")),
        };
        o.insert(field.clone(), v);
    }
    o.insert("expected".into(), json!({ "label": label }));
    Value::Object(o)
}

/// Whether a proposal matches the truth of the run's input.
fn correct(task_context: &Value, input: &Value) -> bool {
    if let Some(total) = task_context
        .pointer("/proposal/total")
        .and_then(Value::as_f64)
    {
        let truth = input.get("amount_usd").and_then(Value::as_f64);
        return truth.is_some_and(|t| (t - total).abs() < 0.005);
    }
    match (
        task_context.get("label").and_then(Value::as_str),
        input.pointer("/expected/label").and_then(Value::as_str),
    ) {
        (Some(l), Some(e)) if l != "extracted" && l != "drafted" => l == e,
        _ => true,
    }
}

async fn vendor_stub() -> Result<String> {
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({"terms": "net 30"})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Task(format!("cannot start the vendor stub: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Task(format!("cannot start the vendor stub: {e}")))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/vendors"))
}

async fn reviewers(
    ex: Arc<Executor>,
    poll: Duration,
    error_rate: f64,
    stop: Arc<AtomicBool>,
    counts: Arc<std::sync::Mutex<(usize, usize)>>,
) {
    let mut rng = Rng::new(0x5EED);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(poll).await;
        let Ok(tasks) = ex.pending_reviews() else {
            continue;
        };
        let mut decisions = tokio::task::JoinSet::new();
        for t in tasks {
            let Ok(Some(run)) = ex.journal().run(&t.run_id) else {
                continue;
            };
            let mut approve = correct(&t.context, &run.input);
            if rng.unit() < error_rate {
                approve = !approve;
            }
            let (ex, counts) = (ex.clone(), counts.clone());
            decisions.spawn(async move {
                let reviewer = if t.queue == "ap-team" { "ana" } else { "ben" };
                let reason = if approve {
                    "proposal checked against the source"
                } else {
                    "proposal does not match the source"
                };
                match ex.decide_review(&t.id, reviewer, approve, reason).await {
                    Ok(_) => {
                        if let Ok(mut c) = counts.lock() {
                            c.0 += 1;
                            c.1 += usize::from(!approve);
                        }
                        if let Err(e) = ex.drive(&t.run_id).await {
                            tracing::warn!(run = %t.run_id, error = %e, "run failed to progress");
                        }
                    }
                    Err(e) => tracing::warn!(task = %t.id, error = %e, "simulated review failed"),
                }
            });
        }
        while decisions.join_next().await.is_some() {}
    }
}

/// Runs a simulation to the end: every run finished (reviews answered by the simulated
/// reviewers), spans flushed.
pub async fn simulate(o: SimulateOptions) -> Result<SimulationReport> {
    let started = Instant::now();
    let defs = definitions(&o.workflows, &vendor_stub().await?)?;
    let ex = Executor::open(ExecutorOptions {
        data_dir: o.data_dir.clone(),
        engine: o.engine.clone().map(Live::new),
        telemetry: o.telemetry.clone(),
        principal: "executor".into(),
        scrub: None,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<std::sync::Mutex<(usize, usize)>> = Arc::default();
    let scripted = o.scenario.reviewers.as_ref();
    let poll = Duration::from_millis(scripted.and_then(|r| r.poll_ms).unwrap_or(50).max(1));
    let error_rate = scripted.and_then(|r| r.error_rate).unwrap_or(0.0);
    let reviewer_task = tokio::spawn(reviewers(
        ex.clone(),
        poll,
        error_rate,
        stop.clone(),
        counts.clone(),
    ));
    let ids = start_runs(&ex, &o, &defs).await?;
    let mut report = wait_for(&ex, &ids, Instant::now() + Duration::from_secs(120)).await?;
    stop.store(true, Ordering::Relaxed);
    let _ = reviewer_task.await;
    if let Ok(c) = counts.lock() {
        report.reviews = c.0;
        report.overrides = c.1;
    }
    let t = o.telemetry.clone();
    tokio::task::spawn_blocking(move || t.flush())
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The definitions in `dir` (`*.yaml`, `*.yml`, by name), their HTTP connectors pointed at the
/// simulated vendor `stub`.
fn definitions(dir: &Path, stub: &str) -> Result<Vec<(String, WorkflowFile)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "cannot read workflow directory `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut defs = Vec::new();
    for p in &paths {
        let mut w = workflow::load(p)
            .map_err(|e| Error::Config(e.to_string()))?
            .file;
        for c in w.connectors.values_mut() {
            if c.kind == "http" {
                c.url = Some(stub.to_string());
            }
        }
        defs.push((p.display().to_string(), w));
    }
    if defs.is_empty() {
        return Err(Error::Config(format!(
            "no workflow definitions (*.yaml) in `{}`",
            dir.display()
        )));
    }
    Ok(defs)
}

/// Starts `o.runs` runs round-robin over the definitions, edited by the scenario, at most
/// `o.concurrency` at once and at `o.rate` per second; returns their ids once each is driven as
/// far as it goes without people.
async fn start_runs(
    ex: &Arc<Executor>,
    o: &SimulateOptions,
    defs: &[(String, WorkflowFile)],
) -> Result<Vec<String>> {
    let mut rng = Rng::new(o.seed);
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    let gap = o
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    for (i, (file, base)) in defs.iter().cycle().take(o.runs).enumerate() {
        let w = edit(base, &o.scenario, i / defs.len());
        let text = serde_yaml_ng::to_string(&w)
            .map_err(|e| Error::Config(format!("cannot write a definition: {e}")))?;
        let text = texts.entry(text.clone()).or_insert(text).clone();
        let value = input(&w, &mut rng, i);
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        let (ex2, file) = (ex.clone(), file.clone());
        let key = format!("simulate:{}:{}:{i}", o.seed, w.name);
        tasks.spawn(async move {
            let _permit = permit;
            let s = ex2
                .start(&text, &file, value, Some(key), "automation")
                .await?;
            ex2.drive(&s.run_id).await?;
            Ok::<_, Error>(s.run_id)
        });
        if let Some(g) = gap {
            tokio::time::sleep(g).await;
        }
        while let Some(done) = tasks.try_join_next() {
            ids.push(done.map_err(|e| Error::Task(e.to_string()))??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        ids.push(done.map_err(|e| Error::Task(e.to_string()))??);
    }
    Ok(ids)
}

/// Waits until every run finished (the reviewers release the waiting ones) or `deadline`;
/// counts outcomes per workflow, unfinished runs as `unfinished`.
async fn wait_for(ex: &Executor, ids: &[String], deadline: Instant) -> Result<SimulationReport> {
    let mut report = SimulationReport::default();
    loop {
        let mut all_done = true;
        report.outcomes.clear();
        report.steps = 0;
        for id in ids {
            let Some(r) = ex.journal().run(id)? else {
                continue;
            };
            report.steps += u64::from(r.steps_run);
            let k = match r.status {
                RunStatus::Finished => r.outcome.clone().unwrap_or_default(),
                _ => {
                    all_done = false;
                    "unfinished".into()
                }
            };
            *report
                .outcomes
                .entry(r.workflow.clone())
                .or_default()
                .entry(k)
                .or_insert(0) += 1;
        }
        if all_done || Instant::now() > deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
