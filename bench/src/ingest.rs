//! `custos bench ingest`: end-to-end ingest over loopback with durable acknowledgments.
//!
//! Starts `custos serve` as a child process in a temporary (or given) data directory, sends
//! pre-encoded OTLP/HTTP protobuf exports of a realistic automation workload from concurrent
//! clients in this process, and reports throughput, request latency, the server's own CPU time,
//! WAL group-commit behaviour, the server's peak memory, and bytes per span on disk after the
//! shutdown flush and a compaction. The workload is [`custos_synth::ingest`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use custos_synth::Rng;
use custos_synth::ingest::workload_request;
use prost::Message as _;
use serde::Serialize;

mod send;
mod stages;

use send::{Bodies, export_all};
pub use send::{FOREIGN_END_UNIX_NANO, Workload, foreign_options, foreign_requests};
pub use stages::StageCosts;
use stages::stage_costs;

use crate::{Error, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Total spans to send.
    pub spans: usize,
    /// Spans per export request.
    pub batch: usize,
    /// Concurrent client connections.
    pub concurrency: usize,
    /// Data directory; a temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Redaction rules for the server (`off` turns every detector off); `None`: the server's
    /// default (`rules/redaction.yaml` when present, else the shipped detectors).
    pub redaction: Option<String>,
    /// Which spans to send.
    pub workload: Workload,
}

/// Measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Which spans were sent.
    pub workload: Workload,
    /// Spans acknowledged.
    pub spans: usize,
    /// Requests sent.
    pub requests: usize,
    /// Wall-clock seconds from first send to last acknowledgment.
    pub seconds: f64,
    /// Acknowledged spans per wall-clock second.
    pub spans_per_second: f64,
    /// CPU seconds (user + system) the server process used while the clients sent.
    pub cpu_seconds: f64,
    /// Spans per server CPU second: the per-core figure.
    pub spans_per_cpu_second: f64,
    /// CPU seconds the clients (this process) used meanwhile, on the same two cores.
    pub client_cpu_seconds: f64,
    /// Request latency percentiles in milliseconds.
    pub latency_ms_p50: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// WAL fsyncs during the run.
    pub wal_syncs: u64,
    /// Average records (requests) per fsync.
    pub records_per_sync: f64,
    /// WAL bytes per span (Arrow IPC, uncompressed).
    pub wal_bytes_per_span: f64,
    /// Size of an export request on the wire per span (protobuf).
    pub wire_bytes_per_span: f64,
    /// Parquet bytes per span after flush and compaction.
    pub disk_bytes_per_span: f64,
    /// Seconds from SIGTERM to exit: the final flush of everything in the memtable.
    pub flush_seconds: f64,
    /// Seconds the compaction took.
    pub compaction_seconds: f64,
    /// Peak resident memory of the server process, MiB.
    pub peak_rss_mib: f64,
    /// Single-threaded cost of each ingest stage, in microseconds per span.
    pub stages: StageCosts,
}

/// CPU seconds (user + system) of process `pid` ("self" for this one), from `/proc/PID/stat`.
fn cpu_seconds_of(pid: &str) -> f64 {
    // utime and stime are fields 14 and 15, in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of process `pid`, MiB.
pub(crate) fn peak_rss_mib_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// A value from Prometheus text, summed over label sets.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

pub(crate) struct Child {
    pub(crate) child: std::process::Child,
    pub(crate) http: String,
    pub(crate) api: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rules file the server is started with (`off`: one that turns every detector off, written
/// into `dir`) and the same rules compiled, for the stage cost.
fn redaction(
    dir: &std::path::Path,
    choice: Option<&str>,
) -> Result<(Option<PathBuf>, custos_redact::Redactor)> {
    let file = match choice {
        Some("off") => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Task(format!("cannot create `{}`: {e}", dir.display())))?;
            let p = dir.join("redaction-off.yaml");
            std::fs::write(&p, custos_redact::off_rules())
                .map_err(|e| Error::Task(format!("cannot write `{}`: {e}", p.display())))?;
            Some(p)
        }
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from("rules/redaction.yaml")).filter(|p| p.is_file()),
    };
    let key = custos_redact::PseudonymKey::ephemeral().map_err(|e| Error::Task(e.to_string()))?;
    let redactor = match &file {
        Some(p) => custos_redact::Redactor::load(p, key),
        None => custos_redact::Redactor::defaults(key),
    }
    .map_err(|e| Error::Task(e.to_string()))?;
    Ok((file, redactor))
}

fn spawn_server(
    exe: &std::path::Path,
    dir: &std::path::Path,
    redaction: Option<&std::path::Path>,
) -> Result<Child> {
    spawn_server_with(
        exe,
        dir,
        "[store]\nmemory_budget_mib = 1024\nflush_mib = 256\nflush_interval_secs = 3600\nmaintenance_interval_secs = 86400\n",
        redaction,
    )
}

