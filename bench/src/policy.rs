//! `custos bench policy`: decision latency with the shipped policy set.
//!
//! Three figures, each over a mix of the shipped requests (deploy allow and deny, execute allow,
//! default deny and forbid, a review): an in-process `Engine::authorize` (the library call), the
//! same plus the durable audit append (`authorize_and_record`: one `fdatasync` per decision), and
//! `POST /api/authorize` through a real server over loopback, one request at a time; then the
//! recorded and HTTP paths again with many callers at once, where the audit log's group commit
//! shares one `fdatasync` among the records that arrive together. And what
//! access control adds to every request: a token's authentication and an access decision in
//! process, and a loopback round trip to an open route (`/healthz`) against one that only
//! authenticates (`/api/whoami`).

use std::path::Path;
use std::time::Instant;

use custos_audit::AuditLog;
use custos_governance::authorize_and_record;
use custos_policy::engine::{AuthzRequest, Engine};
use serde::Serialize;

use crate::decisions::{Latency, latency, requests};
use crate::{Error, Result};

/// The benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyBenchReport {
    /// Policies in the set.
    pub policies: usize,
    /// Cedar's evaluation alone: requests built and checked beforehand (`Engine::decide`).
    pub evaluate_only: Latency,
    /// `Engine::authorize` in process: JSON request checked against the schema, then evaluated.
    pub in_process: Latency,
    /// In process, with the audit record appended and synced.
    pub recorded: Latency,
    /// `POST /api/authorize` over loopback (decision and audit record).
    pub http: Latency,
    /// Callers at once in the two figures below.
    pub concurrency: usize,
    /// `recorded` with `concurrency` threads deciding at once; `per_second` is decisions per
    /// second of wall time, all threads together.
    pub recorded_concurrent: Latency,
    /// Audit records per `fdatasync` in `recorded_concurrent` (group commit).
    pub records_per_sync: f64,
    /// `http` with `concurrency` requests in flight (client and server share the machine).
    pub http_concurrent: Latency,
    /// What access control costs each request.
    pub access: AccessCost,
}

/// What authentication and authorization add to one request.
#[derive(Debug, Clone, Serialize)]
pub struct AccessCost {
    /// `Authenticator::authenticate` of a valid bearer token (hash and lookup), in process.
    pub authenticate: Latency,
    /// An access decision (`custos_governance::access::decide`, `read_status`), in process. OTLP
    /// exports pay it once per principal (cached); API requests pay it per request.
    pub decide: Latency,
    /// `GET /healthz` over loopback: no token.
    pub http_open: Latency,
    /// `GET /api/whoami` over loopback: authenticated, no decision.
    pub http_authenticated: Latency,
}

/// Runs the benchmark with the policy directory `policies`: `n` in-process decisions, `n_durable`
/// recorded ones and over HTTP one at a time, five times as many with `concurrency` callers.
pub async fn run(
    policies: &Path,
    n: usize,
    n_durable: usize,
    concurrency: usize,
) -> Result<PolicyBenchReport> {
    let engine = Engine::load(policies)?;
    let (evaluate_only, in_process) = crate::decisions::in_process(&engine, n)?;
    let mix = requests();
    let dir = std::env::temp_dir().join(format!("custos-bench-policy-{}", std::process::id()));
    let result = measure_durable(&engine, &mix, &dir, policies, n_durable, concurrency).await;
    let _ = std::fs::remove_dir_all(&dir);
    let d = result?;
    Ok(PolicyBenchReport {
        policies: engine.policies().len(),
        evaluate_only,
        in_process,
        recorded: d.recorded,
        http: d.http,
        concurrency,
        recorded_concurrent: d.recorded_concurrent,
        records_per_sync: d.records_per_sync,
        http_concurrent: d.http_concurrent,
        access: d.access,
    })
}

/// The in-process costs of authenticating `token` on `data` and of an access decision.
fn access_in_process(
    engine: &Engine,
    data: &Path,
    token: &str,
    n: usize,
) -> Result<(Latency, Latency)> {
    let authn = custos_auth::Authenticator::open(
        custos_auth::TokenFile::new(data),
        custos_auth::FailureLimit::default(),
    )
    .map_err(|e| Error::Task(e.to_string()))?;
    let header = format!("Bearer {token}");
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    let mut principal = String::new();
    for _ in 0..n {
        let t = Instant::now();
        let p = authn
            .authenticate(Some(&header), None)
            .map_err(|r| Error::Task(r.to_string()))?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        principal = p.uid;
    }
    let authenticate = latency(us, wall.elapsed().as_secs_f64());
    let op = custos_governance::access::Operation::read("read_status", "bench");
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let d = custos_governance::access::decide(engine, &principal, &op);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        if d.decision.is_empty() {
            return Err(Error::Task("an empty decision".into()));
        }
    }
    Ok((authenticate, latency(us, wall.elapsed().as_secs_f64())))
}

/// `n` sequential GETs of `url`, each answered 200.
async fn gets(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> Result<Latency> {
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let mut req = client.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req
            .send()
            .await
            .map_err(|e| Error::Task(format!("GET {url}: {e}")))?;
        let status = res.status();
        let _ = res.bytes().await;
        if !status.is_success() {
            return Err(Error::Task(format!("GET {url} answered {status}")));
        }
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latency(us, wall.elapsed().as_secs_f64()))
}

/// The figures that need a data directory.
struct Durable {
    recorded: Latency,
    http: Latency,
    recorded_concurrent: Latency,
    records_per_sync: f64,
    http_concurrent: Latency,
    access: AccessCost,
}

