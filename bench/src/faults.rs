//! `custos bench faults`: a fault suite under load against a `custos serve` child process, on
//! loopback, bounded in time and count.
//!
//! Well-behaved clients export spans all along (one trace per export, so every export can be
//! counted afterwards) while one fault runs at a time ([`hostile`]): slow clients trickling
//! headers, oversized and malformed exports, heavy queries, review decisions racing
//! ([`reviews`]), schemathesis' generated requests to every API operation ([`schemathesis`]),
//! and repeated `kill -9` with restarts. At the end the server is restarted once more and every
//! acknowledged export is looked up: the report gives acknowledged spans lost and duplicated
//! (both must be 0), panics counted by the server (0), 5xx answers to hostile requests (0),
//! reviews decided twice (0), API operations failing a schemathesis check (0), the largest RSS
//! and the well-behaved clients' latency during each fault.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use custos_synth::Rng;
use custos_synth::ingest::workload_request;
use prost::Message as _;
use serde::Serialize;

use crate::ingest::{Child, metric, peak_rss_mib_of, percentile, spawn_server_with};
use crate::{Error, Result};

mod hostile;
mod reviews;
mod schemathesis;

use hostile::{Answers, Fault, Tokens, count, start_fault};

/// Spans in each well-behaved export (one trace).
const SPANS: usize = 100;

/// What to run.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// Seconds each phase lasts.
    pub phase_seconds: u64,
    /// `kill -9` and restarts in the kill phase.
    pub kills: usize,
    /// Well-behaved clients.
    pub clients: usize,
    /// Data directory to keep (default: a temporary one, removed afterwards).
    pub data_dir: Option<PathBuf>,
}

/// The well-behaved clients' view of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// The fault.
    pub name: String,
    /// Exports acknowledged during it.
    pub acked: u64,
    /// Exports not acknowledged (an error answer or no answer: a killed server).
    pub unacked: u64,
    /// Latency of acknowledged exports, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The hostile side's answers by status (`conn` when the connection was cut).
    pub fault_answers: BTreeMap<String, u64>,
}

/// What the suite found.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// Each phase.
    pub phases: Vec<Phase>,
    /// Spans acknowledged in all.
    pub acked_spans: u64,
    /// Acknowledged spans missing at the end (must be 0).
    pub lost_spans: u64,
    /// Spans stored more than once (must be 0).
    pub duplicated_spans: u64,
    /// Exports stored in part (must be 0: an export is one WAL record).
    pub partial_exports: u64,
    /// Panics the server counted (`custos_panics_total`, over every run of it; must be 0).
    pub panics: u64,
    /// 5xx answers to hostile requests other than 503 (must be 0).
    pub unexpected_5xx: u64,
    /// Review tasks that both an approval and a rejection decided (must be 0).
    pub double_decisions: u64,
    /// Operations schemathesis found failing a check (must be 0); `None` when it could not run.
    pub api_failures: Option<u64>,
    /// Restarts after `kill -9`.
    pub kills: usize,
    /// The largest peak RSS of any run of the server, MiB.
    pub peak_rss_mib: f64,
    /// Wall time of the suite, s.
    pub seconds: f64,
}

impl FaultReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.lost_spans == 0
            && self.duplicated_spans == 0
            && self.partial_exports == 0
            && self.panics == 0
            && self.unexpected_5xx == 0
            && self.double_decisions == 0
            && self.api_failures == Some(0)
    }
}

/// One export's outcome, seen by a well-behaved client.
struct Sample {
    at: Instant,
    latency: Duration,
    acked: bool,
}

/// The well-behaved load: where to send, what was acknowledged.
struct Load {
    url: RwLock<String>,
    token: String,
    next: AtomicU64,
    acked: Mutex<Vec<u64>>,
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn trace_id(k: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&0x000f_a175_u64.to_be_bytes());
    t[8..].copy_from_slice(&(k + 1).to_be_bytes());
    t
}

/// Export `k`: `SPANS` spans of one trace, span ids 1..=SPANS.
fn export(k: u64) -> Vec<u8> {
    let mut req = workload_request(&mut Rng::new(k + 1), SPANS, now_ns());
    let mut i = 0u64;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for s in &mut ss.spans {
                i += 1;
                s.trace_id = trace_id(k).to_vec();
                s.span_id = i.to_be_bytes().to_vec();
                s.parent_span_id.clear();
            }
        }
    }
    req.encode_to_vec()
}

