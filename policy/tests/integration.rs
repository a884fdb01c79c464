//! The shipped policy directory validates and decides as documented; broken policy files are
//! reported with file, line and column.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use custos_policy::engine::{AuthzRequest, Engine};
use custos_policy::{Error, load, testing};
use serde_json::{Value, json};

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
    assert!(
        p.advice("execute-large-amount-needs-human")
            .unwrap()
            .contains("human review")
    );
}

#[test]
fn syntax_errors_point_at_file_line_and_column() {
    let dir = with_file(
        "extra.cedar",
        "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.a == };\n",
    );
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
    let dir = with_file(
        "extra.cedar",
        "permit (principal, action, resource);\n@id(\"threshold-floor\")\nforbid (principal, action, resource);\n",
    );
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("no `@id")), "{p:?}");
    // The shipped `runtime.cedar` sorts after `extra.cedar`: its copy is the duplicate.
    assert!(
        p.iter().any(|p| p.contains("runtime.cedar:")
            && p.contains("`threshold-floor` is already used in")
            && p.contains("extra.cedar")),
        "{p:?}"
    );
}

#[test]
fn a_broken_schema_is_reported_with_its_position() {
    let dir = with_file(
        "schema.cedarschema",
        "namespace Custos {\n  entity User {\n    email: Strin,\n  };\n}\n",
    );
    let p = problems(dir.path());
    assert!(p.iter().any(|p| p.contains("schema.cedarschema")), "{p:?}");
}

fn engine() -> Engine {
    Engine::load(&shipped()).unwrap()
}

fn request(action: &str, principal: &str, resource: &str, context: Value) -> AuthzRequest {
    AuthzRequest {
        principal: Value::String(principal.into()),
        action: Value::String(action.into()),
        resource: Value::String(resource.into()),
        context,
        entities: vec![],
    }
}

fn canary(sample: i64, delta: &str, errors: &str, psi: &str) -> Value {
    json!({
        "change": "prompt", "current_version": "v1", "candidate_version": "v2",
        "metrics": {
            "sample_size": sample, "baseline_sample_size": 900, "override_rate": "0.1",
            "override_rate_delta": delta, "override_rate_delta_upper": delta, "error_rate": errors, "error_rate_delta": "0.0",
            "p99_latency_ms": 900000, "p99_latency_ratio": "1.0", "cost_per_success_usd": "0.02",
            "cost_per_success_ratio": "1.0", "confidence_psi": psi
        }
    })
}

const CI: &str = "Custos::Service::\"ci\"";
const WF: &str = "Custos::Workflow::\"invoice-posting\"";

#[test]
fn the_shipped_policy_tests_pass() {
    let p = load(&shipped()).unwrap();
    let report = testing::run(&p, &shipped().join("tests")).unwrap();
    assert!(report.cases.len() >= 20, "{}", report.cases.len());
    assert!(report.ok(), "{}", testing::render_text(&report));
    // Every deploy forbid has a deny case.
    for id in p.files.keys().filter(|id| {
        id.starts_with("deploy-")
            && p.set
                .policy(&cedar_policy::PolicyId::new(id.as_str()))
                .is_some_and(|x| x.effect() == cedar_policy::Effect::Forbid)
    }) {
        let tests = std::fs::read_to_string(shipped().join("tests/deploy.json")).unwrap();
        assert!(tests.contains(&format!("\"{id}\"")), "no test names `{id}`");
    }
}

