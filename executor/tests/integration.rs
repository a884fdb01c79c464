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

// ---------------------------------------------------------------------------------------------
// The run loop, in process, with the shipped policies and real files.

use std::sync::{Arc, Mutex};

use custos_executor::connector::effects;
use custos_executor::journal::{ReviewStatus, RunRecord, RunStatus};
use custos_executor::telemetry::Telemetry;
use custos_executor::{Error as ExecError, Executor, ExecutorOptions};
use custos_policy::engine::Engine;
use serde_json::{Value, json};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy")
}

fn executor(dir: &Path, with_policies: bool) -> Arc<Executor> {
    Executor::open(ExecutorOptions {
        data_dir: dir.to_path_buf(),
        engine: with_policies.then(|| Engine::load(&policies()).unwrap().into()),
        telemetry: Telemetry::off(),
        principal: "executor".into(),
        scrub: None,
    })
    .unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

async fn run(ex: &Executor, text: &str, input: Value, by: &str) -> RunRecord {
    let s = ex.start(text, "test.yaml", input, None, by).await.unwrap();
    ex.drive(&s.run_id).await.unwrap()
}

fn email(i: usize) -> Value {
    json!({"email_id": format!("e{i}"), "subject": format!("order {i} is late"),
           "body": "where is my order?", "expected": {"label": "urgent"}})
}

fn audit_records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidence_routes_runs_past_or_into_review() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let text = fixture("support-triage.yaml");
    let mut confident = 0;
    let mut waiting = 0;
    for i in 0..30 {
        let r = run(&ex, &text, email(i), "automation").await;
        let c = r.outputs["classify"]["confidence"].as_f64().unwrap();
        if c >= 0.9 {
            confident += 1;
            assert_eq!(r.status, RunStatus::Finished, "{r:?}");
            assert_eq!(r.outcome.as_deref(), Some("success"));
            assert_eq!(r.outputs["route"]["goto"], "draft");
            assert!(r.outputs.contains_key("ticket") && r.outputs.contains_key("reply"));
        } else {
            waiting += 1;
            assert_eq!(r.status, RunStatus::Waiting, "{r:?}");
            assert_eq!(r.outputs["route"]["goto"], "review");
            assert!(!r.outputs.contains_key("ticket"));
        }
    }
    assert!(confident > 3 && waiting > 3, "{confident} / {waiting}");
    let tickets = effects(&ex.connectors().file("tickets")).unwrap();
    assert_eq!(tickets.len(), confident);
    let reviews = ex.pending_reviews().unwrap();
    assert_eq!(reviews.len(), waiting);
    assert_eq!(reviews[0].queue, "support-team");
    assert!(reviews[0].context["confidence"].as_f64().unwrap() < 0.9);
    assert!(reviews[0].context["input"].get("expected").is_none());
    // Every ticket and email was authorized first, and recorded.
    let execs = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["action"].as_str().unwrap().contains("execute"))
        .count();
    assert_eq!(execs, 2 * confident);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_approve_reject_time_out_and_are_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let text = fixture("support-triage.yaml");
    let mut waiting = Vec::new();
    for i in 0..40 {
        let r = run(&ex, &text, email(i), "ben").await;
        if r.status == RunStatus::Waiting {
            waiting.push(r);
        }
    }
    assert!(waiting.len() >= 4);
    let task = |r: &RunRecord| r.review.clone().unwrap();
    // Not in the queue's team: denied and recorded, nothing changes.
    let e = ex
        .decide_review(&task(&waiting[0]), "ana", true, "looks right")
        .await;
    assert!(matches!(e, Err(ExecError::Denied(_))), "{e:?}");
    // Four eyes: ben started these runs.
    let e = ex
        .decide_review(&task(&waiting[0]), "ben", true, "mine")
        .await;
    assert!(
        matches!(e, Err(ExecError::Denied(ref m)) if m.contains("someone else")),
        "{e:?}"
    );
    assert_eq!(
        ex.journal()
            .review(&task(&waiting[0]))
            .unwrap()
            .unwrap()
            .status,
        ReviewStatus::Pending
    );

    // A run started by someone else is reviewed by ben (support-team).
    let mut n = 100;
    let other = loop {
        n += 1;
        let r = run(&ex, &text, email(n), "automation").await;
        if r.status == RunStatus::Waiting {
            break r;
        }
    };
    let d = ex
        .decide_review(&task(&other), "ben", true, "classification is right")
        .await
        .unwrap();
    assert_eq!(d.task.status, ReviewStatus::Approved);
    let r = ex.drive(&other.run_id).await.unwrap();
    assert_eq!(r.outcome.as_deref(), Some("success"));
    assert!(r.human_approved);
    let e = ex.decide_review(&task(&other), "ben", false, "again").await;
    assert!(matches!(e, Err(ExecError::Conflict(_))), "{e:?}");

    let mut n = 500;
    let rejected = loop {
        n += 1;
        let r = run(&ex, &text, email(n), "automation").await;
        if r.status == RunStatus::Waiting {
            break r;
        }
    };
    ex.decide_review(&task(&rejected), "ben", false, "not urgent at all")
        .await
        .unwrap();
    let r = ex.drive(&rejected.run_id).await.unwrap();
    assert_eq!(r.outcome.as_deref(), Some("escalated"));
    assert!(!r.outputs.contains_key("ticket"));

    // ben's own runs time out: `on_timeout: ticket` creates the ticket without approval.
    let later = custos_executor::now_ms() + 5 * 3_600_000;
    let moved = ex.expire_reviews(later).await.unwrap();
    assert!(moved.contains(&waiting[0].run_id));
    let r = ex.drive(&waiting[0].run_id).await.unwrap();
    assert_eq!(r.outcome.as_deref(), Some("success"));
    assert!(!r.human_approved);
    assert!(r.outputs.contains_key("ticket"));
    assert_eq!(
        ex.journal()
            .review(&task(&waiting[0]))
            .unwrap()
            .unwrap()
            .status,
        ReviewStatus::TimedOut
    );

    let reviews: Vec<Value> = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["kind"] == "review")
        .collect();
    assert_eq!(reviews.len(), 4, "{reviews:#?}");
    assert_eq!(
        reviews.iter().filter(|r| r["decision"] == "allow").count(),
        2
    );
    assert_eq!(reviews[3]["context"]["override"], true);
}

