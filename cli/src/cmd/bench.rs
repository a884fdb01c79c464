//! `custos bench ...`: benchmarks of analytics, policy decisions, the executor and ingest.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use custos_server::RulesOptions;

use super::user;
use crate::flags::BenchCommand;

/// Runs `custos bench ...`.
pub async fn run(what: BenchCommand) -> Result<ExitCode> {
    match what {
        BenchCommand::Analytics {
            spans,
            data,
            prices,
            slos,
            duckdb_script,
            repeats,
            workload,
            json,
        } => {
            let options = custos_bench::analytics::AnalyticsBenchOptions {
                spans,
                data_dir: data,
                prices,
                slos,
                duckdb_script,
                repeats,
                workload,
            };
            bench_analytics(options, json).await
        }
        BenchCommand::Policy {
            policies,
            decisions,
            durable,
            concurrency,
            json,
        } => bench_policy(&policies, decisions, durable, concurrency, json).await,
        BenchCommand::Executor {
            policies,
            runs,
            concurrency,
            json,
        } => {
            let figures = custos_bench::executor::run(&policies, runs, concurrency).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                print!("{}", custos_bench::executor::render(&figures));
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Faults {
            seconds,
            kills,
            clients,
            data,
            json,
        } => {
            if seconds == 0 || seconds > 3600 || kills > 100 || clients == 0 || clients > 64 {
                bail!(
                    "`--seconds` must be 1 to 3600, `--kills` at most 100 and `--clients` 1 to 64"
                );
            }
            let exe = std::env::current_exe().context("cannot find the custos executable")?;
            let r = custos_bench::faults::run(
                &exe,
                custos_bench::faults::FaultOptions {
                    phase_seconds: seconds,
                    kills,
                    clients,
                    data_dir: data,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", custos_bench::faults::render(&r));
            }
            Ok(if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        BenchCommand::Ingest {
            spans,
            batch,
            concurrency,
            data,
            redaction,
            workload,
            json,
        } => {
            let options = custos_bench::ingest::BenchOptions {
                spans,
                batch,
                concurrency,
                data_dir: data,
                redaction,
                workload,
            };
            bench_ingest(options, json).await
        }
    }
}

async fn bench_analytics(
    mut options: custos_bench::analytics::AnalyticsBenchOptions,
    json: bool,
) -> Result<ExitCode> {
    if options.spans == 0 {
        bail!("`--spans` must be greater than 0");
    }
    let rules = RulesOptions::resolve(options.prices.take(), options.slos.take())?;
    options.prices = rules.prices;
    options.slos = rules.slos;
    options.duckdb_script = options
        .duckdb_script
        .or_else(custos_bench::analytics::default_duckdb_script);
    let r = custos_bench::analytics::run(options).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "analytics ({:?} workload, {} days): {} spans, {} runs, {} Parquet files ({:.1} MiB, {:.1} B/span){}",
        r.workload,
        r.days,
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
        (Some(v), _) => println!(
            "  compared with DuckDB {v} (2 threads) over (a) the same active Parquet files and (b) one file of the same spans DuckDB wrote{}",
            r.single_file_bytes.map_or(String::new(), |b| format!(
                " ({:.1} B/span)",
                b as f64 / r.spans.max(1) as f64
            ))
        ),
        (None, Some(why)) => println!("  DuckDB not compared: {why}"),
        _ => {}
    }
    println!(
        "  {:<58} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "question", "custos ms", "(a) ms", "ratio", "(b) ms", "ratio"
    );
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
    for t in &r.timings {
        println!(
            "  {:<58} {:>10.1} {:>10} {:>8} {:>10} {:>8}",
            t.name,
            t.custos_ms,
            ms(t.duckdb_ms),
            x(t.ratio),
            ms(t.duckdb_single_ms),
            x(t.ratio_single),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_policy(
    policies: &std::path::Path,
    decisions: usize,
    durable: usize,
    concurrency: usize,
    json: bool,
) -> Result<ExitCode> {
    if decisions == 0 || durable == 0 || !(1..=1024).contains(&concurrency) {
        return Err(user(
            "`--decisions` and `--durable` must be greater than 0 and `--concurrency` 1 to 1024",
        ));
    }
    let r = custos_bench::policy::run(policies, decisions, durable, concurrency).await?;
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
        ("recorded, callers at once", &r.recorded_concurrent),
        ("POST /api/authorize, in flight", &r.http_concurrent),
    ] {
        println!(
            "  {name:<38} {:>8} decisions  p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs  {:>9.0}/s",
            l.decisions, l.p50_us, l.p99_us, l.max_us, l.per_second
        );
    }
    println!(
        "  ({} callers at once; {:.1} audit records per fdatasync when recorded concurrently)",
        r.concurrency, r.records_per_sync
    );
    println!("access control, per request:");
    let a = &r.access;
    for (name, l) in [
        ("authenticate a token (in process)", &a.authenticate),
        ("access decision (in process)", &a.decide),
        ("GET /healthz, no token (loopback)", &a.http_open),
        ("GET /api/whoami, token (loopback)", &a.http_authenticated),
    ] {
        println!(
            "  {name:<38} {:>8} requests   p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs  {:>9.0}/s",
            l.decisions, l.p50_us, l.p99_us, l.max_us, l.per_second
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_ingest(options: custos_bench::ingest::BenchOptions, json: bool) -> Result<ExitCode> {
    let (batch, concurrency) = (options.batch, options.concurrency);
    if batch == 0 || options.spans == 0 || concurrency == 0 {
        bail!("`--spans`, `--batch` and `--concurrency` must be greater than 0");
    }
    let exe = std::env::current_exe().context("cannot find the custos executable")?;
    let r = custos_bench::ingest::run(&exe, options).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "ingest ({:?} workload): {} spans in {} requests of {batch}, {concurrency} connections, durable acks",
        r.workload, r.spans, r.requests
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
        "  stages (1 core)   decode {:.2} µs/span, redact {:.2}, normalize {:.2}, IPC encode {:.2}, WAL write {:.2}; one fsync {:.0} µs",
        st.decode_us, st.redact_us, st.normalize_us, st.encode_us, st.wal_write_us, st.fsync_us
    );
    Ok(ExitCode::SUCCESS)
}
