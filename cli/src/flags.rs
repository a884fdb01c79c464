//! The command line: every command, subcommand and flag, parsed by clap. Nothing here does
//! work; `cmd/` holds one module per command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use crate::cmd::redact::RedactCommand;
pub use crate::cmd::review::ReviewCommand;
pub use crate::cmd::token::TokenCommand;

/// The data directory when `--data` is not given.
pub const DEFAULT_DATA: &str = "./custos-data";

/// `--data` or the default data directory.
pub fn data_dir(data: Option<PathBuf>) -> PathBuf {
    data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA))
}

/// custos: observability and governance for AI workflow automation.
#[derive(Parser)]
#[command(name = "custos", version, about)]
pub struct Cli {
    /// Bearer token for a server (`--server` modes, `custos top`) or, offline, to say who you
    /// are on a data directory (`custos review`, `custos run`). Create one with
    /// `custos token create`; a new server writes one to DATA/auth/admin.token.
    #[arg(long, global = true, env = "CUSTOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed an `https://` server's certificate (default: the system's
    /// CAs).
    #[arg(long, global = true, env = "CUSTOS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM file of a client certificate, for a server that asks for one (mutual TLS).
    #[arg(long, global = true, env = "CUSTOS_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, global = true, env = "CUSTOS_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the server: OTLP receivers, span store, SQL API, policy decisions and the audit log.
    Serve(ServeArgs),
    /// Run a read-only SQL query against a data directory or a server.
    Sql(SqlArgs),
    /// Print the standard metrics: latency, success, review and override rates, cost per success,
    /// errors, retries and confidence drift.
    Metrics(MetricsArgs),
    /// Tune a workflow's confidence threshold from reviewed decisions: automation rate and expected
    /// error rate per threshold, and the threshold that meets a target error rate.
    Thresholds(ThresholdsArgs),
    /// Evaluate the SLOs: SLI, error budget and burn-rate alerts. Exits 3 when a page alert fires.
    Slo(SloArgs),
    /// Validate and test the governance policies (Cedar).
    Policy {
        #[command(subcommand)]
        what: PolicyCommand,
    },
    /// The deploy gate for CI: measure a candidate prompt or model version on its canary traffic
    /// and evaluate the deploy policies. Exits 0 allow, 2 deny, 1 error.
    Gate(GateArgs),
    /// Run a workflow with the reference executor: durable (journaled in DATA/executor), with
    /// policy checks, human review and OTLP telemetry; `--resume` completes runs after a crash.
    Run(RunArgs),
    /// Drive workflows with synthetic inputs, simulated reviewers and scenarios (drift, canary
    /// prompts, a slow connector, a cost spike); spans go to a collector.
    Simulate(SimulateArgs),
    /// The whole loop in one command: start a server on a fresh data directory, simulate a few
    /// thousand runs of the reference workflows with a healthy and a regressing canary prompt,
    /// then print metrics, SLOs, both gate decisions and the audit verification.
    Demo(DemoArgs),
    /// The operator's terminal dashboard: health tiles, SLOs, runs, reviews, policy decisions and
    /// the audit trail of a server, refreshed live (press `?` for keys).
    Top(TopArgs),
    /// Human review tasks: list them, show one, approve or reject with a reason (authorized as
    /// `approve_review` and recorded in the audit trail).
    Review {
        #[command(subcommand)]
        what: ReviewCommand,
    },
    /// The audit trail: verify its hash chain, write compliance reports.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Tokens: create one for a principal of the entity store (printed once: `id ID` first,
    /// the token last), list them, revoke one. On a data directory (whether or not a server runs
    /// on it) or through a server.
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// Erase one person's data (`--person VALUE`) or chosen spans (`--where CONDITION`) from the
    /// table, the WAL, the executor's journal and the connectors' files; recorded in the audit
    /// log with the values as pseudonyms (docs/privacy.md).
    Erase(crate::cmd::erase::EraseArgs),
    /// Redaction rules: see what they change in an OTLP/JSON file before any data is sent
    /// (docs/privacy.md).
    Redact {
        #[command(subcommand)]
        what: RedactCommand,
    },
    /// The write-ahead log: check it for damage, salvage what can be read (docs/operations.md).
    Wal {
        #[command(subcommand)]
        what: crate::cmd::wal::WalCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

// The arguments of `custos serve` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory (WAL and Delta tables) [default: ./custos-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Configuration file (TOML); see custos.example.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    pub otlp_http: Option<SocketAddr>,
    /// API listen address [default: 127.0.0.1:4380].
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Workflow definitions the server runs for `POST /api/runs` [default: ./workflows if it
    /// exists].
    #[arg(long)]
    pub workflows: Option<PathBuf>,
    /// Policy directory: governance and who may call every port [default: ./rules/policy if it
    /// exists; the server does not start without one].
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Redaction rules applied to every export before it is written [default:
    /// ./rules/redaction.yaml if it exists, else the shipped detectors' defaults].
    #[arg(long)]
    pub redaction: Option<PathBuf>,
}

// The arguments of `custos sql` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct SqlArgs {
    /// Data directory to read directly (safe while a server runs on it).
    #[arg(long, conflicts_with = "server")]
    pub data: Option<PathBuf>,
    /// Server API URL, e.g. http://127.0.0.1:4380.
    #[arg(long)]
    pub server: Option<String>,
    /// Output format: table, csv, json, ndjson.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Model price table for spans without a reported cost [default: rules/prices.yaml if present].
    #[arg(long, conflicts_with = "server")]
    pub prices: Option<PathBuf>,
    /// The query.
    pub query: String,
}

// The arguments of `custos metrics` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub source: Source,
    /// Window length ending at `--at`, e.g. 1h, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub window: String,
    /// Grouping: workflow, model, version, minute, hour, day.
    #[arg(long, default_value = "workflow")]
    pub by: String,
    /// Output format: table, json, csv.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// End of the window, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
}

// The arguments of `custos thresholds` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct ThresholdsArgs {
    #[command(flatten)]
    pub source: Source,
    /// Workflow name.
    #[arg(long)]
    pub workflow: String,
    /// Only this decision step.
    #[arg(long)]
    pub step: Option<String>,
    /// Target error rate (overrides among automated decisions), e.g. 0.03.
    #[arg(long, default_value_t = 0.03)]
    pub target_error: f64,
    /// Window of decisions to learn from, ending at `--at`.
    #[arg(long, default_value = "30d")]
    pub window: String,
    /// End of the window, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Output format: table, json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

// The arguments of `custos slo` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct SloArgs {
    #[command(flatten)]
    pub source: Source,
    /// SLO file [default: rules/slos.yaml].
    #[arg(long, conflicts_with = "server")]
    pub rules: Option<PathBuf>,
    /// Evaluation time, RFC 3339 [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// Output format: table, json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

// The arguments of `custos gate` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct GateArgs {
    /// Change file (YAML or JSON): change, workflow, current, candidate, requested_by, canary.
    #[arg(long)]
    pub change: PathBuf,
    /// Data directory to measure (and whose audit log records the decision)
    /// [default: ./custos-data].
    #[arg(long, conflicts_with = "server")]
    pub data: Option<PathBuf>,
    /// Server API URL: the server measures, decides with its policies and records.
    #[arg(long)]
    pub server: Option<String>,
    /// Policy directory for `--data` [default: rules/policy].
    #[arg(long, conflicts_with = "server", default_value = "rules/policy")]
    pub policies: PathBuf,
    /// Model price table for `--data` [default: rules/prices.yaml if present].
    #[arg(long, conflicts_with = "server")]
    pub prices: Option<PathBuf>,
    /// Evaluation time, RFC 3339 [default: now]; a `canary.last` window ends here.
    #[arg(long)]
    pub at: Option<String>,
    /// Output format: text, json, github, junit, sarif.
    #[arg(long, default_value = "text")]
    pub format: String,
}