/// An HTTP stub recording each request's idempotency key.
async fn stub(status: u16, body: Value) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen2.clone();
        let body = body.clone();
        async move {
            seen.lock().unwrap().push(
                headers
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
            );
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(body),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn confident_invoices(url: &str) -> String {
    fixture("invoice-processing.yaml")
        .replace("http://127.0.0.1:8089/vendors", url)
        .replace("accuracy: 0.88", "accuracy: 1.0\n    confidence_shift: 1.0")
        .replace("canary_percent: 10", "canary_percent: 0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_posting_is_denied_routed_to_review_and_posted_once_after_approval() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let (url, keys) = stub(200, json!({"terms": "net 30"})).await;
    let text = confident_invoices(&url);
    let small = run(
        &ex,
        &text,
        json!({"invoice_id": "i1", "vendor": "acme", "amount_usd": 420.0, "text": "..."}),
        "automation",
    )
    .await;
    assert_eq!(small.outcome.as_deref(), Some("success"), "{small:?}");
    assert_eq!(
        keys.lock().unwrap().as_slice(),
        [format!("{}/terms", small.run_id)]
    );

    let big = run(
        &ex,
        &text,
        json!({"invoice_id": "i2", "vendor": "acme", "amount_usd": 25000.0, "text": "..."}),
        "automation",
    )
    .await;
    assert_eq!(big.status, RunStatus::Waiting, "{big:?}");
    assert_eq!(
        big.outputs["post"]["policy"]["policies"][0],
        "execute-large-amount-needs-human"
    );
    let task = ex
        .journal()
        .review(big.review.as_ref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(task.context["policy"]["step"], "post");
    assert!(
        task.context["policy"]["decision"]["advice"][0]
            .as_str()
            .unwrap()
            .contains("human review")
    );
    ex.decide_review(&task.id, "ana", true, "approved by AP lead")
        .await
        .unwrap();
    let big = ex.drive(&big.run_id).await.unwrap();
    assert_eq!(big.outcome.as_deref(), Some("success"), "{big:?}");
    let ledger = effects(&ex.connectors().file("ledger")).unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1]["key"], format!("{}/post", big.run_id));
    assert_eq!(ledger[1]["payload"]["amount_usd"], 25000.0);
    let denied = audit_records(dir.path())
        .into_iter()
        .filter(|r| r["decision"] == "deny" && r["action"].as_str().unwrap().contains("execute"))
        .count();
    assert_eq!(denied, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_policies_side_effects_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), false);
    let (url, _) = stub(200, json!({})).await;
    let r = run(
        &ex,
        &confident_invoices(&url).replace("default: review", "default: post"),
        json!({"invoice_id": "i1", "vendor": "acme", "amount_usd": 10.0, "text": "."}),
        "automation",
    )
    .await;
    // Fail closed: an erroring decision is a deny that no route gets around.
    assert_eq!(r.outcome.as_deref(), Some("failure"), "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("no policies are loaded")
    );
    assert!(effects(&ex.connectors().file("ledger")).unwrap().is_empty());
    let a = audit_records(dir.path());
    assert_eq!(a[0]["decision"], "deny");
    assert!(a[0]["errors"][0].as_str().unwrap().contains("no policies"));
    // A reviewer's decision is denied too: nothing is approved without policies.
    let text = fixture("support-triage.yaml");
    let mut n = 0;
    let waiting = loop {
        n += 1;
        let r = run(&ex, &text, email(n), "automation").await;
        if r.status == RunStatus::Waiting {
            break r;
        }
    };
    let e = ex
        .decide_review(waiting.review.as_ref().unwrap(), "ben", true, "ok")
        .await;
    assert!(matches!(e, Err(ExecError::Denied(_))), "{e:?}");
}

