//! Decision latency of the engine in this process: the request mix and its timing, shared by
//! `custos bench policy` and `cargo bench -p custos-policy` (which runs it in the release profile).

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{AuthzRequest, Engine};
use crate::{Error, Result};

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

/// Percentiles of per-decision times (microseconds) measured over `wall_s` seconds.
pub fn latency(mut us: Vec<f64>, wall_s: f64) -> Latency {
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

/// Times `n` decisions of the mix two ways: evaluation of requests built beforehand
/// (`Engine::decide`) and the whole call from JSON (`Engine::authorize`). Fails when the mix does
/// not fit the policies (it would measure errors).
pub fn in_process(engine: &Engine, n: usize) -> Result<(Latency, Latency)> {
    let mix = requests();
    for r in &mix {
        let d = engine.authorize(r);
        if !d.errors.is_empty() {
            return Err(Error::Entities(format!(
                "the benchmark request mix does not fit the policies in `{}`: {:?}",
                engine.policies().dir.display(),
                d.errors
            )));
        }
    }
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
    let mut us = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let r = &mix[i % mix.len()];
        let t = Instant::now();
        let d = engine.authorize(r);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(d);
    }
    Ok((evaluate_only, latency(us, wall.elapsed().as_secs_f64())))
}