#[test]
fn failing_policy_tests_are_reported_in_text_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let case = json!([{
        "name": "a tiny canary <is> allowed",
        "request": {"principal": CI, "action": "Custos::Action::\"deploy\"", "resource": WF,
                    "context": canary(10, "0.0", "0.0", "0.0")},
        "entities": serde_json::from_str::<Value>(&std::fs::read_to_string(shipped().join("entities.json")).unwrap()).unwrap(),
        "decision": "allow",
        "reason": ["deploy-by-ci-or-owner"],
        "num_errors": 0
    }, {
        "name": "an unknown principal type",
        "request": {"principal": "Custos::Robot::\"r2\"", "action": "Custos::Action::\"deploy\"", "resource": WF,
                    "context": canary(10, "0.0", "0.0", "0.0")},
        "entities": [],
        "decision": "deny"
    }]);
    std::fs::write(dir.path().join("bad.json"), case.to_string()).unwrap();
    let report = testing::run(&load(&shipped()).unwrap(), dir.path()).unwrap();
    assert_eq!(report.failed(), 2);
    let text = testing::render_text(&report);
    assert!(text.contains("expected `allow`, got `deny`"), "{text}");
    assert!(
        text.contains(
            "expected determining policies `deploy-by-ci-or-owner`, got `deploy-canary-too-small`"
        ),
        "{text}"
    );
    assert!(text.contains("the request cannot be evaluated"), "{text}");
    assert!(
        text.contains("test result: FAILED. 0 passed; 2 failed"),
        "{text}"
    );
    let xml = testing::render_junit(&report);
    assert!(
        xml.contains("<testsuite name=\"bad.json\" tests=\"2\" failures=\"2\""),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"a tiny canary &lt;is&gt; allowed\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"expected `allow`, got `deny`\">"),
        "{xml}"
    );
}

#[test]
fn malformed_test_files_name_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.json"),
        "[{\"name\": \"x\",\n \"request\": 3}]",
    )
    .unwrap();
    let e = testing::run(&load(&shipped()).unwrap(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.json") && e.contains("line 2"), "{e}");
}

#[test]
fn the_deploy_gate_allows_a_healthy_canary_and_names_each_deny() {
    let e = engine();
    let d = e.authorize(&request(
        "deploy",
        CI,
        WF,
        canary(500, "0.0", "0.01", "0.05"),
    ));
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.policy_ids(), ["deploy-by-ci-or-owner"]);
    assert_eq!(d.policy_hash, e.hash());
    let d = e.authorize(&request("deploy", CI, WF, canary(50, "0.0", "0.2", "0.3")));
    assert!(!d.allowed());
    assert_eq!(
        d.policy_ids(),
        [
            "deploy-canary-too-small",
            "deploy-confidence-drifted",
            "deploy-error-rate-too-high"
        ]
    );
    assert!(
        d.advice.iter().any(|a| a.contains("longer")),
        "{:?}",
        d.advice
    );
    let first = &d.determining_policies[0];
    assert_eq!(
        (first.file.as_deref(), first.effect.as_str()),
        (Some("deploy.cedar"), "forbid")
    );
    assert!(first.line.unwrap() > 1);
}

#[test]
fn requests_that_do_not_match_the_schema_are_denied_as_request_errors() {
    let e = engine();
    let mut bad = canary(500, "0.0", "0.01", "0.05");
    bad["metrics"]["override_rate"] = json!(0.1);
    let d = e.authorize(&request("deploy", CI, WF, bad));
    assert!(!d.allowed() && d.request_error(), "{d:?}");
    assert!(d.errors[0].message.contains("context"), "{:?}", d.errors);
    let d = e.authorize(&request("launch", CI, WF, json!({})));
    assert!(!d.allowed() && d.request_error(), "{d:?}");
    let d = e.authorize(&request("deploy", "ci", WF, json!({})));
    assert!(
        d.errors[0].message.contains("principal `ci`"),
        "{:?}",
        d.errors
    );
}

#[test]
fn a_policy_that_errors_makes_the_decision_a_deny() {
    // A forbid reading an attribute the entity lacks errors at runtime; Cedar would skip it
    // and allow on the permit. custos denies.
    let dir = with_file(
        "extra.cedar",
        "@id(\"needs-risk\")\n@advice(\"x\")\nforbid (principal, action == Custos::Action::\"deploy\", resource)\nwhen { resource.risk == \"extreme\" };\n",
    );
    let e = Engine::load(dir.path()).unwrap();
    let mut req = request(
        "deploy",
        CI,
        "Custos::Workflow::\"ghost\"",
        canary(500, "0.0", "0.01", "0.05"),
    );
    req.entities = vec![];
    let d = e.authorize(&req);
    assert!(!d.allowed(), "{d:?}");
    assert!(!d.errors.is_empty() && !d.request_error(), "{d:?}");
    assert!(d.determining_policies.is_empty());
}

