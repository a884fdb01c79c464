//! The simulator drives the reference workflows through the executor and applies its scenario
//! from the given run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_applies_its_scenario_from_the_given_run() {
    use custos_executor::simulate::{Scenario, SimulateOptions, simulate};
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(
        "drift:\n  - {workflow: support-triage, model: classifier, from_run: 60, confidence_shift: -0.3}\n\
         cost_spikes:\n  - {workflow: invoice-processing, model: small, from_run: 60, cost_per_1k_tokens: 0.5}\n\
         canaries:\n  - {workflow: support-triage, step: classify, prompt_version: v9, percent: 50, accuracy: 0.5}\n",
        "test",
    )
    .unwrap();
    assert!(
        Scenario::parse("drift: [{workflow: x}]", "bad")
            .unwrap_err()
            .to_string()
            .contains("invalid scenario `bad`")
    );
    let report = simulate(SimulateOptions {
        workflows: repo().join("fixtures/workflows"),
        runs: 240,
        rate: None,
        seed: 3,
        scenario,
        data_dir: dir.path().to_path_buf(),
        engine: Some(custos_policy::engine::Engine::load(&repo().join("rules/policy")).unwrap()),
        telemetry: custos_executor::telemetry::Telemetry::off(),
        concurrency: 16,
    })
    .await
    .unwrap();
    let finished: usize = report.outcomes.values().flat_map(|m| m.values()).sum();
    assert_eq!(finished, 240, "{report:?}");
    assert!(
        !report
            .outcomes
            .values()
            .any(|m| m.contains_key("unfinished")),
        "{report:?}"
    );
    assert!(report.reviews > 0 && report.overrides > 0, "{report:?}");

    let journal =
        custos_executor::journal::Journal::open(&dir.path().join("executor/journal.redb")).unwrap();
    let runs = journal.runs().unwrap();
    let nth = |r: &custos_executor::journal::RunRecord| -> usize {
        r.idempotency_key
            .as_ref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            / 2
    };
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (mut cheap, mut dear) = (Vec::new(), Vec::new());
    let mut canary = 0;
    for r in &runs {
        if r.workflow == "support-triage" {
            let c = r.outputs["classify"]["confidence"].as_f64().unwrap();
            if nth(r) >= 60 {
                after.push(c)
            } else {
                before.push(c)
            }
            canary += usize::from(r.outputs["classify"]["prompt_version"] == "v9");
        } else if r.outputs["extract"]["model"] == "seeded-extractor-small" {
            let c = r.outputs["extract"]["cost_usd"].as_f64().unwrap();
            if nth(r) >= 60 {
                dear.push(c)
            } else {
                cheap.push(c)
            }
        }
    }
    assert!(
        mean(&before) - mean(&after) > 0.2,
        "{} -> {}",
        mean(&before),
        mean(&after)
    );
    if !dear.is_empty() && !cheap.is_empty() {
        assert!(mean(&dear) > 100.0 * mean(&cheap), "{cheap:?} {dear:?}");
    }
    assert!((30..=90).contains(&canary), "{canary} of 120 on the canary");
    // Policy decisions were audited and the chain holds.
    assert!(
        custos_audit::verify(&dir.path().join("audit"))
            .unwrap()
            .finding
            .is_none()
    );
}