// The arguments of `custos run` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Workflow definition (YAML, docs/executor.md).
    #[arg(required_unless_present = "resume")]
    pub workflow: Option<PathBuf>,
    /// Inputs, one JSON object per line; each line starts one run (once: a repeated command
    /// starts only lines that never started).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Complete every unfinished run of the data directory's journal.
    #[arg(long, conflicts_with_all = ["workflow", "input", "server"])]
    pub resume: bool,
    /// Data directory holding the journal, connector effects and audit log
    /// [default: ./custos-data].
    #[arg(long, conflicts_with = "server")]
    pub data: Option<PathBuf>,
    /// Policy directory (side effects and reviews are authorized with it; without policies
    /// every side effect is denied).
    #[arg(long, conflicts_with = "server", default_value = "rules/policy")]
    pub policies: PathBuf,
    /// Where spans go: `http://HOST:4318` (OTLP/HTTP) or `grpc://HOST:4317` (OTLP/gRPC).
    #[arg(long, conflicts_with = "server")]
    pub otlp: Option<String>,
    /// Server API URL: start the runs on the server (`POST /api/runs`) instead.
    #[arg(long)]
    pub server: Option<String>,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

// The arguments of `custos simulate` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Workflow definitions to drive.
    #[arg(long, default_value = "fixtures/workflows")]
    pub workflows: PathBuf,
    /// Runs in all, spread evenly over the workflows.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Runs started per second [default: as fast as possible].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of the synthetic inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scenario file (YAML; fixtures/scenarios/ has examples).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Data directory for the journal, connector effects and audit log (not one a server
    /// runs workflows on) [default: ./custos-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Policy directory.
    #[arg(long, default_value = "rules/policy")]
    pub policies: PathBuf,
    /// Where spans go: `http://HOST:4318` or `grpc://HOST:4317`.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    pub otlp: String,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