#[test]
fn request_entities_extend_the_store() {
    let e = engine();
    let ctx = json!({"override": false});
    let task = json!({"uid": {"type": "Custos::ReviewTask", "id": "t1"}, "attrs": {
        "workflow": {"type": "Custos::Workflow", "id": "invoice-posting"},
        "reviewers": {"type": "Custos::Team", "id": "reviewers"},
        "requested_by": {"type": "Custos::User", "id": "ana"}}, "parents": []});
    let mut req = request(
        "approve_review",
        "Custos::User::\"ben\"",
        "Custos::ReviewTask::\"t1\"",
        ctx,
    );
    req.entities = vec![task];
    let d = e.authorize(&req);
    assert!(d.allowed(), "{d:?}");
    req.principal = json!({"type": "Custos::User", "id": "ana"});
    let d = e.authorize(&req);
    assert_eq!(d.policy_ids(), ["review-four-eyes"]);
}

#[test]
fn the_policy_hash_changes_with_any_edit() {
    let a = load(&shipped()).unwrap().hash;
    let same = with_file(
        "deploy.cedar",
        &std::fs::read_to_string(shipped().join("deploy.cedar")).unwrap(),
    );
    assert_eq!(load(same.path()).unwrap().hash, a);
    let edited = with_file(
        "deploy.cedar",
        &format!(
            "{}\n// a comment\n",
            std::fs::read_to_string(shipped().join("deploy.cedar")).unwrap()
        ),
    );
    let b = load(edited.path()).unwrap().hash;
    assert_ne!(a, b);
    assert_eq!(a.len(), 64);
}

#[test]
fn decisions_snapshot() {
    let e = engine();
    let wf = json!({"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}});
    let exec = |conf: &str, amount: &str, human: bool| {
        request(
            "execute",
            "Custos::Service::\"executor\"",
            "Custos::Connector::\"erp\"",
            json!({"workflow": wf, "confidence": conf, "amount_usd": amount, "human_approved": human}),
        )
    };
    let cases = vec![
        (
            "healthy canary",
            request("deploy", CI, WF, canary(500, "0.0", "0.01", "0.05")),
        ),
        (
            "regressed canary",
            request("deploy", CI, WF, canary(500, "0.08", "0.01", "0.31")),
        ),
        ("confident posting", exec("0.97", "120.0", false)),
        ("low confidence posting", exec("0.5", "120.0", false)),
        ("large posting", exec("0.99", "25000.0", false)),
        ("bad context", exec("high", "120.0", false)),
    ];
    let out: Vec<Value> = cases
        .into_iter()
        .map(|(name, r)| {
            let mut d = serde_json::to_value(e.authorize(&r)).unwrap();
            d["policy_hash"] = json!("[hash]");
            json!({"case": name, "decision": d})
        })
        .collect();
    insta::assert_json_snapshot!("decisions", out);
}

/// The typed context path decides exactly as Cedar's JSON parser does, and falls back to it for
/// anything it does not handle (so errors keep Cedar's wording).
#[test]
fn typed_contexts_decide_like_cedars_parser() {
    let p = load(&shipped()).unwrap();
    let e = Engine::new(p.clone(), None).unwrap();
    let mut requests: Vec<AuthzRequest> = Vec::new();
    for (_, cases) in testing::read_tests(&shipped().join("tests")).unwrap() {
        for c in cases {
            requests.push(AuthzRequest {
                principal: c.request.principal,
                action: c.request.action,
                resource: c.request.resource,
                context: c.request.context.unwrap_or_else(|| json!({})),
                entities: c.entities,
            });
        }
    }
    // Odd shapes: each must give the same outcome on both paths.
    let base = requests
        .iter()
        .find(|r| r.action.as_str().is_some_and(|a| a.contains("execute")))
        .unwrap()
        .clone();
    let variants = [
        json!({"workflow": "Custos::Workflow::\"invoice-posting\"", "confidence": "0.97", "amount_usd": "1.0", "human_approved": false}),
        json!({"workflow": {"type": "Custos::Workflow", "id": "invoice-posting"}, "confidence": "0.97", "amount_usd": "1.0", "human_approved": false}),
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}}, "confidence": {"__extn": {"fn": "decimal", "arg": "0.97"}}, "amount_usd": "1.0", "human_approved": false}),
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}}, "confidence": 0.97, "amount_usd": "1.0", "human_approved": false}),
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}}, "confidence": "high", "amount_usd": "1.0", "human_approved": false}),
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}}, "confidence": "0.97", "amount_usd": "1.0"}),
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}}, "confidence": "0.97", "amount_usd": "1.0", "human_approved": false, "extra": 1}),
        json!({"workflow": {"__entity": {"type": "Custos::Connector", "id": "erp"}}, "confidence": "0.97", "amount_usd": "1.0", "human_approved": "no"}),
        json!([1, 2]),
    ];
    for v in variants {
        let mut r = base.clone();
        r.context = v;
        requests.push(r);
    }
    let mut fast_paths = 0;
    for r in &requests {
        let decide = |built: Result<
            (cedar_policy::Request, Option<cedar_policy::Entities>),
            Box<custos_policy::engine::Decision>,
        >| match built {
            Ok((req, ents)) => e.decide(&req, ents.as_ref().unwrap_or(e.entities())),
            Err(d) => *d,
        };
        let fast = decide(e.build(r));
        let slow = decide(e.build_with_cedar_parser(r));
        assert_eq!(fast, slow, "{}", r.context);
        if !fast.request_error() {
            fast_paths += 1;
        }
    }
    assert!(fast_paths >= 25, "{fast_paths}");
}