/// `n` recorded decisions by `threads` threads at once (one at a time when `threads` is 1), and
/// the records per sync.
fn recorded(
    engine: &Engine,
    audit: &AuditLog,
    mix: &[AuthzRequest],
    n: usize,
    threads: usize,
) -> Result<(Latency, f64)> {
    let before = audit.groups_written();
    let wall = Instant::now();
    let per_thread: Vec<Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut us = Vec::with_capacity(n / threads + 1);
                    for i in (t..n).step_by(threads) {
                        let started = Instant::now();
                        authorize_and_record(engine, audit, &mix[i % mix.len()])?;
                        us.push(started.elapsed().as_secs_f64() * 1e6);
                    }
                    Ok(us)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Task("a decision thread panicked".into())))
            })
            .collect()
    });
    let wall = wall.elapsed().as_secs_f64();
    let mut us = Vec::with_capacity(n);
    for part in per_thread {
        us.extend(part?);
    }
    let syncs = audit.groups_written().saturating_sub(before).max(1);
    let per_sync = us.len() as f64 / syncs as f64;
    Ok((latency(us, wall), per_sync))
}

/// `n` requests of `bodies` (in turn) to `url`, `in_flight` at once.
async fn posts(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    bodies: &[String],
    n: usize,
    in_flight: usize,
) -> Result<Latency> {
    let wall = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
            let bodies: Vec<String> = (t..n)
                .step_by(in_flight)
                .map(|i| bodies[i % bodies.len()].clone())
                .collect();
            tokio::spawn(async move {
                let mut us = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let started = Instant::now();
                    let res = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .bearer_auth(&token)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| Error::Task(format!("POST {url}: {e}")))?;
                    let status = res.status();
                    let _ = res.bytes().await;
                    if !status.is_success() {
                        return Err(Error::Task(format!("POST {url} answered {status}")));
                    }
                    us.push(started.elapsed().as_secs_f64() * 1e6);
                }
                Ok(us)
            })
        })
        .collect();
    let mut us = Vec::with_capacity(n);
    for task in tasks {
        let part = task
            .await
            .map_err(|e| Error::Task(format!("a request task failed: {e}")))??;
        us.extend(part);
    }
    Ok(latency(us, wall.elapsed().as_secs_f64()))
}

async fn measure_durable(
    engine: &Engine,
    mix: &[AuthzRequest],
    dir: &Path,
    policies: &Path,
    n_durable: usize,
    concurrency: usize,
) -> Result<Durable> {
    let audit = AuditLog::open(&dir.join("audit-direct"))?;
    let (recorded_one, _) = recorded(engine, &audit, mix, n_durable, 1)?;
    let (recorded_concurrent, records_per_sync) =
        recorded(engine, &audit, mix, n_durable * 5, concurrency)?;

    // A real server (in this process) on a loopback port, with the same policies.
    let mut config = custos_server::Config {
        data_dir: Some(dir.join("data")),
        ..Default::default()
    };
    config.listen.otlp_grpc = Some("127.0.0.1:0".into());
    config.listen.otlp_http = Some("127.0.0.1:0".into());
    config.listen.api = Some("127.0.0.1:0".into());
    config.rules.policies = Some(policies.to_path_buf());
    // The executor asks for decisions about the steps it runs.
    let token = crate::token_for(
        &dir.join("data"),
        policies,
        custos_server::EXECUTOR_PRINCIPAL,
    )?;
    let server = custos_server::start(config.validate()?).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/authorize", server.api);
    let bodies: Vec<String> = mix
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    let http = async {
        let one = posts(&client, &url, &token, &bodies, n_durable, 1).await?;
        let many = posts(&client, &url, &token, &bodies, n_durable * 5, concurrency).await?;
        Ok::<_, Error>((one, many))
    }
    .await;
    let access = async {
        let (authenticate, decide) =
            access_in_process(engine, &dir.join("data"), &token, n_durable.max(1) * 100)?;
        let n = n_durable.max(1) * 4;
        let open = format!("http://{}/healthz", server.api);
        let authed = format!("http://{}/api/whoami", server.api);
        // Interleaved, so both see the same machine.
        let mut http_open = Vec::new();
        let mut http_authenticated = Vec::new();
        for _ in 0..4 {
            http_open.push(gets(&client, &open, None, n / 4).await?);
            http_authenticated.push(gets(&client, &authed, Some(&token), n / 4).await?);
        }
        Ok::<_, Error>(AccessCost {
            authenticate,
            decide,
            http_open: merge(http_open),
            http_authenticated: merge(http_authenticated),
        })
    }
    .await;
    server.shutdown().await?;
    let (http, http_concurrent) = http?;
    Ok(Durable {
        recorded: recorded_one,
        http,
        recorded_concurrent,
        records_per_sync,
        http_concurrent,
        access: access?,
    })
}

/// Rounds of one measurement as one: the median of the medians, the worst p99 and max.
fn merge(rounds: Vec<Latency>) -> Latency {
    let mut p50: Vec<f64> = rounds.iter().map(|l| l.p50_us).collect();
    p50.sort_by(f64::total_cmp);
    Latency {
        decisions: rounds.iter().map(|l| l.decisions).sum(),
        p50_us: p50.get(p50.len() / 2).copied().unwrap_or(0.0),
        p99_us: rounds.iter().map(|l| l.p99_us).fold(0.0, f64::max),
        max_us: rounds.iter().map(|l| l.max_us).fold(0.0, f64::max),
        per_second: rounds.iter().map(|l| l.per_second).sum::<f64>() / rounds.len().max(1) as f64,
    }
}
