//! Executor commands: `custos run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use custos_executor::batch::{self, Summary};
use custos_executor::journal::RunStatus;
use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};
use serde_json::json;

use crate::UserError;

/// `custos run` arguments.
pub struct RunOptions {
    pub workflow: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub resume: bool,
    pub data: PathBuf,
    pub policies: PathBuf,
    pub otlp: Option<String>,
    pub server: Option<String>,
    pub by: String,
    pub concurrency: usize,
    pub format: String,
}

fn user(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UserError(e.to_string()))
}

/// Loads the policy engine of `dir`; a missing directory means none (fail closed), a broken one
/// is an error.
pub fn engine(dir: &std::path::Path) -> Result<Option<Arc<custos_policy::engine::Engine>>> {
    if !dir.exists() {
        eprintln!(
            "warning: no policy directory `{}`: every side effect and review will be denied",
            dir.display()
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(
        custos_policy::engine::Engine::load(dir)
            .with_context(|| format!("cannot load policies from `{}`", dir.display()))?,
    )))
}

pub async fn run(o: RunOptions) -> Result<ExitCode> {
    if !matches!(o.format.as_str(), "text" | "json") {
        return Err(user(format!(
            "unknown format `{}`; use text or json",
            o.format
        )));
    }
    let (text, file, name) = match &o.workflow {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| user(format!("cannot read workflow `{}`: {e}", p.display())))?;
            let w =
                custos_executor::workflow::parse(&text, &p.display().to_string()).map_err(user)?;
            (text, p.display().to_string(), w.file.name)
        }
        None => (String::new(), String::new(), String::new()),
    };
    let inputs = match &o.input {
        Some(p) => batch::read_inputs(p, &name).map_err(user)?,
        None if o.resume => Vec::new(),
        None => vec![batch::Input {
            key: format!("{name}:cli:{}", custos_executor::now_ms()),
            value: json!({}),
        }],
    };
    if let Some(server) = &o.server {
        return run_on_server(server, &name, inputs, &o).await;
    }
    let telemetry = match &o.otlp {
        Some(url) => Telemetry::otlp(url, "custos-executor").map_err(user)?,
        None => Telemetry::off(),
    };
    let ex = Executor::open(ExecutorOptions {
        data_dir: o.data.clone(),
        engine: engine(&o.policies)?,
        telemetry: telemetry.clone(),
        principal: "executor".into(),
    })?;
    let summary = if o.resume {
        batch::resume(&ex, o.concurrency).await?
    } else {
        batch::run_inputs(&ex, &text, &file, inputs, &o.by, o.concurrency)
            .await
            .map_err(|e| match e {
                custos_executor::Error::Input { .. } | custos_executor::Error::Workflow(_) => {
                    user(e)
                }
                other => other.into(),
            })?
    };
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry task failed")??;
    print_summary(&summary, o.resume, &o.format);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary, resume: bool, format: &str) {
    if format == "json" {
        let runs: Vec<_> = s
            .runs
            .iter()
            .map(|r| {
                json!({"run_id": r.run_id, "workflow": r.workflow, "status": r.status,
                       "outcome": r.outcome, "review": r.review, "error": r.error,
                       "retries": r.retries, "trace_id": r.trace_id})
            })
            .collect();
        println!(
            "{}",
            json!({"runs": runs, "outcomes": s.outcomes(), "existing": s.existing})
        );
        return;
    }
    let what = if resume { "resumed" } else { "ran" };
    let outcomes: Vec<String> = s
        .outcomes()
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "{what} {} run(s){}: {}",
        s.runs.len(),
        if s.existing > 0 {
            format!(" ({} started before)", s.existing)
        } else {
            String::new()
        },
        if outcomes.is_empty() {
            "nothing to do".into()
        } else {
            outcomes.join(" · ")
        }
    );
    for r in &s.runs {
        match (&r.status, r.outcome.as_deref()) {
            (RunStatus::Waiting, _) => println!(
                "  {} waits for review `{}` (custos review list)",
                r.run_id,
                r.review.as_deref().unwrap_or_default()
            ),
            (_, Some("failure" | "compensated" | "escalated")) => println!(
                "  {} {}: {}",
                r.run_id,
                r.outcome.as_deref().unwrap_or_default(),
                r.error.as_deref().unwrap_or("escalated to a person")
            ),
            _ => {}
        }
    }
}