async fn well_behaved(load: Arc<Load>, client: reqwest::Client) {
    while !load.stop.load(Ordering::Relaxed) {
        let k = load.next.fetch_add(1, Ordering::Relaxed);
        let url = load.url.read().map(|u| u.clone()).unwrap_or_default();
        let t = Instant::now();
        let res = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .bearer_auth(&load.token)
            .timeout(Duration::from_secs(10))
            .body(export(k))
            .send()
            .await;
        let acked = matches!(&res, Ok(r) if r.status() == 200);
        if acked && let Ok(mut a) = load.acked.lock() {
            a.push(k);
        }
        if let Ok(mut s) = load.samples.lock() {
            s.push(Sample {
                at: t,
                latency: t.elapsed(),
                acked,
            });
        }
        if !acked {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The server's panic count so far and its peak RSS.
async fn observe(server: &Child, metrics_token: &str) -> (u64, f64) {
    let pid = server.child.id().to_string();
    let text = match reqwest::Client::new()
        .get(format!("{}/metrics", server.api))
        .bearer_auth(metrics_token)
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    (
        metric(&text, "custos_panics_total") as u64,
        peak_rss_mib_of(&pid),
    )
}

fn kill9(server: &Child) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &server.child.id().to_string()])
        .status();
}

const CONFIG: &str = "[listen]\nheader_timeout_secs = 3\n[store]\nmemory_budget_mib = 512\nflush_interval_secs = 2\n[query]\ntimeout_secs = 3\n[executor]\nworkflows = \"fixtures/workflows\"\n";

/// Runs the suite with `exe serve` as the server.
pub async fn run(exe: &Path, options: FaultOptions) -> Result<FaultReport> {
    let started = Instant::now();
    let dir = options.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("custos-faults-{}", std::process::id()))
    });
    let data = dir.join("data");
    let policies = Path::new("rules/policy");
    let ingest_token = crate::token_for(&data, policies, "Custos::Service::\"otel-collector\"")?;
    let reviewer = crate::token_for(&data, policies, "Custos::User::\"ben\"")?;
    let metrics_token = crate::token_for(&data, policies, "Custos::Service::\"prometheus\"")?;
    let mut server = spawn_server_with(exe, &dir, CONFIG, None)?;
    let admin = std::fs::read_to_string(data.join("auth/admin.token"))
        .map_err(|e| Error::Task(format!("cannot read the admin token: {e}")))?
        .trim()
        .to_string();
    let tokens = Tokens {
        admin: admin.clone(),
        reviewer,
    };
    let load = Arc::new(Load {
        url: RwLock::new(server.http.clone()),
        token: ingest_token.clone(),
        next: AtomicU64::new(0),
        acked: Mutex::new(Vec::new()),
        samples: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let client = reqwest::Client::new();
    let clients: Vec<_> = (0..options.clients.max(1))
        .map(|_| tokio::spawn(well_behaved(load.clone(), client.clone())))
        .collect();
    let phase = Duration::from_secs(options.phase_seconds.max(1));
    let (mut panics, mut peak) = (0u64, 0f64);
    let mut windows = Vec::new();
    for (name, fault) in [
        ("baseline", Fault::None),
        ("slow clients (300 trickling headers)", Fault::SlowClients),
        ("oversized and malformed exports", Fault::HostileExports),
        ("heavy queries (3 at once)", Fault::HeavyQueries),
        ("review decisions racing", Fault::ReviewRaces),
        ("generated API requests (schemathesis)", Fault::Schemathesis),
    ] {
        let answers: Answers = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let from = Instant::now();
        let tasks = start_fault(fault, &server, &tokens, &answers, &stop);
        tokio::time::sleep(phase).await;
        stop.store(true, Ordering::Relaxed);
        // Each task ends at its next check of `stop` (a review race within seconds); one that
        // does not is cut off. schemathesis runs to its end (its own budget): the phase lasts
        // until it has checked every operation.
        let grace = match fault {
            Fault::Schemathesis => schemathesis::BUDGET + Duration::from_secs(15),
            _ => Duration::from_secs(15),
        };
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(grace, t).await.is_err() {
                abort.abort();
            }
        }
        windows.push((name.to_string(), from, Instant::now(), answers));
    }
    // kill -9 at some moment of a flush cycle, then a restart, `kills` times.
    let from = Instant::now();
    let answers: Answers = Arc::default();
    for n in 0..options.kills {
        tokio::time::sleep(phase / 2 + Duration::from_millis(137 * n as u64 % 900)).await;
        let (p, r) = observe(&server, &metrics_token).await;
        panics += p;
        peak = peak.max(r);
        kill9(&server);
        drop(server);
        count(&answers, "kill -9".into());
        server = spawn_server_with(exe, &dir, CONFIG, None)?;
        if let Ok(mut u) = load.url.write() {
            *u = server.http.clone();
        }
    }
    tokio::time::sleep(phase / 2).await;
    windows.push((
        format!("kill -9 and restart ({}x)", options.kills),
        from,
        Instant::now(),
        answers,
    ));
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let (p, r) = observe(&server, &metrics_token).await;
    panics += p;
    peak = peak.max(r);
    // A last kill, so the check reads what a restart recovers, not what a process held.
    kill9(&server);
    drop(server);
    let server = spawn_server_with(exe, &dir, CONFIG, None)?;
    let stored = stored_per_trace(&server, &admin).await?;
    let (p, _) = observe(&server, &metrics_token).await;
    panics += p;
    drop(server);

    let acked = load.acked.lock().map(|a| a.clone()).unwrap_or_default();
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut partial = 0u64;
    for k in &acked {
        let n = stored.get(&hex(&trace_id(*k))).copied().unwrap_or(0);
        lost += (SPANS as u64).saturating_sub(n);
    }
    for n in stored.values() {
        duplicated += n.saturating_sub(SPANS as u64);
        if *n != 0 && *n < SPANS as u64 {
            partial += 1;
        }
    }
    let samples = load
        .samples
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let (mut unexpected_5xx, mut double_decisions, mut api_failures) = (0, 0, None);
    let phases = windows
        .into_iter()
        .map(|(name, from, to, answers)| {
            let answers = answers.lock().map(|a| a.clone()).unwrap_or_default();
            double_decisions += answers.get(reviews::TWO_WINNERS).copied().unwrap_or(0);
            if let Some(n) = answers.get(schemathesis::FAILURES) {
                api_failures = Some(api_failures.unwrap_or(0) + n);
            }
            unexpected_5xx += answers
                .iter()
                .filter(|(k, _)| k.starts_with('5') && k.as_str() != "503")
                .map(|(_, v)| v)
                .sum::<u64>();
            phase_figures(name, from, to, &samples, answers)
        })
        .collect();
    if options.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(FaultReport {
        phases,
        acked_spans: acked.len() as u64 * SPANS as u64,
        lost_spans: lost,
        duplicated_spans: duplicated,
        partial_exports: partial,
        panics,
        unexpected_5xx,
        double_decisions,
        api_failures,
        kills: options.kills,
        peak_rss_mib: peak,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn phase_figures(
    name: String,
    from: Instant,
    to: Instant,
    samples: &[Sample],
    fault_answers: BTreeMap<String, u64>,
) -> Phase {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let mut latencies: Vec<Duration> = inside
        .iter()
        .filter(|s| s.acked)
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    Phase {
        name,
        acked: latencies.len() as u64,
        unacked: inside.iter().filter(|s| !s.acked).count() as u64,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        fault_answers,
    }
}

/// Spans stored per trace id of the suite, through the API.
async fn stored_per_trace(server: &Child, token: &str) -> Result<HashMap<String, u64>> {
    let res = reqwest::Client::new()
        .post(format!("{}/api/sql", server.api))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "sql": "SELECT trace_id, count(*) AS n FROM spans WHERE trace_id LIKE '00000000000fa175%' GROUP BY trace_id"
        }))
        .send()
        .await
        .map_err(|e| Error::Task(format!("cannot query the spans: {e}")))?;
    let status = res.status();
    let body = res
        .text()
        .await
        .map_err(|e| Error::Task(format!("cannot read the answer: {e}")))?;
    if !status.is_success() {
        return Err(Error::Task(format!(
            "the span query answered {status}: {body}"
        )));
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body)
        .map_err(|e| Error::Task(format!("the span query answered `{body}`: {e}")))?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r["trace_id"].as_str()?.to_string(), r["n"].as_u64()?)))
        .collect())
}

