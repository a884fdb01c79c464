//! `custos simulate`: synthetic runs of the reference workflows under a scenario.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_executor::telemetry::Telemetry;

use super::{engine, user};
use crate::flags::{SimulateArgs, data_dir};

pub fn print_simulation(r: &custos_executor::simulate::SimulationReport) {
    let runs: usize = r.outcomes.values().flat_map(|m| m.values()).sum();
    println!(
        "simulated {runs} runs in {:.1} s ({:.0} steps/s): {} reviews decided, {} overridden",
        r.elapsed.as_secs_f64(),
        r.steps as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.reviews,
        r.overrides
    );
    for (w, outcomes) in &r.outcomes {
        let parts: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {w}: {}", parts.join(" · "));
    }
}

pub async fn run(a: SimulateArgs) -> Result<ExitCode> {
    use custos_executor::simulate::{Scenario, SimulateOptions};
    let scenario = match &a.scenario {
        Some(p) => Scenario::load(p).map_err(user)?,
        None => Scenario::default(),
    };
    let telemetry = Telemetry::otlp(
        &a.otlp,
        "custos-executor",
        super::run::exporter_token().as_deref(),
    )
    .map_err(user)?;
    let engine = engine(&a.policies)?;
    let report = custos_executor::simulate::simulate(SimulateOptions {
        workflows: a.workflows,
        runs: a.runs,
        rate: a.rate,
        seed: a.seed,
        scenario,
        data_dir: data_dir(a.data),
        engine,
        telemetry: telemetry.clone(),
        concurrency: a.concurrency,
    })
    .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry task failed")??;
    print_simulation(&report);
    Ok(ExitCode::SUCCESS)
}