/// The who-may-do-what table of docs/governance.md says what the shipped policies decide: every
/// cell is asked of the engine with a member of the column's team.
#[test]
fn the_access_table_in_the_docs_matches_the_shipped_policies() {
    let engine = Engine::load(&shipped()).unwrap();
    let doc = std::fs::read_to_string(shipped().join("../../docs/governance.md")).unwrap();
    let table = doc
        .split("<!-- access-table: checked by policy/tests/integration.rs -->")
        .nth(1)
        .and_then(|t| t.split("<!-- end access-table -->").next())
        .expect("the access table and its markers");
    let rows: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let member = |team: &str| match team {
        "admins" => "Custos::User::\"admin\"",
        "sre" => "Custos::User::\"sam\"",
        "monitoring" => "Custos::Service::\"prometheus\"",
        "compliance" => "Custos::User::\"cleo\"",
        "operators" => "Custos::User::\"omar\"",
        "ci" => "Custos::Service::\"ci\"",
        // A support reviewer; "own queue" cells are asked about a support task.
        "reviewers" => "Custos::User::\"ben\"",
        "ingest" => "Custos::Service::\"otel-collector\"",
        "executors" => "Custos::Service::\"executor\"",
        other => panic!("no member for column `{other}`"),
    };
    let task = |queue: &str| {
        json!({"uid": {"type": "Custos::ReviewTask", "id": "t-1"}, "attrs": {
            "workflow": {"__entity": {"type": "Custos::Workflow", "id": "support-triage"}},
            "reviewers": {"__entity": {"type": "Custos::Team", "id": queue}},
            "requested_by": {"__entity": {"type": "Custos::User", "id": "omar"}}}, "parents": []})
    };
    let ask = |principal: &str, action: &str, queue: &str| {
        // The support queue's workflow, or accounts payable's.
        let workflow = if queue == "ap-team" {
            "Custos::Workflow::\"invoice-posting\""
        } else {
            "Custos::Workflow::\"support-triage\""
        };
        let (resource, context, entities) = match action {
            "start_run" | "read_runs" | "gate" => (json!(workflow), json!({}), vec![]),
            "read_review" => (
                json!("Custos::ReviewTask::\"t-1\""),
                json!({}),
                vec![task(queue)],
            ),
            "approve_review" => (
                json!("Custos::ReviewTask::\"t-1\""),
                json!({"override": false}),
                vec![task(queue)],
            ),
            _ => (json!("Custos::Api::\"custos\""), json!({}), vec![]),
        };
        let d = engine.authorize(&AuthzRequest {
            principal: json!(principal),
            action: json!(action),
            resource,
            context,
            entities,
        });
        // Only people review: the schema itself refuses a service.
        if action == "approve_review" && principal.starts_with("Custos::Service::") {
            assert!(d.request_error(), "{principal} {action}: {d:?}");
            return false;
        }
        assert!(d.errors.is_empty(), "{principal} {action}: {d:?}");
        d.allowed()
    };
    let header = &rows[0];
    assert_eq!(&header[..2], ["action", "operations"]);
    let mut checked = 0;
    for row in &rows[1..] {
        let action = row[0].trim_matches('`');
        for (team, cell) in header[2..].iter().zip(&row[2..]) {
            let who = member(team);
            match cell.as_str() {
                "yes" => assert!(ask(who, action, "support-team"), "{team} {action}"),
                "no" => {
                    // A reviewer is also in the team that owns its queue's workflow (and may
                    // run that workflow's gate): "no" holds for another team's queue and
                    // workflow.
                    assert!(!ask(who, action, "ap-team"), "{team} {action}");
                    if team != "reviewers" {
                        assert!(!ask(who, action, "support-team"), "{team} {action}");
                    }
                }
                "own queue" => {
                    assert!(ask(who, action, "support-team"), "{team} {action}");
                    assert!(
                        !ask(who, action, "ap-team"),
                        "{team} {action}: another queue"
                    );
                }
                other => panic!("unknown cell `{other}` for {team} {action}"),
            }
            checked += 1;
        }
    }
    // Every action of the schema is in the table, but those that only govern the automation.
    let schema = std::fs::read_to_string(shipped().join("schema.cedarschema")).unwrap();
    let mut declared: Vec<&str> = schema
        .lines()
        .filter_map(|l| l.trim().strip_prefix("action "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| !["deploy", "execute", "change_threshold"].contains(a))
        .collect();
    declared.sort_unstable();
    let mut listed: Vec<&str> = rows[1..].iter().map(|r| r[0].trim_matches('`')).collect();
    listed.sort_unstable();
    assert_eq!(listed, declared, "the table lists every access action");
    assert_eq!(checked, declared.len() * 9, "every action, every role");
    // The footnote of `gate`: a workflow's owners run its gate too.
    assert!(
        !ask("Custos::User::\"ana\"", "gate", "support-team"),
        "ana owns no support workflow"
    );
    let d = engine.authorize(&AuthzRequest {
        principal: json!("Custos::User::\"ana\""),
        action: json!("gate"),
        resource: json!("Custos::Workflow::\"invoice-posting\""),
        context: json!({}),
        entities: vec![],
    });
    assert!(d.allowed(), "{d:?}");
}

/// A request's entities describe its resource; they never change what the store says.
#[test]
fn request_entities_cannot_redefine_or_join_stored_entities() {
    let engine = Engine::load(&shipped()).unwrap();
    let ask = |entities: Vec<Value>| {
        engine.authorize(&AuthzRequest {
            principal: json!("Custos::Service::\"executor\""),
            action: json!("execute"),
            resource: json!("Custos::Connector::\"erp\""),
            context: json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
                            "confidence": "0.60", "amount_usd": "10.00", "human_approved": false}),
            entities,
        })
    };
    assert!(!ask(vec![]).allowed(), "0.60 is below the threshold");
    // Lowering the stored workflow's threshold is refused, naming the entity.
    let d = ask(vec![
        json!({"uid": {"type": "Custos::Workflow", "id": "invoice-posting"},
        "attrs": {"owner": {"__entity": {"type": "Custos::Team", "id": "ap-team"}}, "risk": "low",
                  "auto_threshold": {"__extn": {"fn": "decimal", "arg": "0.5"}}}, "parents": []}),
    ]);
    assert!(!d.allowed() && d.request_error(), "{d:?}");
    assert!(
        d.errors[0]
            .message
            .contains("`Custos::Workflow::\"invoice-posting\"` is an entity of the store"),
        "{d:?}"
    );
    // A new user joining a stored team is refused too.
    let d = ask(vec![
        json!({"uid": {"type": "Custos::User", "id": "mallory"},
        "attrs": {"email": "m@example.com"}, "parents": [{"type": "Custos::Team", "id": "reviewers"}]}),
    ]);
    assert!(d.request_error(), "{d:?}");
    assert!(
        d.errors[0].message.contains("may not be made a member of"),
        "{d:?}"
    );
    // Describing an entity the store does not have (a review task) is what entities are for.
    let d = ask(vec![
        json!({"uid": {"type": "Custos::ReviewTask", "id": "new"}, "attrs": {
        "workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
        "reviewers": {"__entity": {"type": "Custos::Team", "id": "ap-team"}}}, "parents": []}),
    ]);
    assert!(d.errors.is_empty(), "{d:?}");
}

