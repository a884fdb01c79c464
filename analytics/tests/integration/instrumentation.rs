//! The views are right for instrumentation custos did not choose: run ids on the root span only
//! (children carry nothing, not even the workflow), human reviews on spans of their own (child or
//! sibling of the decision, named by `automation.review.of` or not), next to the forms custos'
//! own workload uses (ids on every span, the review on the decision's span). The expected
//! figures are computed from the workload's definition, not from the store; the workload is read
//! with the spans in the memtable, with the children flushed before their roots arrived, after a
//! restart, and after maintenance folded the run ids into the files.

use std::collections::BTreeMap;

use custos_analytics::{Analytics, PriceTable, QueryOptions};
use custos_store::{Store, StoreOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::{render, repo};

const WORKFLOW: &str = "claims-triage";
/// Root-only runs, runs reviewed on the decision's span, runs with ids on every span.
const ROOT_ONLY: u32 = 60;
const ON_DECISION: u32 = 10;
const EVERY_SPAN: u32 = 5;
const T0: u64 = 1_764_547_200_000_000_000; // 2025-12-01T00:00Z

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

fn trace_id(run: u32) -> Vec<u8> {
    (0x00c0_ffee_0000_0000_0000_0000_0000_0000u128 + u128::from(run) + 1)
        .to_be_bytes()
        .to_vec()
}
fn span_id(run: u32, k: u32) -> Vec<u8> {
    ((u64::from(run) << 8) | u64::from(k))
        .to_be_bytes()
        .to_vec()
}
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One run of the workload, and what it should count for.
struct Run {
    id: String,
    confidence: f64,
    reviewed: bool,
    overridden: bool,
    model: &'static str,
}

fn run(i: u32) -> Run {
    let confidence = f64::from((i * 37) % 100) / 100.0;
    let reviewed = confidence < 0.6;
    Run {
        id: if i >= ROOT_ONLY + ON_DECISION {
            format!("explicit-{i}")
        } else {
            format!("claim-{i}")
        },
        confidence,
        reviewed,
        overridden: reviewed && i.is_multiple_of(2),
        model: if i.is_multiple_of(2) {
            "m-small"
        } else {
            "m-large"
        },
    }
}

fn span(i: u32, k: u32, parent: Option<u32>, name: &str, at_ms: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace_id(i),
        span_id: span_id(i, k),
        parent_span_id: parent.map(|p| span_id(i, p)).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: T0 + u64::from(i) * 60_000_000_000 + at_ms * 1_000_000,
        end_time_unix_nano: T0 + u64::from(i) * 60_000_000_000 + (at_ms + 100) * 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

/// Run `i`'s children and its root, as the user's SDK sends them.
fn spans(i: u32) -> (Vec<Span>, Span) {
    let r = run(i);
    let every = i >= ROOT_ONLY + ON_DECISION;
    let own = |mut a: Vec<KeyValue>| {
        if every {
            a.push(s("automation.run_id", r.id.clone()));
            a.push(s("automation.workflow", WORKFLOW));
        }
        a
    };
    let mut decision = vec![
        s("automation.step", "classify"),
        s("automation.step.kind", "model"),
        s("gen_ai.request.model", r.model),
        kv(
            "automation.decision.confidence",
            Value::DoubleValue(r.confidence),
        ),
        s("automation.decision.outcome", "approve"),
    ];
    let review = vec![
        s("automation.step", "review"),
        s("automation.step.kind", "human"),
        kv("automation.human.override", Value::BoolValue(r.overridden)),
        s("automation.human.reviewer", "alice"),
        kv(
            "automation.human.review_ms",
            Value::IntValue(1000 + i64::from(i)),
        ),
    ];
    let on_decision = (ROOT_ONLY..ROOT_ONLY + ON_DECISION).contains(&i) || every;
    if r.reviewed && on_decision {
        decision.extend(review.iter().skip(2).cloned());
    }
    let mut children = vec![
        span(i, 2, Some(1), "classify", 10, own(decision)),
        span(
            i,
            3,
            Some(1),
            "post",
            200,
            own(vec![
                s("automation.step", "post"),
                s("automation.step.kind", "connector"),
            ]),
        ),
    ];
    if r.reviewed && !on_decision {
        // A child of the decision, a sibling that follows it, a sibling that names it.
        let (parent, mut attrs) = (if i.is_multiple_of(3) { 2 } else { 1 }, review);
        if i % 3 == 2 {
            attrs.push(s("automation.review.of", hex(&span_id(i, 2))));
        }
        children.push(span(i, 4, Some(parent), "review", 400, attrs));
    }
    let root = span(
        i,
        1,
        None,
        "run",
        0,
        vec![
            s("automation.workflow", WORKFLOW),
            s("automation.run_id", r.id.clone()),
            s("automation.outcome", "success"),
        ],
    );
    (children, root)
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "claims")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn append(store: &Store, spans: Vec<Span>) {
    let n = custos_collector::normalize(&request(spans), None).unwrap();
    assert_eq!(n.rejected, 0);
    store.append(n.batch.unwrap()).await.unwrap();
}

fn options(dir: &std::path::Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = std::time::Duration::from_secs(3600);
    o.maintenance_interval = std::time::Duration::from_secs(3600);
    o
}

async fn analytics(store: Store) -> Analytics {
    let prices = PriceTable::load(&repo().join("rules/prices.yaml")).unwrap();
    Analytics::with_prices(store, QueryOptions::default(), prices)
        .await
        .unwrap()
}

async fn rows(a: &Analytics, sql: &str) -> Vec<String> {
    render(&a.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")))
}

/// Every figure the views should give for the workload, checked at one point of its life.
async fn check(a: &Analytics, when: &str) {
    let total = ROOT_ONLY + ON_DECISION + EVERY_SPAN;
    let runs: Vec<Run> = (0..total).map(run).collect();
    let mut want_runs: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    want_runs.sort();
    let got = rows(a, "SELECT DISTINCT run_id FROM steps ORDER BY 1").await;
    assert_eq!(got, want_runs, "{when}: the run ids of all spans");
    let got = rows(
        a,
        "SELECT count(*), count(*) FILTER (WHERE outcome = 'success'), \
         count(DISTINCT trace_id) FROM runs WHERE workflow = 'claims-triage'",
    )
    .await;
    assert_eq!(got, [format!("{total}\t{total}\t{total}")], "{when}: runs");
    let got = rows(
        a,
        "SELECT count(*) FROM steps WHERE workflow IS DISTINCT FROM 'claims-triage'",
    )
    .await;
    assert_eq!(
        got,
        ["0"],
        "{when}: every span names the workflow of its run"
    );
    // Reviews and overrides per model, from the definition.
    let mut want: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
    for r in &runs {
        let e = want.entry(r.model).or_default();
        e.0 += 1;
        e.1 += u32::from(r.reviewed);
        e.2 += u32::from(r.overridden);
    }
    let want: Vec<String> = want
        .iter()
        .map(|(m, (d, rv, o))| format!("{WORKFLOW}\t{m}\t{d}\t{rv}\t{o}"))
        .collect();
    let got = rows(
        a,
        "SELECT workflow, model, count(*), count(*) FILTER (WHERE human_reviewed), \
         count(*) FILTER (WHERE human_override) FROM decisions GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        got, want,
        "{when}: decisions reviewed and overridden per model"
    );
    // Each review counts for its decision once, with its reviewer and time.
    let reviewed = runs.iter().filter(|r| r.reviewed).count();
    let got = rows(
        a,
        "SELECT count(*), count(DISTINCT run_id), min(human_reviewer), \
         count(review_ms) FROM decisions WHERE human_reviewed",
    )
    .await;
    assert_eq!(
        got,
        [format!("{reviewed}\t{reviewed}\talice\t{reviewed}")],
        "{when}"
    );
    let got = rows(a, "SELECT sum(human_reviews), sum(overrides) FROM runs").await;
    let overridden = runs.iter().filter(|r| r.overridden).count();
    assert_eq!(
        got,
        [format!("{reviewed}\t{overridden}")],
        "{when}: runs' reviews"
    );
}

/// Appends the workload with the children of every run first, in requests of their own, their
/// roots later. The first half's children reach the files before their roots arrive; the second
/// half's wait in the memtable.
pub(crate) async fn children_first(store: &Store) {
    let total = ROOT_ONLY + ON_DECISION + EVERY_SPAN;
    let half = total / 2;
    let mut roots = Vec::new();
    for i in 0..total {
        let (children, root) = spans(i);
        append(store, children).await;
        roots.push(root);
        if i + 1 == half {
            store.flush().await.unwrap();
        }
    }
    let second = roots.split_off(half as usize);
    append(store, roots).await;
    append(store, second).await;
}

#[tokio::test]
async fn runs_and_reviews_are_right_for_any_instrumentation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    children_first(&store).await;
    let a = analytics(store.clone()).await;
    check(&a, "roots after their children were flushed").await;
    assert!(
        store.snapshot().aliases.is_some(),
        "children in the files need aliases"
    );
    store.flush().await.unwrap();
    check(&a, "after the roots' flush").await;
    drop(a);
    store.shutdown().await.unwrap();

    let store = Store::open(options(dir.path())).await.unwrap();
    let a = analytics(store.clone()).await;
    check(&a, "after a restart").await;
    store.maintain().await.unwrap();
    assert!(
        store.snapshot().aliases.is_none(),
        "maintenance folds the aliases into the files"
    );
    check(&a, "after the fold").await;
    drop(a);
    store.shutdown().await.unwrap();

    // A reader of the directory sees the same.
    let ro = Store::open_read_only(dir.path()).await.unwrap();
    check(&analytics(ro).await, "read-only").await;
}

#[tokio::test]
async fn the_same_runs_read_the_same_all_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let total = ROOT_ONLY + ON_DECISION + EVERY_SPAN;
    let mut all = Vec::new();
    for i in 0..total {
        let (children, root) = spans(i);
        all.extend(children);
        all.push(root);
    }
    append(&store, all).await;
    let a = analytics(store.clone()).await;
    check(&a, "in the memtable").await;
    assert!(store.snapshot().aliases.is_none());
    store.flush().await.unwrap();
    check(&a, "flushed").await;
}
