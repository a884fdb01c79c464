//! The `custos` command: argument parsing and dispatch only. The work is in the library crates.

mod commands;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use custos_analytics::Analytics;
use custos_analytics::QueryOptions;
use custos_analytics::format::{Format, render};
use custos_server::{Config, RulesOptions};
use serde::de::DeserializeOwned;

/// custos: observability and governance for AI workflow automation.
#[derive(Parser)]
#[command(name = "custos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, span store, SQL API, policy decisions and the audit log.
    Serve {
        /// Data directory (WAL and Delta tables) [default: ./custos-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Configuration file (TOML); see custos.example.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
        #[arg(long)]
        otlp_grpc: Option<SocketAddr>,
        /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
        #[arg(long)]
        otlp_http: Option<SocketAddr>,
        /// API listen address [default: 127.0.0.1:4380].
        #[arg(long)]
        api: Option<SocketAddr>,
        /// Workflow definitions the server runs for `POST /api/runs` [default: ./workflows if it
        /// exists].
        #[arg(long)]
        workflows: Option<PathBuf>,
    },
    /// Run a read-only SQL query against a data directory or a server.
    Sql {
        /// Data directory to read directly (safe while a server runs on it).
        #[arg(long, conflicts_with = "server")]
        data: Option<PathBuf>,
        /// Server API URL, e.g. http://127.0.0.1:4380.
        #[arg(long)]
        server: Option<String>,
        /// Output format: table, csv, json, ndjson.
        #[arg(long, default_value = "table")]
        format: String,
        /// Model price table for spans without a reported cost [default: rules/prices.yaml if present].
        #[arg(long, conflicts_with = "server")]
        prices: Option<PathBuf>,
        /// The query.
        query: String,
    },
    /// Print the standard metrics: latency, success, review and override rates, cost per success,
    /// errors, retries and confidence drift.
    Metrics {
        #[command(flatten)]
        source: Source,
        /// Window length ending at `--at`, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        window: String,
        /// Grouping: workflow, model, version, minute, hour, day.
        #[arg(long, default_value = "workflow")]
        by: String,
        /// Output format: table, json, csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// End of the window, RFC 3339 [default: now].
        #[arg(long)]
        at: Option<String>,
    },
    /// Tune a workflow's confidence threshold from reviewed decisions: automation rate and expected
    /// error rate per threshold, and the threshold that meets a target error rate.
    Thresholds {
        #[command(flatten)]
        source: Source,
        /// Workflow name.
        #[arg(long)]
        workflow: String,
        /// Only this decision step.
        #[arg(long)]
        step: Option<String>,
        /// Target error rate (overrides among automated decisions), e.g. 0.03.
        #[arg(long, default_value_t = 0.03)]
        target_error: f64,
        /// Window of decisions to learn from, ending at `--at`.
        #[arg(long, default_value = "30d")]
        window: String,
        /// End of the window, RFC 3339 [default: now].
        #[arg(long)]
        at: Option<String>,
        /// Output format: table, json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Evaluate the SLOs: SLI, error budget and burn-rate alerts. Exits 3 when a page alert fires.
    Slo {
        #[command(flatten)]
        source: Source,
        /// SLO file [default: rules/slos.yaml].
        #[arg(long, conflicts_with = "server")]
        rules: Option<PathBuf>,
        /// Evaluation time, RFC 3339 [default: now].
        #[arg(long)]
        at: Option<String>,
        /// Output format: table, json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Validate and test the governance policies (Cedar).
    Policy {
        #[command(subcommand)]
        what: PolicyCommand,
    },
    /// The deploy gate for CI: measure a candidate prompt or model version on its canary traffic
    /// and evaluate the deploy policies. Exits 0 allow, 2 deny, 1 error.
    Gate {
        /// Change file (YAML or JSON): change, workflow, current, candidate, requested_by, canary.
        #[arg(long)]
        change: PathBuf,
        /// Data directory to measure (and whose audit log records the decision)
        /// [default: ./custos-data].
        #[arg(long, conflicts_with = "server")]
        data: Option<PathBuf>,
        /// Server API URL: the server measures, decides with its policies and records.
        #[arg(long)]
        server: Option<String>,
        /// Policy directory for `--data` [default: rules/policy].
        #[arg(long, conflicts_with = "server", default_value = "rules/policy")]
        policies: PathBuf,
        /// Model price table for `--data` [default: rules/prices.yaml if present].
        #[arg(long, conflicts_with = "server")]
        prices: Option<PathBuf>,
        /// Evaluation time, RFC 3339 [default: now]; a `canary.last` window ends here.
        #[arg(long)]
        at: Option<String>,
        /// Output format: text, json, github, junit, sarif.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Run a workflow with the reference executor: durable (journaled in DATA/executor), with
    /// policy checks, human review and OTLP telemetry; `--resume` completes runs after a crash.
    Run {
        /// Workflow definition (YAML, docs/executor.md).
        #[arg(required_unless_present = "resume")]
        workflow: Option<PathBuf>,
        /// Inputs, one JSON object per line; each line starts one run (once: a repeated command
        /// starts only lines that never started).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Complete every unfinished run of the data directory's journal.
        #[arg(long, conflicts_with_all = ["workflow", "input", "server"])]
        resume: bool,
        /// Data directory holding the journal, connector effects and audit log
        /// [default: ./custos-data].
        #[arg(long, conflicts_with = "server")]
        data: Option<PathBuf>,
        /// Policy directory (side effects and reviews are authorized with it; without policies
        /// every side effect is denied).
        #[arg(long, conflicts_with = "server", default_value = "rules/policy")]
        policies: PathBuf,
        /// Where spans go: `http://HOST:4318` (OTLP/HTTP) or `grpc://HOST:4317` (OTLP/gRPC).
        #[arg(long, conflicts_with = "server")]
        otlp: Option<String>,
        /// Server API URL: start the runs on the server (`POST /api/runs`) instead.
        #[arg(long)]
        server: Option<String>,
        /// Who starts the runs (a `Custos::User` id; nobody reviews their own run).
        #[arg(long, default_value = "automation")]
        by: String,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Drive workflows with synthetic inputs, simulated reviewers and scenarios (drift, canary
    /// prompts, a slow connector, a cost spike); spans go to a collector.
    Simulate {
        /// Workflow definitions to drive.
        #[arg(long, default_value = "fixtures/workflows")]
        workflows: PathBuf,
        /// Runs in all, spread evenly over the workflows.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Runs started per second [default: as fast as possible].
        #[arg(long)]
        rate: Option<f64>,
        /// Seed of the synthetic inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Scenario file (YAML; fixtures/scenarios/ has examples).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Data directory for the journal, connector effects and audit log (not one a server
        /// runs workflows on) [default: ./custos-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Policy directory.
        #[arg(long, default_value = "rules/policy")]
        policies: PathBuf,
        /// Where spans go: `http://HOST:4318` or `grpc://HOST:4317`.
        #[arg(long, default_value = "http://127.0.0.1:4318")]
        otlp: String,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The whole loop in one command: start a server on a fresh data directory, simulate a few
    /// thousand runs of the reference workflows with a healthy and a regressing canary prompt,
    /// then print metrics, SLOs, both gate decisions and the audit verification.
    Demo {
        /// Data directory, replaced if it holds an earlier demo [default: ./custos-demo].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Runs in all.
        #[arg(long, default_value_t = 3000)]
        runs: usize,
        /// Keep the server running afterwards (until Ctrl-C) to explore it.
        #[arg(long)]
        keep_serving: bool,
    },
    /// The operator's terminal dashboard: health tiles, SLOs, runs, reviews, policy decisions and
    /// the audit trail of a server, refreshed live (press `?` for keys).
    Top {
        /// Server API URL.
        #[arg(long, default_value = "http://127.0.0.1:4380")]
        server: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Who approves or rejects reviews from the dashboard (default: `CUSTOS_REVIEWER`); the
        /// policy set decides what this person may decide. Without one, reviews are read-only.
        #[arg(long)]
        reviewer: Option<String>,
    },
    /// Human review tasks: list them, show one, approve or reject with a reason (authorized as
    /// `approve_review` and recorded in the audit trail).
    Review {
        #[command(subcommand)]
        what: commands::ReviewCommand,
    },
    /// The audit trail: verify its hash chain, write compliance reports.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// Where analytics commands read from.
#[derive(clap::Args)]
struct Source {
    /// Data directory to read directly (safe while a server runs on it) [default: ./custos-data].
    #[arg(long, conflicts_with = "server")]
    data: Option<PathBuf>,
    /// Server API URL, e.g. http://127.0.0.1:4380.
    #[arg(long)]
    server: Option<String>,
    /// Model price table for spans without a reported cost [default: rules/prices.yaml if present].
    #[arg(long, conflicts_with = "server")]
    prices: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policies strictly against the schema (warnings are errors). Exits 1 when a
    /// problem is found, listing each with file, line and column.
    Validate {
        /// Policy directory.
        #[arg(long, default_value = "rules/policy")]
        dir: PathBuf,
    },
    /// Run policy tests (the JSON format of `cedar run-tests`). Exits 1 when a test fails.
    Test {
        /// Policy directory.
        #[arg(long, default_value = "rules/policy")]
        dir: PathBuf,
        /// Test directory [default: DIR/tests].
        #[arg(long)]
        tests: Option<PathBuf>,
        /// Output format: text, junit.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain. Exits 1 naming the first record that was modified, deleted,
    /// inserted or reordered.
    Verify {
        /// Data directory [default: ./custos-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output format: text, json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Write a compliance report for a period: decisions, gate results, human oversight, version
    /// change log, SLOs, denials, integrity, retention; with a manifest of SHA-256 sums.
    Report {
        /// Period start: a date (UTC day) or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Period end: a date (the whole day is included) or an RFC 3339 time (exclusive).
        #[arg(long)]
        to: String,
        /// Output directory (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Formats, comma-separated: html, md, csv, json.
        #[arg(long, default_value = "html,md,csv,json")]
        format: String,
        /// Data directory [default: ./custos-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// SLO file [default: rules/slos.yaml if present].
        #[arg(long)]
        slos: Option<PathBuf>,
        /// Model price table [default: rules/prices.yaml if present].
        #[arg(long)]
        prices: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The standard metrics and a trace lookup over a large store, compared with DuckDB.
    Analytics {
        /// Spans to generate (about six per run, over 30 days).
        #[arg(long, default_value_t = 10_000_000)]
        spans: usize,
        /// Data directory: reused when it already holds a table (default: a temporary one).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Price table [default: rules/prices.yaml if present].
        #[arg(long)]
        prices: Option<PathBuf>,
        /// SLO file to time [default: rules/slos.yaml if present].
        #[arg(long)]
        slos: Option<PathBuf>,
        /// DuckDB comparison script [default: bench/duckdb_compare.py if present].
        #[arg(long)]
        duckdb_script: Option<PathBuf>,
        /// Timed runs per query after one warm-up; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Executor throughput: steps per second with a durable journal, policy checks and audited
    /// side effects, one run at a time and many in flight.
    Executor {
        /// Policy directory.
        #[arg(long, default_value = "rules/policy")]
        policies: PathBuf,
        /// Runs with many in flight (a quarter as many are timed one at a time).
        #[arg(long, default_value_t = 2_000)]
        runs: usize,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Policy decision latency with the shipped policies: in process, recorded in the audit log,
    /// and over `POST /api/authorize`.
    Policy {
        /// Policy directory.
        #[arg(long, default_value = "rules/policy")]
        policies: PathBuf,
        /// In-process decisions to time.
        #[arg(long, default_value_t = 200_000)]
        decisions: usize,
        /// Recorded (fsync) and HTTP decisions to time.
        #[arg(long, default_value_t = 2_000)]
        durable: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End-to-end ingest over loopback with durable acknowledgments.
    Ingest {
        /// Total spans to send.
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        /// Spans per export request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Data directory to keep (default: a temporary one, removed afterwards).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UserError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve {
            data,
            config,
            otlp_grpc,
            otlp_http,
            api,
            workflows,
        } => serve(data, config, otlp_grpc, otlp_http, api, workflows).await,
        Command::Sql {
            data,
            server,
            format,
            prices,
            query,
        } => sql(data, server, prices, &format, &query).await,
        Command::Metrics {
            source,
            window,
            by,
            format,
            at,
        } => metrics(source, &window, &by, &format, at.as_deref()).await,
        Command::Thresholds {
            source,
            workflow,
            step,
            target_error,
            window,
            at,
            format,
        } => {
            thresholds(
                source,
                &workflow,
                step.as_deref(),
                target_error,
                &window,
                at.as_deref(),
                &format,
            )
            .await
        }
        Command::Slo {
            source,
            rules,
            at,
            format,
        } => slo(source, rules, at.as_deref(), &format).await,
        Command::Policy {
            what: PolicyCommand::Validate { dir },
        } => policy_validate(&dir),
        Command::Policy {
            what: PolicyCommand::Test { dir, tests, format },
        } => policy_test(&dir, tests, &format),
        Command::Gate {
            change,
            data,
            server,
            policies,
            prices,
            at,
            format,
        } => {
            // Every failure to decide is exit 1: 2 means deny.
            match gate(
                &change,
                data,
                server,
                &policies,
                prices,
                at.as_deref(),
                &format,
            )
            .await
            {
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Run {
            workflow,
            input,
            resume,
            data,
            policies,
            otlp,
            server,
            by,
            concurrency,
            format,
        } => {
            let options = commands::RunOptions {
                workflow,
                input,
                resume,
                data: data.unwrap_or_else(|| PathBuf::from("./custos-data")),
                policies,
                otlp,
                server,
                by,
                concurrency,
                format,
            };
            commands::run(options).await
        }
        Command::Review { what } => commands::review(what).await,
        Command::Top {
            server,
            interval,
            reviewer,
        } => {
            if !(interval.is_finite() && interval >= 0.2) {
                return Err(UserError("`--interval` must be at least 0.2 seconds".into()).into());
            }
            let every = std::time::Duration::from_secs_f64(interval);
            let reviewer = reviewer.or_else(|| std::env::var("CUSTOS_REVIEWER").ok());
            tokio::task::spawn_blocking(move || custos_tui::run::run(&server, every, reviewer))
                .await
                .context("the dashboard stopped unexpectedly")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            workflows,
            runs,
            rate,
            seed,
            scenario,
            data,
            policies,
            otlp,
            concurrency,
        } => {
            commands::simulate(commands::SimulateArgs {
                workflows,
                runs,
                rate,
                seed,
                scenario,
                data: data.unwrap_or_else(|| PathBuf::from("./custos-data")),
                policies,
                otlp,
                concurrency,
            })
            .await
        }
        Command::Demo {
            data,
            runs,
            keep_serving,
        } => {
            commands::demo(
                data.unwrap_or_else(|| PathBuf::from("./custos-demo")),
                runs,
                keep_serving,
            )
            .await
        }
        Command::Audit {
            what: AuditCommand::Verify { data, format },
        } => audit_verify(data, &format),
        Command::Audit {
            what:
                AuditCommand::Report {
                    from,
                    to,
                    out,
                    format,
                    data,
                    slos,
                    prices,
                },
        } => audit_report(&from, &to, &out, &format, data, slos, prices).await,
        Command::Bench {
            what:
                BenchCommand::Analytics {
                    spans,
                    data,
                    prices,
                    slos,
                    duckdb_script,
                    repeats,
                    json,
                },
        } => bench_analytics(spans, data, prices, slos, duckdb_script, repeats, json).await,
        Command::Bench {
            what:
                BenchCommand::Policy {
                    policies,
                    decisions,
                    durable,
                    json,
                },
        } => bench_policy(&policies, decisions, durable, json).await,
        Command::Bench {
            what:
                BenchCommand::Executor {
                    policies,
                    runs,
                    concurrency,
                    json,
                },
        } => {
            let figures = custos_bench::executor::run(&policies, runs, concurrency).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                print!("{}", custos_bench::executor::render(&figures));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchCommand::Ingest {
                    spans,
                    batch,
                    concurrency,
                    data,
                    json,
                },
        } => bench_ingest(spans, batch, concurrency, data, json).await,
    }
}

async fn serve(
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    otlp_grpc: Option<SocketAddr>,
    otlp_http: Option<SocketAddr>,
    api: Option<SocketAddr>,
    workflows: Option<PathBuf>,
) -> Result<ExitCode> {
    // The Delta kernel logs every snapshot at INFO; keep custos' own INFO and the libraries' warnings.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,custos=info,custos_store=info,custos_server=info,custos_collector=info",
                )
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let file = match &config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut options = file.validate()?;
    if let Some(d) = data {
        options.store.data_dir = d;
    }
    if let Some(a) = otlp_grpc {
        options.otlp_grpc = a;
    }
    if let Some(a) = otlp_http {
        options.otlp_http = a;
    }
    if let Some(a) = api {
        options.api = a;
    }
    if let Some(w) = workflows {
        if !w.is_dir() {
            return Err(UserError(format!(
                "`--workflows` `{}` is not a directory",
                w.display()
            ))
            .into());
        }
        options.executor.workflows = Some(w);
    }
    let data_dir = options.store.data_dir.clone();
    let server = custos_server::start(options).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "custos {} serving data in {}",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    )?;
    writeln!(out, "OTLP/gRPC listening on {}", server.otlp_grpc)?;
    writeln!(
        out,
        "OTLP/HTTP listening on http://{}/v1/traces",
        server.otlp_http
    )?;
    writeln!(out, "API listening on http://{}", server.api)?;
    out.flush()?;
    drop(out);
    wait_for_signal().await?;
    eprintln!("shutting down: finishing requests in flight and flushing");
    server.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn sql(
    data: Option<PathBuf>,
    server: Option<String>,
    prices: Option<PathBuf>,
    format: &str,
    query: &str,
) -> Result<ExitCode> {
    let format: Format = format.parse().map_err(anyhow::Error::msg)?;
    if format == Format::Arrow {
        bail!(
            "`--format arrow` writes binary; use the API with `Accept: application/vnd.apache.arrow.stream` instead"
        );
    }
    let bytes = match server {
        Some(url) => {
            let url = format!("{}/api/sql", url.trim_end_matches('/'));
            let request = reqwest::Client::new()
                .post(&url)
                .header("accept", format.content_type())
                .json(&serde_json::json!({ "sql": query }));
            match send(request, &url).await? {
                Ok(body) => body.to_vec(),
                // Every refusal of a query is reported as the user's (exit 2), as before.
                Err((_, msg)) => return Err(user(msg)),
            }
        }
        None => {
            let dir = data.unwrap_or_else(|| PathBuf::from("./custos-data"));
            if !dir.exists() {
                bail!(
                    "data directory `{}` does not exist; pass --data DIR or --server URL",
                    dir.display()
                );
            }
            let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, None)?)?;
            match custos_server::query_offline(&dir, query, QueryOptions::default(), &rules).await {
                Ok(r) => render(&r, format)?,
                Err(custos_server::Error::Analytics(e)) => return Err(analytics_err(e)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// Policy problems on stderr, one `error: file:line:col: message` per line.
fn print_problems(problems: &[custos_policy::Problem]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

fn policy_validate(dir: &std::path::Path) -> Result<ExitCode> {
    match custos_policy::load(dir) {
        Ok(p) => {
            println!(
                "{}: {} policies valid against the schema; policy set {}",
                dir.display(),
                p.len(),
                p.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(custos_policy::Error::Invalid(problems)) => {
            print_problems(&problems);
            eprintln!("{} problem(s) in `{}`", problems.len(), dir.display());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(user(e)),
    }
}

fn policy_test(dir: &std::path::Path, tests: Option<PathBuf>, format: &str) -> Result<ExitCode> {
    check_format(format, &["text", "junit"])?;
    let policies = match custos_policy::load(dir) {
        Ok(p) => p,
        Err(custos_policy::Error::Invalid(problems)) => {
            print_problems(&problems);
            eprintln!(
                "the policies are invalid; fix them before testing (`custos policy validate`)"
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(user(e)),
    };
    let tests = tests.unwrap_or_else(|| dir.join("tests"));
    let report = custos_policy::testing::run(&policies, &tests).map_err(user)?;
    let out = match format {
        "junit" => custos_policy::testing::render_junit(&report),
        _ => custos_policy::testing::render_text(&report),
    };
    print!("{out}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn gate(
    change: &std::path::Path,
    data: Option<PathBuf>,
    server: Option<String>,
    policies: &std::path::Path,
    prices: Option<PathBuf>,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_server::gate::{ChangeFile, GateFormat, GateReport, render};
    let format = GateFormat::parse(format)?;
    let change = ChangeFile::load(change)?;
    let report: GateReport = match server {
        Some(url) => {
            let url = format!("{}/api/gate", url.trim_end_matches('/'));
            let body = serde_json::json!({"change": change, "at": at});
            match send(reqwest::Client::new().post(&url).json(&body), &url).await? {
                Ok(body) => serde_json::from_slice(&body)
                    .context("the server's gate answer is not the expected JSON")?,
                Err((status, msg)) => bail!("the server answered {status}: {msg}"),
            }
        }
        None => {
            let dir = data.unwrap_or_else(|| PathBuf::from("./custos-data"));
            if !dir.exists() {
                bail!(
                    "data directory `{}` does not exist; pass --data DIR or --server URL",
                    dir.display()
                );
            }
            let at = parse_time(at)?;
            let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, None)?)?;
            custos_server::gate_offline(&dir, policies, &change, at, &rules).await?
        }
    };
    print!("{}", render(&report, format)?);
    Ok(ExitCode::from(report.exit_code() as u8))
}

fn parse_time(at: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>> {
    match at {
        None => Ok(chrono::Utc::now()),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                user(format!(
                    "`--at {s}` is not an RFC 3339 time like 2026-11-21T12:00:00Z: {e}"
                ))
            }),
    }
}

/// A report bound: a date is a whole UTC day (its start, or for `end` the next day's start).
fn report_bound(s: &str, flag: &str, end: bool) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => {
            let d = if end { d + chrono::Days::new(1) } else { d };
            Ok(d.and_time(chrono::NaiveTime::MIN).and_utc())
        }
        Err(_) => Err(user(format!(
            "`{flag} {s}` is neither a date like 2026-11-01 nor an RFC 3339 time like 2026-11-01T00:00:00Z"
        ))),
    }
}

async fn audit_report(
    from: &str,
    to: &str,
    out: &std::path::Path,
    format: &str,
    data: Option<PathBuf>,
    slos: Option<PathBuf>,
    prices: Option<PathBuf>,
) -> Result<ExitCode> {
    use custos_server::report::{ReportFormat, write};
    let formats = ReportFormat::parse_list(format).map_err(user)?;
    let (from, to) = (
        report_bound(from, "--from", false)?,
        report_bound(to, "--to", true)?,
    );
    if to <= from {
        return Err(user("`--to` must be after `--from`"));
    }
    let dir = data.unwrap_or_else(|| PathBuf::from("./custos-data"));
    if !dir.exists() {
        return Err(user(format!(
            "data directory `{}` does not exist; pass --data DIR",
            dir.display()
        )));
    }
    let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, slos).map_err(user)?)
        .map_err(user)?;
    let report = custos_server::report_offline(&dir, &rules, from, to).await?;
    let files = write(&report, out, &formats)?;
    println!(
        "audit report {} .. {} written to {}:",
        from.to_rfc3339(),
        to.to_rfc3339(),
        out.display()
    );
    for f in &files {
        println!("  {:<20} {:>9} bytes  sha256 {}", f.file, f.bytes, f.sha256);
    }
    println!("  manifest.json (lists them, with the audit chain's last hash)");
    if !report.integrity.ok() {
        eprintln!("warning: the audit log failed verification; the report says where");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(data: Option<PathBuf>, format: &str) -> Result<ExitCode> {
    check_format(format, &["text", "json"])?;
    let dir = data.unwrap_or_else(|| PathBuf::from("./custos-data"));
    if !dir.exists() {
        return Err(user(format!(
            "data directory `{}` does not exist; pass --data DIR",
            dir.display()
        )));
    }
    let v = custos_audit::verify(&custos_server::audit_dir(&dir))?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match &v.finding {
            None => {
                println!(
                    "audit log `{}`: {} record(s), chain intact; last record {} ({})",
                    v.path.display(),
                    v.records,
                    v.last_seq,
                    v.last_hash
                );
                if v.partial_tail {
                    println!(
                        "note: the log ends in a partial record left by a crash; it was never acknowledged and the next writer removes it"
                    );
                }
            }
            Some(f) => {
                println!(
                    "audit log `{}`: TAMPERED: {} (checked {} intact record(s) before it)",
                    v.path.display(),
                    f.message,
                    v.records
                );
            }
        }
    }
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A mistake in the user's input (flags, rules, SQL): printed as `error: ...`, exit code 2.
#[derive(Debug)]
struct UserError(String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

fn user(msg: impl std::fmt::Display) -> anyhow::Error {
    UserError(msg.to_string()).into()
}

/// An analytics error: the user's fault (exit 2) or not (exit 1).
fn analytics_err(e: custos_analytics::Error) -> anyhow::Error {
    if e.is_client_error() {
        user(e)
    } else {
        e.into()
    }
}

fn check_format(format: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&format) {
        Ok(())
    } else {
        Err(user(format!(
            "unknown format `{format}`; expected {}",
            allowed.join(", ")
        )))
    }
}

/// Opens `--data` read-only with the price table and, when given, an SLO file.
async fn open_data(
    source: &Source,
    slos: Option<PathBuf>,
) -> Result<(Analytics, custos_server::Rules)> {
    let dir = source
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("./custos-data"));
    if !dir.exists() {
        bail!(
            "data directory `{}` does not exist; pass --data DIR or --server URL",
            dir.display()
        );
    }
    let rules_options = RulesOptions::resolve(source.prices.clone(), slos).map_err(user)?;
    let rules = custos_server::Rules::load(&rules_options).map_err(user)?;
    match custos_server::open_offline(&dir, QueryOptions::default(), &rules).await {
        Ok(a) => Ok((a, rules)),
        Err(custos_server::Error::Analytics(e)) => Err(analytics_err(e)),
        Err(e) => Err(e.into()),
    }
}

/// GETs a JSON answer from the server's API; a 4xx answer is the user's error.
async fn get_json<T: DeserializeOwned>(
    server: &str,
    path: &str,
    query: &[(&str, String)],
) -> Result<T> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    match send(reqwest::Client::new().get(&url).query(query), &url).await? {
        Ok(body) => {
            serde_json::from_slice(&body).context("the server's answer is not the expected JSON")
        }
        Err((status, msg)) if status.is_client_error() => Err(user(msg)),
        Err((status, msg)) => bail!("the server answered {status}: {msg}"),
    }
}

/// Sends a request to the API: the body of a success, or the status and the `error` message of
/// a refusal. Connection failures are errors.
async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<std::result::Result<bytes::Bytes, (reqwest::StatusCode, String)>> {
    let res = request
        .send()
        .await
        .with_context(|| format!("cannot reach `{url}`"))?;
    let status = res.status();
    let body = res
        .bytes()
        .await
        .context("cannot read the server's answer")?;
    if status.is_success() {
        return Ok(Ok(body));
    }
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Ok(Err((status, msg)))
}

/// `key=value` query parameters, leaving out absent ones.
fn params<'a>(pairs: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

fn print(text: &str) -> Result<ExitCode> {
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn metrics(
    source: Source,
    window: &str,
    by: &str,
    format: &str,
    at: Option<&str>,
) -> Result<ExitCode> {
    use custos_analytics::metrics::{MetricsReport, compute, render_csv, render_table};
    check_format(format, &["table", "json", "csv"])?;
    let report: MetricsReport = match &source.server {
        Some(url) => {
            let q = params(&[
                ("window", Some(window.to_string())),
                ("by", Some(by.to_string())),
                ("at", at.map(String::from)),
            ]);
            get_json(url, "/api/metrics", &q).await?
        }
        None => {
            let req = custos_server::metrics_request(Some(window), Some(by), at).map_err(user)?;
            let (analytics, _) = open_data(&source, None).await?;
            compute(&analytics, &req).await.map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        "csv" => render_csv(&report),
        _ => render_table(&report),
    })
}

async fn thresholds(
    source: Source,
    workflow: &str,
    step: Option<&str>,
    target_error: f64,
    window: &str,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_analytics::thresholds::{ThresholdReport, compute, render_table};
    check_format(format, &["table", "json"])?;
    let report: ThresholdReport = match &source.server {
        Some(url) => {
            let q = params(&[
                ("workflow", Some(workflow.to_string())),
                ("step", step.map(String::from)),
                ("target_error", Some(target_error.to_string())),
                ("window", Some(window.to_string())),
                ("at", at.map(String::from)),
            ]);
            get_json(url, "/api/thresholds", &q).await?
        }
        None => {
            let req = custos_server::threshold_request(
                workflow,
                step,
                Some(target_error),
                Some(window),
                at,
            )
            .map_err(user)?;
            let (analytics, _) = open_data(&source, None).await?;
            compute(&analytics, &req).await.map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        _ => render_table(&report),
    })
}

async fn slo(
    source: Source,
    rules: Option<PathBuf>,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_analytics::slo::{SloReport, evaluate, render_table};
    check_format(format, &["table", "json"])?;
    let report: SloReport = match &source.server {
        Some(url) => {
            let q = params(&[("at", at.map(String::from))]);
            get_json(url, "/api/slo", &q).await?
        }
        None => {
            let rules = Some(rules.unwrap_or_else(|| PathBuf::from("rules/slos.yaml")));
            let (analytics, loaded) = open_data(&source, rules).await?;
            let set = loaded
                .slos
                .ok_or_else(|| user("no SLO file; pass --rules FILE"))?;
            let at = match at {
                None => chrono::Utc::now(),
                Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        user(format!(
                            "`--at {s}` is not an RFC 3339 time like 2026-11-21T12:00:00Z: {e}"
                        ))
                    })?
                    .with_timezone(&chrono::Utc),
            };
            evaluate(&analytics, &set, at)
                .await
                .map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        _ => render_table(&report),
    })?;
    Ok(if report.paging() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn bench_analytics(
    spans: usize,
    data: Option<PathBuf>,
    prices: Option<PathBuf>,
    slos: Option<PathBuf>,
    duckdb_script: Option<PathBuf>,
    repeats: usize,
    json: bool,
) -> Result<ExitCode> {
    if spans == 0 {
        bail!("`--spans` must be greater than 0");
    }
    let rules = RulesOptions::resolve(prices, slos)?;
    let script = duckdb_script.or_else(custos_bench::analytics::default_duckdb_script);
    let r = custos_bench::analytics::run(custos_bench::analytics::AnalyticsBenchOptions {
        spans,
        data_dir: data,
        prices: rules.prices,
        slos: rules.slos,
        duckdb_script: script,
        repeats,
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "analytics: {} spans, {} runs, {} Parquet files ({:.1} MiB, {:.1} B/span){}",
        r.spans,
        r.runs,
        r.files,
        r.table_bytes as f64 / 1048576.0,
        r.table_bytes as f64 / r.spans.max(1) as f64,
        if r.load_seconds > 0.0 {
            format!(", loaded in {:.0} s", r.load_seconds)
        } else {
            String::new()
        }
    );
    match (&r.duckdb_version, &r.duckdb_skipped) {
        (Some(v), _) => println!("  compared with DuckDB {v} over the same active Parquet files"),
        (None, Some(why)) => println!("  DuckDB not compared: {why}"),
        _ => {}
    }
    println!(
        "  {:<58} {:>10} {:>10} {:>8}",
        "question", "custos ms", "DuckDB ms", "ratio"
    );
    for t in &r.timings {
        println!(
            "  {:<58} {:>10.1} {:>10} {:>8}",
            t.name,
            t.custos_ms,
            t.duckdb_ms.map_or("-".into(), |v| format!("{v:.1}")),
            t.ratio.map_or("-".into(), |v| format!("{v:.2}x")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_policy(
    policies: &std::path::Path,
    decisions: usize,
    durable: usize,
    json: bool,
) -> Result<ExitCode> {
    if decisions == 0 || durable == 0 {
        return Err(user("`--decisions` and `--durable` must be greater than 0"));
    }
    let r = custos_bench::policy::run(policies, decisions, durable).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy decisions: {} policies from {}, a mix of 6 requests (deploy, execute)",
        r.policies,
        policies.display()
    );
    for (name, l) in [
        ("evaluation only (Engine::decide)", &r.evaluate_only),
        ("in process (Engine::authorize)", &r.in_process),
        ("recorded (+ audit append, fdatasync)", &r.recorded),
        ("POST /api/authorize (loopback)", &r.http),
    ] {
        println!(
            "  {name:<38} {:>8} decisions  p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs  {:>9.0}/s",
            l.decisions, l.p50_us, l.p99_us, l.max_us, l.per_second
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_ingest(
    spans: usize,
    batch: usize,
    concurrency: usize,
    data: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    if batch == 0 || spans == 0 || concurrency == 0 {
        bail!("`--spans`, `--batch` and `--concurrency` must be greater than 0");
    }
    let exe = std::env::current_exe().context("cannot find the custos executable")?;
    let r = custos_bench::ingest::run(
        &exe,
        custos_bench::ingest::BenchOptions {
            spans,
            batch,
            concurrency,
            data_dir: data,
        },
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "ingest: {} spans in {} requests of {batch}, {concurrency} connections, durable acks",
        r.spans, r.requests
    );
    println!(
        "  throughput        {:>12.0} spans/s  ({:.2} s wall)",
        r.spans_per_second, r.seconds
    );
    println!(
        "  per server CPU s  {:>12.0} spans/s  ({:.2} server CPU s; the clients used {:.2})",
        r.spans_per_cpu_second, r.cpu_seconds, r.client_cpu_seconds
    );
    println!(
        "  latency           p50 {:.2} ms, p99 {:.2} ms",
        r.latency_ms_p50, r.latency_ms_p99
    );
    println!(
        "  WAL               {} fsyncs, {:.1} requests per fsync, {:.0} B/span",
        r.wal_syncs, r.records_per_sync, r.wal_bytes_per_span
    );
    println!(
        "  on the wire       {:.0} B/span (OTLP protobuf)",
        r.wire_bytes_per_span
    );
    println!(
        "  on disk           {:.1} B/span (Parquet after flush and compaction)",
        r.disk_bytes_per_span
    );
    println!(
        "  shutdown flush    {:.2} s, compaction {:.2} s",
        r.flush_seconds, r.compaction_seconds
    );
    println!("  peak memory       {:.0} MiB RSS (server)", r.peak_rss_mib);
    let st = &r.stages;
    println!(
        "  stages (1 core)   decode {:.2} µs/span, normalize {:.2}, IPC encode {:.2}, WAL write {:.2}; one fsync {:.0} µs",
        st.decode_us, st.normalize_us, st.encode_us, st.wal_write_us, st.fsync_us
    );
    Ok(ExitCode::SUCCESS)
}