/// Starts `exe serve` on `dir/data` with the configuration `config` (TOML) on ephemeral ports.
pub(crate) fn spawn_server_with(
    exe: &std::path::Path,
    dir: &std::path::Path,
    config_text: &str,
    redaction: Option<&std::path::Path>,
) -> Result<Child> {
    use std::io::BufRead as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Task(format!("cannot create `{}`: {e}", dir.display())))?;
    let config = dir.join("bench.toml");
    std::fs::write(&config, config_text)
        .map_err(|e| Error::Task(format!("cannot write `{}`: {e}", config.display())))?;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .args(
            redaction
                .map(|r| ["--redaction".as_ref(), r.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .args([
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .env("CUSTOS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Task(format!("cannot start `{} serve`: {e}", exe.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Task("no stdout from the server".into()))?;
    let (mut http, mut api) = (None, None);
    for line in std::io::BufReader::new(stdout).lines() {
        let line =
            line.map_err(|e| Error::Task(format!("cannot read the server's output: {e}")))?;
        if let Some(rest) = line.strip_prefix("OTLP/HTTP listening on ") {
            http = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("API listening on ") {
            api = Some(rest.trim().to_string());
        }
        if http.is_some() && api.is_some() {
            break;
        }
    }
    match (http, api) {
        (Some(http), Some(api)) => Ok(Child { child, http, api }),
        _ => Err(Error::Task("the server exited before listening".into())),
    }
}

/// Stops the server gracefully (it flushes everything before it exits); the seconds it took.
async fn stop(mut server: Child, pid: &str) -> Result<f64> {
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", pid])
        .status();
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    })
    .await
    .map_err(|e| Error::Task(format!("wait failed: {e}")))?;
    drop(server);
    if !status.is_ok_and(|s| s.success()) {
        return Err(Error::Task("the server did not shut down cleanly".into()));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Compacts offline, as the server's maintenance would: the seconds it took and the bytes that
/// stay on disk.
async fn compact(dir: &std::path::Path) -> Result<(f64, u64)> {
    let store =
        custos_store::Store::open(custos_store::StoreOptions::new(dir.join("data"))).await?;
    let t = Instant::now();
    store.compact_now(2).await?;
    let seconds = t.elapsed().as_secs_f64();
    let disk = store.table_bytes().await;
    store.shutdown().await?;
    Ok((seconds, disk))
}

/// Runs the benchmark against a `custos serve` child process started from `exe`.
pub async fn run(exe: &std::path::Path, options: BenchOptions) -> Result<BenchReport> {
    let dir = options.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("custos-bench-{}", std::process::id()))
    });

    // Pre-encode a pool of distinct requests so the clients spend little CPU; the foreign
    // workload's pool is its first 64 requests (for the stage costs), the rest is encoded by a
    // producer thread while the clients send.
    let requests = options.spans.div_ceil(options.batch);
    let pool: Vec<bytes::Bytes> = match options.workload {
        Workload::Synthetic => {
            let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
            let t0 = 1_763_700_000_000_000_000u64;
            (0..64)
                .map(|k| {
                    bytes::Bytes::from(
                        workload_request(&mut rng, options.batch, t0 + k * 3_600_000_000_000)
                            .encode_to_vec(),
                    )
                })
                .collect()
        }
        Workload::Foreign => foreign_requests(options.spans, options.batch)
            .take(64.min(requests))
            .collect(),
    };
    let wire_bytes_per_span =
        pool.iter().map(|b| b.len()).sum::<usize>() as f64 / (pool.len() * options.batch) as f64;
    let (rules_file, redactor) = redaction(&dir, options.redaction.as_deref())?;
    let stages = stage_costs(&pool, options.batch, &redactor)?;

    let policies = std::path::Path::new("rules/policy");
    let ingest_token = crate::token_for(
        &dir.join("data"),
        policies,
        "Custos::Service::\"otel-collector\"",
    )?;
    let metrics_token = crate::token_for(
        &dir.join("data"),
        policies,
        "Custos::Service::\"prometheus\"",
    )?;
    let bodies = match options.workload {
        Workload::Synthetic => Bodies::pool(pool, requests),
        Workload::Foreign => {
            drop(pool);
            Bodies::stream(foreign_requests(options.spans, options.batch))
        }
    };
    let server = spawn_server(exe, &dir, rules_file.as_deref())?;
    let pid = server.child.id().to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .map_err(|e| Error::Task(format!("cannot build the HTTP client: {e}")))?;
    let server_cpu_before = cpu_seconds_of(&pid);
    let client_cpu_before = cpu_seconds_of("self");
    let started = Instant::now();
    let mut latencies = export_all(
        &client,
        &server.http,
        &ingest_token,
        bodies,
        options.concurrency,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds_of(&pid) - server_cpu_before;
    let client_cpu = cpu_seconds_of("self") - client_cpu_before;
    let spans = match options.workload {
        Workload::Synthetic => requests * options.batch,
        Workload::Foreign => options.spans,
    };
    latencies.sort();
    let metrics = client
        .get(format!("{}/metrics", server.api))
        .bearer_auth(&metrics_token)
        .send()
        .await
        .map_err(|e| Error::Task(format!("cannot read metrics: {e}")))?
        .text()
        .await
        .map_err(|e| Error::Task(format!("cannot read metrics: {e}")))?;
    let syncs = metric(&metrics, "custos_wal_syncs_total");
    let wal_bytes = metric(&metrics, "custos_wal_bytes_total");
    let peak = peak_rss_mib_of(&pid);

    let flush_seconds = stop(server, &pid).await?;

    let (compaction_seconds, disk) = compact(&dir).await?;
    if options.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(BenchReport {
        workload: options.workload,
        spans,
        requests,
        seconds,
        spans_per_second: spans as f64 / seconds,
        cpu_seconds: server_cpu,
        spans_per_cpu_second: spans as f64 / server_cpu.max(1e-9),
        client_cpu_seconds: client_cpu,
        latency_ms_p50: percentile(&latencies, 0.50),
        latency_ms_p99: percentile(&latencies, 0.99),
        wal_syncs: syncs as u64,
        records_per_sync: requests as f64 / syncs.max(1.0),
        wal_bytes_per_span: wal_bytes / spans as f64,
        wire_bytes_per_span,
        disk_bytes_per_span: disk as f64 / spans as f64,
        flush_seconds,
        compaction_seconds,
        peak_rss_mib: peak,
        stages,
    })
}