#[test]
fn shipped_workflows_trust_the_collector_and_the_executor_only() {
    let engine = Engine::load(&shipped()).unwrap();
    let trusted = vec![
        "Custos::Service::\"executor\"".to_string(),
        "Custos::Service::\"otel-collector\"".to_string(),
    ];
    for wf in ["support-triage", "invoice-posting", "invoice-processing"] {
        assert_eq!(engine.trusted_sources(wf), Some(trusted.clone()), "{wf}");
    }
    // A workflow the store does not know, or one naming no set, trusts every source.
    assert_eq!(engine.trusted_sources("no-such-workflow"), None);
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "schema.cedarschema",
        "deploy.cedar",
        "runtime.cedar",
        "access.cedar",
    ] {
        std::fs::copy(shipped().join(f), dir.path().join(f)).unwrap();
    }
    let entities = std::fs::read_to_string(shipped().join("entities.json"))
        .unwrap()
        .replace("\"trusted_sources\": [{\"type\": \"Custos::Service\", \"id\": \"otel-collector\"}, {\"type\": \"Custos::Service\", \"id\": \"executor\"}],", "");
    std::fs::write(dir.path().join("entities.json"), entities).unwrap();
    let open = Engine::load(dir.path()).unwrap();
    assert_eq!(open.trusted_sources("invoice-posting"), None);
    // The schema checks the set's type: a user is not a source.
    let bad = std::fs::read_to_string(shipped().join("entities.json"))
        .unwrap()
        .replacen(
            "\"id\": \"otel-collector\"}, {\"type\": \"Custos::Service\", \"id\": \"executor\"}]",
            "\"id\": \"otel-collector\"}, {\"type\": \"Custos::User\", \"id\": \"sam\"}]",
            1,
        );
    std::fs::write(dir.path().join("entities.json"), bad).unwrap();
    assert!(Engine::load(dir.path()).is_err());
}

