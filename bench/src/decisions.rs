//! Decision latency of the policy engine in this process, shared by `custos bench policy` and
//! `cargo bench -p custos-policy` (which runs it in the release profile).
//!
//! This file depends only on the policy engine, the synthetic request mix and serde, so that
//! `policy/benches/decisions.rs` includes it (`#[path]`) without building the benchmark crate's
//! dependencies (the query engine, the server) in the release profile.

use std::time::Instant;

use custos_policy::engine::{AuthzRequest, Engine};
use custos_policy::{Error, Result};
use serde::Serialize;

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

/// The request mix ([`custos_synth::policy::requests`]) as engine requests.
pub fn requests() -> Vec<AuthzRequest> {
    custos_synth::policy::requests()
        .into_iter()
        .map(|r| AuthzRequest {
            principal: r.principal,
            action: r.action,
            resource: r.resource,
            context: r.context,
            entities: r.entities,
        })
        .collect()
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
    let built: Vec<_> = mix
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