// The arguments of `custos demo` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Data directory, replaced if it holds an earlier demo [default: ./custos-demo].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Runs in all.
    #[arg(long, default_value_t = 3000)]
    pub runs: usize,
    /// Keep the server running afterwards (until Ctrl-C) to explore it.
    #[arg(long)]
    pub keep_serving: bool,
}

// The arguments of `custos top` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
pub struct TopArgs {
    /// Server API URL.
    #[arg(long, default_value = "http://127.0.0.1:4380")]
    pub server: String,
    /// Seconds between polls.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
}

/// Where analytics commands read from.
#[derive(clap::Args)]
pub struct Source {
    /// Data directory to read directly (safe while a server runs on it) [default: ./custos-data].
    #[arg(long, conflicts_with = "server")]
    pub data: Option<PathBuf>,
    /// Server API URL, e.g. http://127.0.0.1:4380.
    #[arg(long)]
    pub server: Option<String>,
    /// Model price table for spans without a reported cost [default: rules/prices.yaml if present].
    #[arg(long, conflicts_with = "server")]
    pub prices: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
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
    /// Make a running server reload its policy directory and workflow definitions (needs
    /// `reload`: admins). Prints what changed; exits 2 naming the file when they do not load, in
    /// which case nothing changed. `kill -HUP` does the same without a token.
    Reload {
        /// Server API URL.
        #[arg(long, default_value = "http://127.0.0.1:4380")]
        server: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain. Exits 1 naming the first record that was modified, deleted,
    /// inserted or reordered.
    Verify {
        /// Data directory [default: ./custos-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// A record hash published elsewhere (an earlier report's manifest, a ticket): fails when
        /// the log no longer contains it.
        #[arg(long)]
        anchor: Option<String>,
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
pub enum BenchCommand {
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
        /// The spans to load: `synthetic` (custos' reference workflows, about six spans a run
        /// over 30 days) or `foreign` (a user's own SDK shape: random ids, 15–20 attributes a
        /// span, run ids on roots only, over 14 days).
        #[arg(long, default_value = "synthetic")]
        workload: custos_bench::ingest::Workload,
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
        /// Recorded (fsync) and HTTP decisions to time one at a time (five times as many with
        /// `--concurrency` callers).
        #[arg(long, default_value_t = 2_000)]
        durable: usize,
        /// Callers at once for the concurrent recorded and HTTP figures.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A fault suite under load on loopback: slow clients, oversized and malformed exports,
    /// heavy queries and repeated `kill -9`, while well-behaved clients export; reports
    /// acknowledged spans lost and duplicated, panics, the peak RSS and each phase's latency.
    /// Exits 1 when an invariant broke.
    Faults {
        /// Seconds each phase lasts.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// `kill -9` and restarts in the kill phase.
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Well-behaved clients exporting all along.
        #[arg(long, default_value_t = 2)]
        clients: usize,
        /// Data directory to keep (default: a temporary one, removed afterwards).
        #[arg(long)]
        data: Option<PathBuf>,
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
        /// Redaction rules for the server, or `off` (every detector off) to measure what
        /// redaction costs [default: rules/redaction.yaml if present].
        #[arg(long)]
        redaction: Option<String>,
        /// The spans to send: `synthetic` (64 distinct requests of custos' executor's shape, sent
        /// in turn) or `foreign` (every span distinct, a user's own SDK shape, 14 days in order).
        #[arg(long, default_value = "synthetic")]
        workload: custos_bench::ingest::Workload,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
