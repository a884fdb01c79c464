//! The `custos` command: argument parsing and dispatch only. The work is in the library crates.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use custos_analytics::QueryOptions;
use custos_analytics::format::{Format, render};
use custos_server::Config;

/// custos: observability and governance for AI workflow automation.
#[derive(Parser)]
#[command(name = "custos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, span store, SQL API.
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
        /// The query.
        query: String,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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
        } => serve(data, config, otlp_grpc, otlp_http, api).await,
        Command::Sql {
            data,
            server,
            format,
            query,
        } => sql(data, server, &format, &query).await,
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
            let res = reqwest::Client::new()
                .post(&url)
                .header("accept", format.content_type())
                .json(&serde_json::json!({ "sql": query }))
                .send()
                .await
                .with_context(|| format!("cannot reach `{url}`"))?;
            let status = res.status();
            let body = res
                .bytes()
                .await
                .context("cannot read the server's answer")?;
            if !status.is_success() {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                eprintln!("error: {msg}");
                return Ok(ExitCode::from(2));
            }
            body.to_vec()
        }
        None => {
            let dir = data.unwrap_or_else(|| PathBuf::from("./custos-data"));
            if !dir.exists() {
                bail!(
                    "data directory `{}` does not exist; pass --data DIR or --server URL",
                    dir.display()
                );
            }
            match custos_server::query_offline(&dir, query, QueryOptions::default()).await {
                Ok(r) => render(&r, format)?,
                Err(custos_server::Error::Analytics(e)) if e.is_client_error() => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    std::io::stdout().write_all(&bytes)?;
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
    let r = custos_server::bench::ingest(
        &exe,
        custos_server::bench::BenchOptions {
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