/// The report as text.
pub fn render(r: &FaultReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<40} {:>7} {:>8} {:>9} {:>9}  fault side\n",
        "phase", "acked", "unacked", "p50 ms", "p99 ms"
    ));
    for p in &r.phases {
        let answers: Vec<String> = p
            .fault_answers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push_str(&format!(
            "{:<40} {:>7} {:>8} {:>9.1} {:>9.1}  {}\n",
            p.name,
            p.acked,
            p.unacked,
            p.p50_ms,
            p.p99_ms,
            answers.join(", ")
        ));
    }
    out.push_str(&format!(
        "acknowledged spans {}, lost {}, duplicated {}, partial exports {}, panics {}, \
         unexpected 5xx {}, double review decisions {}, API operations failing schemathesis {}, \
         peak RSS {:.0} MiB, {:.0} s: {}\n",
        r.acked_spans,
        r.lost_spans,
        r.duplicated_spans,
        r.partial_exports,
        r.panics,
        r.unexpected_5xx,
        r.double_decisions,
        r.api_failures.map_or_else(
            || "(not run: pip install schemathesis==4.32.5)".into(),
            |n| n.to_string()
        ),
        r.peak_rss_mib,
        r.seconds,
        if r.passed() { "passed" } else { "FAILED" }
    ));
    out
}
