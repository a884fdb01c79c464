//! Workflow definitions: the reference workflows validate; broken ones are reported with file,
//! step and field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use custos_executor::workflow::{Error, load, parse};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/workflows")
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, "w.yaml") {
        Err(Error::Invalid { problems, .. }) => problems.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_reference_workflows_validate() {
    for f in ["invoice-processing.yaml", "support-triage.yaml"] {
        let w = load(&fixtures().join(f)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.timeouts.len(), w.file.steps.len());
    }
    let w = load(&fixtures().join("invoice-processing.yaml")).unwrap();
    let post = w.file.steps.iter().position(|s| s.id == "post").unwrap();
    assert!(
        w.retries[post]
            .non_retryable_errors
            .contains("duplicate_key")
    );
    let review = w.file.steps.iter().position(|s| s.id == "review").unwrap();
    assert_eq!(w.timeouts[review].as_secs(), 86_400);
}

#[test]
fn every_problem_names_step_and_field() {
    let text = std::fs::read_to_string(fixtures().join("invoice-processing.yaml"))
        .unwrap()
        .replace("goto: post", "goto: pst")
        .replace("compensate: reverse", "compensate: validate")
        .replace("backoff_coefficient: 2.0", "backoff_coefficient: 0.5")
        .replace("priority: high", "priority: asap")
        .replace("model: small\n", "model: tiny\n");
    let p = problems(&text);
    let has = |needle: &str| {
        assert!(
            p.iter().any(|x| x.contains(needle)),
            "no `{needle}` in {p:#?}"
        )
    };
    has("step `route` (#4), field `when[0].goto`: unknown step `pst`; steps are extract, terms");
    has("step `post` (#6), field `compensate`: compensation `validate` must be a connector step");
    has("step `extract` (#1), field `retry.backoff_coefficient`: `0.5` must be at least 1");
    has("step `review` (#5), field `priority`: `asap` is not one of low, normal, high, urgent");
    has("step `extract` (#1), field `model`: unknown model `tiny`");
    assert_eq!(p.len(), 5, "{p:#?}");
}

#[test]
fn syntax_errors_and_unknown_fields_have_positions() {
    let p =
        problems("name: x\nversion: '1'\nsteps:\n  - id: a\n    kind: model\n    colour: red\n");
    assert!(p[0].contains("line 6") && p[0].contains("colour"), "{p:?}");
    let p = problems("name: x\nversion: '1'\nsteps: [\n");
    assert!(p[0].contains("line"), "{p:?}");
}

#[test]
fn routes_read_only_earlier_steps_or_the_input() {
    let text = "name: x\nversion: '1'\nsteps:\n  - id: r\n    kind: route\n    when:\n      - {field: later.confidence, op: '>=', value: 0.9, goto: later}\n    default: later\n  - id: later\n    kind: transform\n    set: {a: input.b}\n";
    let p = problems(text);
    assert!(
        p.iter()
            .any(|x| x.contains("when[0].field") && x.contains("earlier step")),
        "{p:?}"
    );
}
