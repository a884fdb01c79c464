//! `custos review list|show|approve|reject`: human review tasks, locally or on a server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};

use super::{api_client, engine, identity, scrub};
use crate::flags::data_dir;

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
    /// Approve: the automation's proposal stands; the run goes on. The reviewer is who `--token`
    /// says you are. Exit 2 when the policy denies the reviewer.
    Approve {
        /// Task id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        source: ReviewSource,
    },
    /// Reject: a person overrides the proposal; the run is escalated (its effects compensated).
    /// The reviewer is who `--token` says you are. Exit 2 when the policy denies the reviewer.
    Reject {
        /// Task id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        source: ReviewSource,
    },
}

fn local_executor(source: &ReviewSource) -> Result<Arc<Executor>> {
    let data = data_dir(source.data.clone());
    let engine = engine(&source.policies)?;
    Ok(Executor::open(ExecutorOptions {
        scrub: Some(scrub(&data, engine.as_ref())?),
        data_dir: data,
        engine: engine.map(Into::into),
        telemetry: Telemetry::off(),
        principal: "executor".into(),
    })?)
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

pub async fn run(what: ReviewCommand) -> Result<ExitCode> {
    match what {
        ReviewCommand::List {
            source,
            all,
            format,
        } => {
            let tasks: Vec<serde_json::Value> = match &source.server {
                Some(server) => {
                    let answer = api_client(server)?.reviews(all).await?;
                    answer
                        .reviews
                        .into_iter()
                        .map(|t| serde_json::to_value(t).unwrap_or_default())
                        .collect()
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
                Some(server) => serde_json::to_value(api_client(server)?.review(&id).await?)?,
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
        ReviewCommand::Approve { id, reason, source } => decide(&id, &reason, true, &source).await,
        ReviewCommand::Reject { id, reason, source } => decide(&id, &reason, false, &source).await,
    }
}

async fn decide(id: &str, reason: &str, approve: bool, source: &ReviewSource) -> Result<ExitCode> {
    let verb = if approve { "approve" } else { "reject" };
    match &source.server {
        Some(server) => {
            let decision = custos_api::ReviewDecision {
                reviewer: None,
                reason: reason.into(),
            };
            match api_client(server)?.decide(id, approve, &decision).await {
                Ok(d) => {
                    println!(
                        "{verb}d `{id}` (audit record {}); run `{}` goes on",
                        d.audit_seq, d.task.run_id
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.status() == Some(reqwest::StatusCode::FORBIDDEN) => {
                    eprintln!("denied: {}", e.message());
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let me = identity(&data_dir(source.data.clone()))?;
            let Some(reviewer) = custos_executor::run::starting_user(&me.uid)
                .filter(|_| me.uid.starts_with("Custos::User::"))
            else {
                return Err(super::user(format!(
                    "`{}` is not a person: reviews are decided by users (`Custos::User`)",
                    me.uid
                )));
            };
            let ex = local_executor(source)?;
            match ex.decide_review(id, &reviewer, approve, reason).await {
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