async fn run_on_server(
    server: &str,
    workflow: &str,
    inputs: Vec<batch::Input>,
    o: &RunOptions,
) -> Result<ExitCode> {
    let client = reqwest::Client::new();
    let url = format!("{}/api/runs", server.trim_end_matches('/'));
    let mut out = Vec::new();
    for input in inputs {
        let resp = client
            .post(&url)
            .json(&json!({"workflow": workflow, "input": input.value,
                          "idempotency_key": input.key, "started_by": o.by}))
            .send()
            .await
            .with_context(|| format!("cannot reach `{url}`"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("no reason given");
            if status.is_client_error() {
                return Err(user(format!("`{url}` answered {status}: {msg}")));
            }
            anyhow::bail!("`{url}` answered {status}: {msg}");
        }
        out.push(body);
    }
    if o.format == "json" {
        println!("{}", serde_json::Value::Array(out));
    } else {
        for b in &out {
            println!(
                "{} {}",
                b["run_id"].as_str().unwrap_or_default(),
                b["status"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where review commands act.
#[derive(clap::Args)]
pub struct ReviewSource {
    /// Server API URL (the server's executor holds the tasks).
    #[arg(long, conflicts_with = "data")]
    server: Option<String>,
    /// Data directory of `custos run` (when no server runs on it) [default: ./custos-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Policy directory for `--data` (decisions are authorized with it).
    #[arg(long, default_value = "rules/policy")]
    policies: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum ReviewCommand {
    /// Pending tasks, most urgent first.
    List {
        #[command(flatten)]
        source: ReviewSource,
        /// Include decided and timed-out tasks.
        #[arg(long)]
        all: bool,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// One task with its context.
    Show {
        /// Task id.
        id: String,
        #[command(flatten)]
        source: ReviewSource,
    },
    /// Approve: the automation's proposal stands; the run goes on. Exit 2 when the policy denies
    /// the reviewer.
    Approve {
        /// Task id.
        id: String,
        /// Who decides (a `Custos::User` id).
        #[arg(long)]
        reviewer: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        source: ReviewSource,
    },
    /// Reject: a person overrides the proposal; the run is escalated (its effects compensated).
    /// Exit 2 when the policy denies the reviewer.
    Reject {
        /// Task id.
        id: String,
        /// Who decides (a `Custos::User` id).
        #[arg(long)]
        reviewer: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        source: ReviewSource,
    },
}

fn local_executor(source: &ReviewSource) -> Result<Arc<Executor>> {
    let data = source
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("./custos-data"));
    Ok(Executor::open(ExecutorOptions {
        data_dir: data,
        engine: engine(&source.policies)?,
        telemetry: Telemetry::off(),
        principal: "executor".into(),
    })?)
}

async fn api(
    method: reqwest::Method,
    server: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach `{url}`"))?;
    let status = resp.status();
    let v = resp.json().await.unwrap_or_default();
    Ok((status, v))
}

fn age(ms: i64) -> String {
    let s = (custos_executor::now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86400),
    }
}

fn print_tasks(tasks: &[serde_json::Value]) {
    if tasks.is_empty() {
        println!("no review tasks");
        return;
    }
    println!(
        "{:<34} {:<10} {:<14} {:<8} {:>6} {:<20} {:>10} {:<10}",
        "ID", "STATUS", "QUEUE", "PRIORITY", "AGE", "WORKFLOW", "CONFIDENCE", "PROPOSAL"
    );
    for t in tasks {
        let c = &t["context"];
        println!(
            "{:<34} {:<10} {:<14} {:<8} {:>6} {:<20} {:>10} {:<10}",
            t["id"].as_str().unwrap_or_default(),
            t["status"].as_str().unwrap_or_default(),
            t["queue"].as_str().unwrap_or_default(),
            t["priority"].as_str().unwrap_or_default(),
            age(t["created_ms"].as_i64().unwrap_or_default()),
            t["workflow"].as_str().unwrap_or_default(),
            c["confidence"]
                .as_f64()
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            c["label"].as_str().unwrap_or("-"),
        );
    }
}

pub async fn review(what: ReviewCommand) -> Result<ExitCode> {
    match what {
        ReviewCommand::List {
            source,
            all,
            format,
        } => {
            let tasks: Vec<serde_json::Value> = match &source.server {
                Some(server) => {
                    let path = if all {
                        "/api/reviews?status=all"
                    } else {
                        "/api/reviews"
                    };
                    let (status, v) = api(reqwest::Method::GET, server, path, None).await?;
                    if !status.is_success() {
                        anyhow::bail!(
                            "server answered {status}: {}",
                            v["error"].as_str().unwrap_or_default()
                        );
                    }
                    v["reviews"].as_array().cloned().unwrap_or_default()
                }
                None => {
                    let ex = local_executor(&source)?;
                    let tasks = if all {
                        ex.journal().reviews()?
                    } else {
                        ex.pending_reviews()?
                    };
                    tasks
                        .into_iter()
                        .map(|t| serde_json::to_value(t).unwrap_or_default())
                        .collect()
                }
            };
            if format == "json" {
                println!("{}", serde_json::Value::Array(tasks));
            } else {
                print_tasks(&tasks);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Show { id, source } => {
            let task = match &source.server {
                Some(server) => {
                    let (status, v) = api(
                        reqwest::Method::GET,
                        server,
                        &format!("/api/reviews/{id}"),
                        None,
                    )
                    .await?;
                    if !status.is_success() {
                        anyhow::bail!(
                            "server answered {status}: {}",
                            v["error"].as_str().unwrap_or_default()
                        );
                    }
                    v
                }
                None => {
                    let ex = local_executor(&source)?;
                    let t = ex
                        .journal()
                        .review(&id)?
                        .ok_or_else(|| anyhow::anyhow!("no review task `{id}`"))?;
                    serde_json::to_value(t)?
                }
            };
            println!("{}", serde_json::to_string_pretty(&task)?);
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Approve {
            id,
            reviewer,
            reason,
            source,
        } => decide(&id, &reviewer, &reason, true, &source).await,
        ReviewCommand::Reject {
            id,
            reviewer,
            reason,
            source,
        } => decide(&id, &reviewer, &reason, false, &source).await,
    }
}

async fn decide(
    id: &str,
    reviewer: &str,
    reason: &str,
    approve: bool,
    source: &ReviewSource,
) -> Result<ExitCode> {
    let verb = if approve { "approve" } else { "reject" };
    match &source.server {
        Some(server) => {
            let (status, v) = api(
                reqwest::Method::POST,
                server,
                &format!("/api/reviews/{id}/{verb}"),
                Some(json!({"reviewer": reviewer, "reason": reason})),
            )
            .await?;
            if status == reqwest::StatusCode::FORBIDDEN {
                eprintln!("denied: {}", v["error"].as_str().unwrap_or_default());
                return Ok(ExitCode::from(2));
            }
            if !status.is_success() {
                anyhow::bail!(
                    "server answered {status}: {}",
                    v["error"].as_str().unwrap_or_default()
                );
            }
            println!(
                "{verb}d `{id}` (audit record {}); run `{}` goes on",
                v["audit_seq"],
                v["task"]["run_id"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let ex = local_executor(source)?;
            match ex.decide_review(id, reviewer, approve, reason).await {
                Ok(d) => {
                    let r = ex.drive(&d.task.run_id).await?;
                    println!(
                        "{verb}d `{id}` (audit record {}); run `{}` is {}",
                        d.audit_seq,
                        r.run_id,
                        r.outcome.as_deref().unwrap_or("waiting")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(custos_executor::Error::Denied(m)) => {
                    eprintln!("denied: {m}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// `custos simulate` arguments.
pub struct SimulateArgs {
    pub workflows: PathBuf,
    pub runs: usize,
    pub rate: Option<f64>,
    pub seed: u64,
    pub scenario: Option<PathBuf>,
    pub data: PathBuf,
    pub policies: PathBuf,
    pub otlp: String,
    pub concurrency: usize,
}

fn print_simulation(r: &custos_executor::simulate::SimulationReport) {
    let runs: usize = r.outcomes.values().flat_map(|m| m.values()).sum();
    println!(
        "simulated {runs} runs in {:.1} s ({:.0} steps/s): {} reviews decided, {} overridden",
        r.elapsed.as_secs_f64(),
        r.steps as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.reviews,
        r.overrides
    );
    for (w, outcomes) in &r.outcomes {
        let parts: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {w}: {}", parts.join(" · "));
    }
}

pub async fn simulate(a: SimulateArgs) -> Result<ExitCode> {
    use custos_executor::simulate::{Scenario, SimulateOptions};
    let scenario = match &a.scenario {
        Some(p) => Scenario::load(p).map_err(user)?,
        None => Scenario::default(),
    };
    let telemetry = Telemetry::otlp(&a.otlp, "custos-executor").map_err(user)?;
    let engine = engine(&a.policies)?.map(|e| (*e).clone());
    let report = custos_executor::simulate::simulate(SimulateOptions {
        workflows: a.workflows,
        runs: a.runs,
        rate: a.rate,
        seed: a.seed,
        scenario,
        data_dir: a.data,
        engine,
        telemetry: telemetry.clone(),
        concurrency: a.concurrency,
    })
    .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry task failed")??;
    print_simulation(&report);
    Ok(ExitCode::SUCCESS)
}

const DEMO_SCENARIO: &str = include_str!("../../fixtures/scenarios/demo.yaml");
const DEMO_MARKER: &str = ".custos-demo";

fn heading(s: &str) {
    println!("\n== {s} {}", "=".repeat(76usize.saturating_sub(s.len())));
}

pub async fn demo(data: PathBuf, runs: usize, keep_serving: bool) -> Result<ExitCode> {
    use custos_executor::simulate::{Scenario, SimulateOptions};
    for needed in ["rules/policy", "rules/slos.yaml", "fixtures/workflows"] {
        if !std::path::Path::new(needed).exists() {
            return Err(user(format!(
                "`{needed}` is missing: run `custos demo` from the custos checkout"
            )));
        }
    }
    if data.exists() {
        if data.join(DEMO_MARKER).exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot remove the earlier demo `{}`", data.display()))?;
        } else if std::fs::read_dir(&data)?.next().is_some() {
            return Err(user(format!(
                "`{}` exists and is not a demo directory; pass --data with a new directory",
                data.display()
            )));
        }
    }
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join(DEMO_MARKER), "created by custos demo\n")?;
    let started = std::time::Instant::now();
    let mut options = custos_server::Config::default().validate()?;
    options.store.data_dir = data.clone();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    options.otlp_grpc = any;
    options.otlp_http = any;
    options.api = any;
    options.executor.workflows = None;
    let server = custos_server::start(options).await?;
    let api = format!("http://{}", server.api);
    println!(
        "custos demo: server on {api} (OTLP/HTTP {}), data in `{}`",
        server.otlp_http,
        data.display()
    );
    println!(
        "simulating {runs} runs of support-triage and invoice-processing (canary prompts: support-triage v2 healthy, invoice-processing v2 regressing) ..."
    );
    let scenario = Scenario::parse(DEMO_SCENARIO, "fixtures/scenarios/demo.yaml")?;
    let telemetry = Telemetry::otlp(&format!("http://{}", server.otlp_http), "custos-executor")?;
    let engine = engine(std::path::Path::new("rules/policy"))?.map(|e| (*e).clone());
    let report = custos_executor::simulate::simulate(SimulateOptions {
        workflows: PathBuf::from("fixtures/workflows"),
        runs,
        rate: None,
        seed: 7,
        scenario,
        data_dir: data.clone(),
        engine,
        telemetry: telemetry.clone(),
        concurrency: 32,
    })
    .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry task failed")??;
    print_simulation(&report);

    let source = |server: &str| crate::Source {
        data: None,
        server: Some(server.to_string()),
        prices: None,
    };
    heading("metrics (last hour, by workflow)");
    crate::metrics(source(&api), "1h", "workflow", "table", None).await?;
    heading("SLOs (rules/slos.yaml)");
    crate::slo(source(&api), None, None, "table").await?;
    let mut gate_codes = Vec::new();
    for (workflow, step) in [
        ("support-triage", "classify"),
        ("invoice-processing", "extract"),
    ] {
        heading(&format!("deploy gate: {workflow} prompt v1 -> v2"));
        let change = data.join(format!("change-{workflow}.yaml"));
        std::fs::write(
            &change,
            format!(
                "change: prompt\nworkflow: {workflow}\nstep: {step}\ncurrent: v1\ncandidate: v2\nrequested_by: Custos::Service::\"ci\"\ncanary: {{last: 1h}}\ndescription: custos demo canary\n"
            ),
        )?;
        let code = crate::gate(
            &change,
            None,
            Some(api.clone()),
            std::path::Path::new("rules/policy"),
            None,
            None,
            "text",
        )
        .await?;
        gate_codes.push(code);
    }
    server.shutdown().await?;
    heading("audit trail");
    crate::audit_verify(Some(data.clone()), "text")?;
    heading("next");
    println!(
        "finished in {:.0} s. Explore the same data:\n  custos serve --data {d}            # the API on http://127.0.0.1:4380\n  custos top                         # the terminal dashboard of that server (? for keys)\n  custos sql --data {d} \"SELECT workflow, outcome, count(*) FROM runs GROUP BY 1, 2 ORDER BY 1, 2\"\n  custos metrics --data {d} --by version\n  custos audit report --data {d} --from 2020-01-01 --to 2100-01-01 --out report",
        started.elapsed().as_secs_f64(),
        d = data.display()
    );
    if keep_serving {
        let mut options = custos_server::Config::default().validate()?;
        options.store.data_dir = data.clone();
        let server = custos_server::start(options).await?;
        println!(
            "serving `{}` on http://{} (Ctrl-C to stop)",
            data.display(),
            server.api
        );
        crate::wait_for_signal().await?;
        server.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}
