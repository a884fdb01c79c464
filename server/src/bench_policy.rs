//! `custos bench policy`: decision latency with the shipped policy set.
//!
//! Three figures, each over a mix of the shipped requests (deploy allow and deny, execute allow,
//! default deny and forbid, a review): an in-process `Engine::authorize` (the library call), the
//! same plus the durable audit append (`authorize_and_record`: one `fdatasync` per decision), and
//! `POST /api/authorize` through a real server over loopback, one request at a time.

use std::path::Path;
use std::time::Instant;

use custos_audit::AuditLog;
use custos_policy::engine::{AuthzRequest, Engine};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Result, authorize_and_record};

/// Latency percentiles of one way of deciding.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Decisions measured.
    pub decisions: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Slowest, microseconds.
    pub max_us: f64,
    /// Decisions per second, one at a time.
    pub per_second: f64,
}

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
}

fn latency(mut us: Vec<f64>, wall_s: f64) -> Latency {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        us.get(((us.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Latency {
        decisions: us.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: us.last().copied().unwrap_or(0.0),
        per_second: if wall_s > 0.0 {
            us.len() as f64 / wall_s
        } else {
            0.0
        },
    }
}

/// The request mix.
pub fn requests() -> Vec<AuthzRequest> {
    let wf = json!({"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}});
    let exec = |conf: &str, amount: &str, human: bool| AuthzRequest {
        principal: Value::String("Custos::Service::\"executor\"".into()),
        action: Value::String("execute".into()),
        resource: Value::String("Custos::Connector::\"erp\"".into()),
        context: json!({"workflow": wf, "confidence": conf, "amount_usd": amount, "human_approved": human}),
        entities: vec![],
    };
    let deploy = |delta_upper: &str| AuthzRequest {
        principal: Value::String("Custos::Service::\"ci\"".into()),
        action: Value::String("deploy".into()),
        resource: Value::String("Custos::Workflow::\"invoice-posting\"".into()),
        context: json!({"change": "prompt", "current_version": "v1", "candidate_version": "v2",
            "metrics": {"sample_size": 800, "baseline_sample_size": 1500, "override_rate": "0.17",
                "override_rate_delta": "0.01", "override_rate_delta_upper": delta_upper,
                "error_rate": "0.04", "error_rate_delta": "0.0", "p99_latency_ms": 600000,
                "p99_latency_ratio": "1.01", "cost_per_success_usd": "0.02",
                "cost_per_success_ratio": "0.98", "confidence_psi": "0.01"}}),
        entities: vec![],
    };
    vec![
        exec("0.97", "120.00", false),
        exec("0.50", "120.00", false),
        exec("0.99", "25000.00", false),
        exec("0.60", "900.00", true),
        deploy("0.03"),
        deploy("0.30"),
    ]
}

/// Runs the benchmark with the policy directory `policies`: `n` in-process decisions, `n_durable`
/// recorded ones and over HTTP.
pub async fn run(policies: &Path, n: usize, n_durable: usize) -> Result<PolicyBenchReport> {
    let engine = Engine::load(policies)?;
    let mix = requests();
    // Warm up, and check that the mix decides as expected (a broken set would measure errors).
    for r in &mix {
        let d = engine.authorize(r);
        if !d.errors.is_empty() {
            return Err(Error::Gate(format!(
                "the benchmark request mix does not fit the policies in `{}`: {:?}",
                policies.display(),
                d.errors
            )));
        }
    }
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let r = &mix[i % mix.len()];
        let t = Instant::now();
        let d = engine.authorize(r);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(d);
    }
    let in_process = latency(us, wall.elapsed().as_secs_f64());

    let built: Vec<cedar_policy::Request> = mix
        .iter()
        .filter_map(|r| engine.build(r).ok().map(|(req, _)| req))
        .collect();
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let r = &built[i % built.len()];
        let t = Instant::now();
        let d = engine.decide(r, engine.entities());
        us.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(d);
    }
    let evaluate_only = latency(us, wall.elapsed().as_secs_f64());

    let dir = std::env::temp_dir().join(format!("custos-bench-policy-{}", std::process::id()));
    let result = measure_durable(&engine, &mix, &dir, policies, n_durable).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (recorded, http) = result?;
    Ok(PolicyBenchReport {
        policies: engine.policies().len(),
        evaluate_only,
        in_process,
        recorded,
        http,
    })
}

async fn measure_durable(
    engine: &Engine,
    mix: &[AuthzRequest],
    dir: &Path,
    policies: &Path,
    n_durable: usize,
) -> Result<(Latency, Latency)> {
    let audit = AuditLog::open(&dir.join("audit-direct"))?;
    let mut us = Vec::with_capacity(n_durable);
    let wall = Instant::now();
    for i in 0..n_durable {
        let r = &mix[i % mix.len()];
        let t = Instant::now();
        authorize_and_record(engine, &audit, r)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let recorded = latency(us, wall.elapsed().as_secs_f64());

    // A real server (in this process) on a loopback port, with the same policies.
    let mut config = crate::Config {
        data_dir: Some(dir.join("data")),
        ..Default::default()
    };
    config.listen.otlp_grpc = Some("127.0.0.1:0".into());
    config.listen.otlp_http = Some("127.0.0.1:0".into());
    config.listen.api = Some("127.0.0.1:0".into());
    config.rules.policies = Some(policies.to_path_buf());
    let server = crate::start(config.validate()?).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/authorize", server.api);
    let bodies: Vec<String> = mix
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    let mut us = Vec::with_capacity(n_durable);
    let wall = Instant::now();
    let mut failure = None;
    for i in 0..n_durable {
        let body = bodies[i % bodies.len()].clone();
        let t = Instant::now();
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let ok = match res {
            Ok(res) => {
                let status = res.status();
                res.bytes().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        if !ok {
            failure = Some(format!("POST {url} failed"));
            break;
        }
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let http = latency(us, wall.elapsed().as_secs_f64());
    server.shutdown().await?;
    if let Some(f) = failure {
        return Err(Error::Task(f));
    }
    Ok((recorded, http))
}
