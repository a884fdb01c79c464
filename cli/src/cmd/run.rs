//! `custos run`: workflows run by the reference executor, locally or on a server.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_executor::batch::{self, Summary};
use custos_executor::journal::RunStatus;
use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};
use serde_json::json;

use super::{api_client, engine, identity, scrub, token, user};
use crate::flags::{RunArgs, data_dir};

pub async fn run(o: RunArgs) -> Result<ExitCode> {
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
        Some(url) => {
            Telemetry::otlp(url, "custos-executor", exporter_token().as_deref()).map_err(user)?
        }
        None => Telemetry::off(),
    };
    let dir = data_dir(o.data.clone());
    // Who starts the runs: the person `--token` names on this data directory, or whoever runs
    // the command (nobody reviews a run they started).
    let by = token()
        .and_then(|_| identity(&dir).ok())
        .map(|p| p.uid)
        .unwrap_or_else(custos_governance::tokens::local_actor);
    let engine = engine(&o.policies)?;
    let ex = Executor::open(ExecutorOptions {
        scrub: Some(scrub(&dir, engine.as_ref())?),
        data_dir: dir,
        engine: engine.map(Into::into),
        telemetry: telemetry.clone(),
        principal: "executor".into(),
    })?;
    let summary = if o.resume {
        batch::resume(&ex, o.concurrency).await?
    } else {
        batch::run_inputs(&ex, &text, &file, inputs, &by, o.concurrency)
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

/// The token the exporter sends: `--token`, unless `OTEL_EXPORTER_OTLP_HEADERS` (or the traces
/// variant) sets the headers the standard way.
pub fn exporter_token() -> Option<String> {
    let standard = [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if standard { None } else { token() }
}

async fn run_on_server(
    server: &str,
    workflow: &str,
    inputs: Vec<batch::Input>,
    o: &RunArgs,
) -> Result<ExitCode> {
    let client = api_client(server)?;
    let mut out = Vec::new();
    for input in inputs {
        let start = custos_api::StartRun {
            workflow: workflow.to_string(),
            input: input.value,
            idempotency_key: Some(input.key),
            started_by: None,
        };
        let started = client.start_run(&start).await.map_err(|e| {
            if e.is_client_error() {
                user(&e)
            } else {
                anyhow::Error::new(e)
            }
        })?;
        out.push(serde_json::to_value(started)?);
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
