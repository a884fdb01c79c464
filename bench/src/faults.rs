//! `custos bench faults`: a fault suite under load against a `custos serve` child process, on
//! loopback, bounded in time and count.
//!
//! Well-behaved clients export spans all along (one trace per export, so every export can be
//! counted afterwards) while one fault runs at a time: slow clients trickling headers,
//! oversized and malformed exports, heavy queries, and repeated `kill -9` with restarts. At the
//! end the server is restarted once more and every acknowledged export is looked up: the report
//! gives acknowledged spans lost and duplicated (both must be 0), panics counted by the server
//! (0), 5xx answers to hostile requests (0), the largest RSS and the well-behaved clients'
//! latency during each fault.

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

type Answers = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(answers: &Answers, key: String) {
    if let Ok(mut a) = answers.lock() {
        *a.entry(key).or_default() += 1;
    }
}

/// `n` empty spans in one resource and scope: 2 bytes each on the wire.
fn empty_spans(n: usize) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let scope: Vec<u8> = [0x12u8, 0x00].repeat(n);
    let mut rs = vec![0x12];
    len(&mut rs, scope.len());
    rs.extend_from_slice(&scope);
    let mut body = vec![0x0a];
    len(&mut body, rs.len());
    body.extend_from_slice(&rs);
    body
}

/// The hostile exports: (content type, content encoding, body).
fn hostile_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let json_bomb = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(2_000_000)
    );
    vec![
        ("application/x-protobuf", None, empty_spans(4_000_000)),
        ("application/x-protobuf", None, vec![0xff; 4096]),
        (
            "application/x-protobuf",
            None,
            vec![0x0a, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
        ),
        ("application/json", None, json_bomb.into_bytes()),
        ("application/json", None, "[".repeat(100_000).into_bytes()),
    ]
}

/// What a hostile side does during a phase, until `stop`.
#[derive(Clone, Copy)]
enum Fault {
    None,
    SlowClients,
    HostileExports,
    HeavyQueries,
}

async fn hostile_exports(url: String, token: String, answers: Answers, stop: Arc<AtomicBool>) {
    let bodies = hostile_bodies();
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        for (ct, enc, body) in &bodies {
            let mut req = client
                .post(&url)
                .header("content-type", *ct)
                .bearer_auth(&token)
                .body(body.clone());
            if let Some(e) = enc {
                req = req.header("content-encoding", *e);
            }
            let key = match req.send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "conn".to_string(),
            };
            count(&answers, key);
        }
    }
}

async fn heavy_queries(api: String, token: String, answers: Answers, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let queries = [
        "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
        "SELECT * FROM generate_series(1, 3000000000)",
    ];
    while !stop.load(Ordering::Relaxed) {
        for q in queries {
            let key = match client
                .post(format!("{api}/api/sql"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "sql": q }))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "conn".to_string(),
            };
            count(&answers, key);
        }
    }
}

async fn slow_client(addr: String, answers: Answers, stop: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            count(&answers, "refused".into());
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut buf = [0u8; 64];
        let mut closed = false;
        for b in request {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
            {
                closed = true;
                break;
            }
        }
        count(&answers, if closed { "closed" } else { "finished" }.into());
    }
}

fn start_fault(
    fault: Fault,
    server: &Child,
    token: &str,
    answers: &Answers,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (a, s, t) = (answers.clone(), stop.clone(), token.to_string());
    match fault {
        Fault::None => Vec::new(),
        Fault::SlowClients => (0..300)
            .map(|i| {
                let addr = if i % 2 == 0 {
                    host(&server.api)
                } else {
                    host(&server.http)
                };
                tokio::spawn(slow_client(addr, a.clone(), s.clone()))
            })
            .collect(),
        Fault::HostileExports => (0..2)
            .map(|_| {
                tokio::spawn(hostile_exports(
                    server.http.clone(),
                    t.clone(),
                    a.clone(),
                    s.clone(),
                ))
            })
            .collect(),
        Fault::HeavyQueries => (0..3)
            .map(|_| {
                tokio::spawn(heavy_queries(
                    server.api.clone(),
                    t.clone(),
                    a.clone(),
                    s.clone(),
                ))
            })
            .collect(),
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

const CONFIG: &str = "[listen]\nheader_timeout_secs = 3\n[store]\nmemory_budget_mib = 512\nflush_interval_secs = 2\n[query]\ntimeout_secs = 3\n";

/// Runs the suite with `exe serve` as the server.
pub async fn run(exe: &Path, options: FaultOptions) -> Result<FaultReport> {
    let started = Instant::now();
    let dir = options.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("custos-faults-{}", std::process::id()))
    });
    let data = dir.join("data");
    let policies = Path::new("rules/policy");
    let ingest_token = crate::token_for(&data, policies, "Custos::Service::\"otel-collector\"")?;
    let metrics_token = crate::token_for(&data, policies, "Custos::Service::\"prometheus\"")?;
    let mut server = spawn_server_with(exe, &dir, CONFIG, None)?;
    let admin = std::fs::read_to_string(data.join("auth/admin.token"))
        .map_err(|e| Error::Task(format!("cannot read the admin token: {e}")))?
        .trim()
        .to_string();
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
    ] {
        let answers: Answers = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let from = Instant::now();
        let tasks = start_fault(fault, &server, &admin, &answers, &stop);
        tokio::time::sleep(phase).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
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
    let mut unexpected_5xx = 0;
    let phases = windows
        .into_iter()
        .map(|(name, from, to, answers)| {
            let answers = answers.lock().map(|a| a.clone()).unwrap_or_default();
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
         unexpected 5xx {}, peak RSS {:.0} MiB, {:.0} s: {}\n",
        r.acked_spans,
        r.lost_spans,
        r.duplicated_spans,
        r.partial_exports,
        r.panics,
        r.unexpected_5xx,
        r.peak_rss_mib,
        r.seconds,
        if r.passed() { "passed" } else { "FAILED" }
    ));
    out
}
