//! Decision latency of the shipped policy set in this process, in the bench (release) profile:
//! `cargo bench -p custos-policy --bench decisions`. Prints p50/p99 per path; `custos bench policy`
//! measures the same mix in the dev profile plus the recorded and HTTP paths. The measuring code is
//! the benchmark crate's `bench/src/decisions.rs`, included here so that only the policy engine is
//! built in the release profile.

use std::path::Path;
use std::process::ExitCode;

#[path = "../../bench/src/decisions.rs"]
mod decisions;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy");
    let n: usize = std::env::var("DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let run = || -> custos_policy::Result<()> {
        let engine = custos_policy::engine::Engine::load(&dir)?;
        let (evaluate, full) = decisions::in_process(&engine, n)?;
        println!(
            "policy decisions ({} policies, release profile), {n} each:",
            engine.policies().len()
        );
        for (name, l) in [
            ("evaluation only (Engine::decide)", evaluate),
            ("in process (Engine::authorize)", full),
        ] {
            println!(
                "  {name:<34} p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>9.1} µs  {:>8.0}/s",
                l.p50_us, l.p99_us, l.max_us, l.per_second
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
