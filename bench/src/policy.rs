//! `custos bench policy`: decision latency with the shipped policy set.
//!
//! Three figures, each over a mix of the shipped requests (deploy allow and deny, execute allow,
//! default deny and forbid, a review): an in-process `Engine::authorize` (the library call), the
//! same plus the durable audit append (`authorize_and_record`: one `fdatasync` per decision), and
//! `POST /api/authorize` through a real server over loopback, one request at a time.

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
}

/// Runs the benchmark with the policy directory `policies`: `n` in-process decisions, `n_durable`
/// recorded ones and over HTTP.
pub async fn run(policies: &Path, n: usize, n_durable: usize) -> Result<PolicyBenchReport> {
    let engine = Engine::load(policies)?;
    let (evaluate_only, in_process) = crate::decisions::in_process(&engine, n)?;
    let mix = requests();
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
    let mut config = custos_server::Config {
        data_dir: Some(dir.join("data")),
        ..Default::default()
    };
    config.listen.otlp_grpc = Some("127.0.0.1:0".into());
    config.listen.otlp_http = Some("127.0.0.1:0".into());
    config.listen.api = Some("127.0.0.1:0".into());
    config.rules.policies = Some(policies.to_path_buf());
    let server = custos_server::start(config.validate()?).await?;
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