/// The shipped schema with `execute` taking an optional sensitive customer, and a nested record.
fn schema_with_sensitive_fields() -> String {
    let text = std::fs::read_to_string(shipped().join("schema.cedarschema")).unwrap();
    let marked = text.replace(
        "      human_approved: Bool,\n    },",
        "      human_approved: Bool,\n      @sensitive(\"person\") customer?: String,\n      \
         requester?: { @sensitive email: String, team: String },\n    },",
    );
    assert_ne!(marked, text, "the execute context moved: update this test");
    marked
}

#[test]
fn context_attributes_marked_sensitive_are_listed_with_their_paths_and_labels() {
    let dir = with_file("schema.cedarschema", &schema_with_sensitive_fields());
    let engine = Engine::load(dir.path()).unwrap();
    let marked: Vec<(Vec<String>, String)> = engine
        .sensitive("Custos::Action::\"execute\"")
        .iter()
        .map(|s| (s.path.clone(), s.label.clone()))
        .collect();
    assert_eq!(
        marked,
        vec![
            (vec!["customer".to_string()], "PERSON".to_string()),
            (
                vec!["requester".to_string(), "email".to_string()],
                "SENSITIVE".to_string()
            ),
        ]
    );
    for spelling in [
        "execute",
        "{\"type\": \"Custos::Action\", \"id\": \"execute\"}",
    ] {
        assert_eq!(engine.sensitive(spelling).len(), 2, "{spelling}");
    }
    assert!(engine.sensitive("Custos::Action::\"deploy\"").is_empty());
    assert!(engine.sensitive("not an action {").is_empty());
    assert!(
        Engine::load(&shipped())
            .unwrap()
            .sensitive("Custos::Action::\"execute\"")
            .is_empty()
    );
    // The annotation changes nothing about deciding: the value is there for the policies.
    let d = engine.authorize(&request(
        "execute",
        "Custos::Service::\"executor\"",
        "Custos::Connector::\"erp\"",
        json!({"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
               "confidence": "0.99", "amount_usd": "25.00", "human_approved": false,
               "customer": "u-4711"}),
    ));
    assert!(d.errors.is_empty(), "{d:?}");
}
