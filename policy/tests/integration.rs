//! The shipped policy directory validates and decides as documented; broken policy files are
//! reported with file, line and column.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, Request};
use custos_policy::{Error, Policies, load};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy")
}

/// A copy of the shipped directory with `file` replaced by `text`.
fn with_file(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(shipped()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

fn problems(dir: &Path) -> Vec<String> {
    match load(dir) {
        Err(Error::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_shipped_policies_validate_strictly() {
    let p = load(&shipped()).unwrap();
    assert!(p.len() >= 10, "{}", p.len());
    assert!(p.files.contains_key("deploy-override-rate-regressed"));
    assert!(p.advice("execute-large-amount-needs-human").unwrap().contains("human review"));
}

#[test]
fn syntax_errors_point_at_file_line_and_column() {
    let dir = with_file("extra.cedar", "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.a == };\n");
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("extra.cedar:3:")), "{p:?}");
}

#[test]
fn type_errors_and_unknown_attributes_point_at_the_policy() {
    let text = "\n\n@id(\"bad-type\")\nforbid (principal, action == Custos::Action::\"deploy\", resource)\nwhen { context.metrics.sample_size == \"many\" || resource.colour == \"red\" };\n";
    let dir = with_file("extra.cedar", text);
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("extra.cedar:5:")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("colour")), "{p:?}");
}

#[test]
fn ids_are_required_and_unique() {
    let dir = with_file("extra.cedar", "permit (principal, action, resource);\n@id(\"threshold-floor\")\nforbid (principal, action, resource);\n");
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("no `@id")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("extra.cedar:2:1") && p.contains("already used in")), "{p:?}");
}

#[test]
fn a_broken_schema_is_reported_with_its_position() {
    let dir = with_file("schema.cedarschema", "namespace Custos {\n  entity User {\n    email: Strin,\n  };\n}\n");
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("schema.cedarschema")), "{p:?}");
}

fn decide(p: &Policies, action: &str, context: serde_json::Value, principal: &str, resource: &str) -> (Decision, Vec<String>) {
    let entities = Entities::from_json_value(
        serde_json::json!([
            {"uid": {"type": "Custos::Team", "id": "ap"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Custos::User", "id": "ana"}, "attrs": {"email": "ana@example.com"}, "parents": [{"type": "Custos::Team", "id": "ap"}]},
            {"uid": {"type": "Custos::Service", "id": "ci"}, "attrs": {"kind": "ci"}, "parents": []},
            {"uid": {"type": "Custos::Workflow", "id": "invoice-posting"}, "attrs": {"owner": {"__entity": {"type": "Custos::Team", "id": "ap"}}, "risk": "medium", "auto_threshold": {"__extn": {"fn": "decimal", "arg": "0.9"}}}, "parents": []},
            {"uid": {"type": "Custos::Connector", "id": "erp"}, "attrs": {"side_effects": true}, "parents": []}
        ]),
        Some(&p.schema),
    )
    .unwrap();
    let action = EntityUid::from_str(&format!("Custos::Action::\"{action}\"")).unwrap();
    let context = Context::from_json_value(context, Some((&p.schema, &action))).unwrap();
    let request = Request::new(
        EntityUid::from_str(principal).unwrap(),
        action,
        EntityUid::from_str(resource).unwrap(),
        context,
        Some(&p.schema),
    )
    .unwrap();
    let response = Authorizer::new().is_authorized(&request, &p.set, &entities);
    assert_eq!(response.diagnostics().errors().count(), 0);
    let mut reasons: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
    reasons.sort();
    (response.decision(), reasons)
}

fn canary(sample: i64, delta: &str, errors: &str, psi: &str) -> serde_json::Value {
    serde_json::json!({
        "change": "prompt", "current_version": "v1", "candidate_version": "v2",
        "metrics": {
            "sample_size": sample, "override_rate": "0.1", "override_rate_delta": delta,
            "error_rate": errors, "p99_latency_ms": 900000, "cost_per_success_usd": "0.02",
            "confidence_psi": psi
        }
    })
}

#[test]
fn the_deploy_gate_allows_a_healthy_canary_and_names_each_deny() {
    let p = load(&shipped()).unwrap();
    let (ci, wf) = ("Custos::Service::\"ci\"", "Custos::Workflow::\"invoice-posting\"");
    let (d, why) = decide(&p, "deploy", canary(500, "0.0", "0.01", "0.05"), ci, wf);
    assert_eq!((d, why), (Decision::Allow, vec!["deploy-by-ci-or-owner".to_string()]));
    let (d, why) = decide(&p, "deploy", canary(500, "0.05", "0.01", "0.05"), ci, wf);
    assert_eq!((d, why), (Decision::Deny, vec!["deploy-override-rate-regressed".to_string()]));
    let (d, why) = decide(&p, "deploy", canary(50, "0.0", "0.2", "0.3"), ci, wf);
    assert_eq!(d, Decision::Deny);
    assert_eq!(why, ["deploy-canary-too-small", "deploy-confidence-drifted", "deploy-error-rate-too-high"]);
    assert!(p.advice("deploy-canary-too-small").unwrap().contains("longer"));
}

#[test]
fn runtime_actions_need_confidence_or_a_human_for_large_amounts() {
    let p = load(&shipped()).unwrap();
    let wf = serde_json::json!({"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}});
    let ctx = |conf: &str, amount: &str, human: bool| {
        serde_json::json!({"workflow": wf, "confidence": conf, "amount_usd": amount, "human_approved": human})
    };
    let (svc, erp) = ("Custos::Service::\"ci\"", "Custos::Connector::\"erp\"");
    assert_eq!(decide(&p, "execute", ctx("0.95", "120.0", false), svc, erp).0, Decision::Allow);
    assert_eq!(decide(&p, "execute", ctx("0.5", "120.0", false), svc, erp).0, Decision::Deny);
    let (d, why) = decide(&p, "execute", ctx("0.99", "25000.0", false), svc, erp);
    assert_eq!((d, why), (Decision::Deny, vec!["execute-large-amount-needs-human".to_string()]));
    assert_eq!(decide(&p, "execute", ctx("0.99", "25000.0", true), svc, erp).0, Decision::Allow);
}