const SAGA: &str = r#"
name: invoice-processing
version: "saga"
input: {amount_usd: number}
models:
  m: {provider: local, model: m, version: "1", accuracy: 1.0, confidence_shift: 1.0}
connectors:
  ledger: {kind: ledger}
  mail: {kind: outbox, failure_rate: 1.0}
steps:
  - {id: extract, kind: model, task: extract, model: m, prompt_version: v1}
  - {id: first, kind: connector, connector: ledger, operation: post, compensate: undo}
  - {id: second, kind: connector, connector: ledger, operation: post, compensate: undo}
  - id: notify
    kind: connector
    connector: mail
    operation: send
    retry: {initial_interval: 50ms, backoff_coefficient: 2.0, maximum_attempts: 3}
  - {id: undo, kind: connector, connector: ledger, operation: reverse}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_retries_with_backoff_then_compensates_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let t = std::time::Instant::now();
    let r = run(&ex, SAGA, json!({"amount_usd": 120.0}), "automation").await;
    // Three attempts of `notify`: waits of 50 ms and 100 ms between them.
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.retries, 2);
    assert_eq!(r.outcome.as_deref(), Some("compensated"), "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("unavailable"), "{r:?}");
    let ledger = effects(&ex.connectors().file("ledger")).unwrap();
    let ops: Vec<(String, String)> = ledger
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().into(),
                e["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    let id = &r.run_id;
    assert_eq!(
        ops,
        [
            ("post".into(), format!("{id}/first")),
            ("post".into(), format!("{id}/second")),
            ("reverse".into(), format!("{id}/undo/second")),
            ("reverse".into(), format!("{id}/undo/first")),
        ]
    );
    assert!(effects(&ex.connectors().file("mail")).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_non_retryable_errors_stop_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let slow = SAGA
        .replace("failure_rate: 1.0", "latency_ms: 400")
        .replace(
            "maximum_attempts: 3}",
            "maximum_attempts: 2}\n    timeout: 100ms",
        );
    let t = std::time::Instant::now();
    let r = run(&ex, &slow, json!({"amount_usd": 1.0}), "automation").await;
    assert!(
        t.elapsed() < std::time::Duration::from_millis(400 * 2),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.outcome.as_deref(), Some("compensated"));
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("timed out after 100 ms"),
        "{r:?}"
    );
    assert_eq!(r.retries, 1);
    // `unavailable` listed as non-retryable: one attempt only.
    let once = SAGA.replace(
        "maximum_attempts: 3}",
        "maximum_attempts: 3, non_retryable_errors: [unavailable]}",
    );
    let r = run(&ex, &once, json!({"amount_usd": 1.0}), "automation").await;
    assert_eq!(r.retries, 0);
    assert_eq!(r.outcome.as_deref(), Some("compensated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_start_key_starts_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let text = fixture("support-triage.yaml");
    let a = ex
        .start(&text, "t", email(1), Some("evt-1".into()), "automation")
        .await
        .unwrap();
    let b = ex
        .start(&text, "t", email(1), Some("evt-1".into()), "automation")
        .await
        .unwrap();
    assert!(!a.existing && b.existing);
    assert_eq!(a.run_id, b.run_id);
    assert_eq!(ex.journal().runs().unwrap().len(), 1);
    let e = ex
        .start(&text, "t", json!({"email_id": 3}), None, "automation")
        .await;
    let msg = e.unwrap_err().to_string();
    assert!(
        msg.contains("field `email_id` must be a string")
            && msg.contains("field `subject` (string) is missing"),
        "{msg}"
    );
    drop(ex);
    // Reopened: the key is still known.
    let ex = executor(dir.path(), true);
    let c = ex
        .start(&text, "t", email(1), Some("evt-1".into()), "automation")
        .await
        .unwrap();
    assert_eq!(c.run_id, a.run_id);
    assert!(c.existing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_provider_speaks_chat_completions() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    let content =
        json!({"label": "urgent", "confidence": 0.97, "output": {"label": "urgent"}}).to_string();
    let (url, _) = stub(200, json!({"model": "gpt-4o-2024-08-06", "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9}})).await;
    let text = fixture("support-triage.yaml").replace(
        "    provider: local\n    model: seeded-classifier",
        &format!("    provider: openai\n    base_url: {url}/v1\n    model: gpt-4o"),
    );
    let r = run(&ex, &text, email(1), "automation").await;
    assert_eq!(r.outputs["classify"]["label"], "urgent");
    assert_eq!(r.outputs["classify"]["confidence"], 0.97);
    assert_eq!(r.outputs["classify"]["model"], "gpt-4o-2024-08-06");
    assert_eq!(r.outputs["classify"]["input_tokens"], 120);
    assert_eq!(r.outcome.as_deref(), Some("success"));

    let (url, _) = stub(429, json!({"error": "slow down"})).await;
    let text = fixture("support-triage.yaml")
        .replace(
            "    provider: local\n    model: seeded-classifier",
            &format!("    provider: openai\n    base_url: {url}\n    model: gpt-4o"),
        )
        .replace(
            "    timeout: 10s\n",
            "    timeout: 10s\n    retry: {initial_interval: 10ms, maximum_attempts: 2}\n",
        );
    let r = run(&ex, &text, email(2), "automation").await;
    assert_eq!(r.outcome.as_deref(), Some("failure"));
    assert!(
        r.error.as_deref().unwrap().starts_with("rate_limited"),
        "{r:?}"
    );
    assert_eq!(r.retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_cache_rate_limit_breaker_and_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), true);
    // Cascade: the small model is never confident enough, so the large one answers.
    let cascade = r#"
name: support-triage
version: "c"
input: {email_id: string}
models:
  small: {provider: local, model: tiny, version: "1", accuracy: 0.0, confidence_shift: -1.0}
  large: {provider: local, model: huge, version: "2", accuracy: 1.0, confidence_shift: 1.0}
connectors:
  tickets: {kind: tickets, rate_per_second: 5}
steps:
  - {id: classify, kind: model, task: classify, model: small, fallback_model: large, cascade_below: 0.5, prompt_version: v1, cache: true}
  - {id: ticket, kind: connector, connector: tickets, operation: create}
"#;
    let input = |i: usize| json!({"email_id": format!("e{i}"), "expected": {"label": "low"}});
    let r = run(&ex, cascade, input(1), "automation").await;
    assert_eq!(r.outputs["classify"]["model"], "huge");
    assert_eq!(r.outputs["classify"]["label"], "low");
    assert_eq!(r.outputs["classify"]["confidence"], 1.0);
    // Cache: the same input is answered from the journal (same answer, no new model call).
    let again = run(&ex, cascade, input(1), "automation").await;
    assert_eq!(again.outputs["classify"], r.outputs["classify"]);
    // Rate limit: 5 tickets per second with a burst of 5; twelve tickets take over a second.
    let t = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 10..20 {
        let ex = ex.clone();
        tasks.push(tokio::spawn(async move {
            run(&ex, cascade, input(i), "automation").await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().outcome.as_deref(), Some("success"));
    }
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );

    // Circuit breaker: after two failures the connector is not called for the cooldown.
    let breaker = r#"
name: support-triage
version: "b"
input: {email_id: string}
connectors:
  tickets: {kind: tickets, failure_rate: 1.0, breaker_failures: 2, breaker_cooldown: 10s}
steps:
  - id: send
    kind: connector
    connector: tickets
    operation: create
    retry: {initial_interval: 10ms, maximum_attempts: 4}
"#;
    let r = run(&ex, breaker, json!({"email_id": "x"}), "ben").await;
    assert_eq!(r.outcome.as_deref(), Some("failure"), "{r:?}");
    assert!(
        r.error.as_deref().unwrap().starts_with("circuit_open"),
        "{r:?}"
    );
    assert_eq!(r.retries, 3);

    // Priorities: urgent before high before normal, then oldest first.
    let review = |p: &str| {
        format!(
            "name: support-triage\nversion: \"{p}\"\ninput: {{email_id: string}}\nsteps:\n  - {{id: review, kind: human, queue: support-team, priority: {p}}}\n"
        )
    };
    for p in ["normal", "urgent", "low", "high"] {
        let r = run(&ex, &review(p), json!({"email_id": p}), "automation").await;
        assert_eq!(r.status, RunStatus::Waiting);
    }
    let order: Vec<String> = ex
        .pending_reviews()
        .unwrap()
        .into_iter()
        .map(|t| t.priority)
        .collect();
    assert_eq!(order, ["urgent", "high", "normal", "low"]);
    // An unanswered review with `on_timeout: escalate` (the default) escalates the run.
    ex.expire_reviews(custos_executor::now_ms() + 25 * 3_600_000)
        .await
        .unwrap();
    for t in ex.journal().reviews().unwrap() {
        assert_eq!(t.status, ReviewStatus::TimedOut);
        let r = ex.drive(&t.run_id).await.unwrap();
        assert_eq!(r.outcome.as_deref(), Some("escalated"));
    }
}
