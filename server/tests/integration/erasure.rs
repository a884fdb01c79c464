//! Erasure end to end on a running server: one person's spans (sent by a stock SDK exporter),
//! their run in the journal and the connectors' files are gone from SQL, the API and the bytes of
//! every file; other people's data is untouched; the audit record names the erasure without the
//! value, and the chain verifies.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use serde_json::{Value, json};

use super::{admin, authed, get_json, sql, start_triage, start_with};

const REDACTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/redaction.yaml");
const WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");

const PERSON: &str = "u-4711";
const OTHER: &str = "u-4712";

/// Two spans about `user` over OTLP/HTTP protobuf: one with `user.id` (a pseudonym once stored),
/// one that only names the user in free text (stored as sent: no detector knows ids).
async fn send_spans_about(server: &custos_server::RunningServer, user: &str) {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", server.otlp_http))
        .with_headers([("authorization".into(), format!("Bearer {}", admin(server)))].into())
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("support-bot")
                .build(),
        )
        .build();
    let tracer = provider.tracer("custos-test");
    let mut a = tracer
        .span_builder("lookup customer")
        .with_attributes(vec![KeyValue::new("user.id", user.to_string())])
        .start(&tracer);
    a.end();
    let mut b = tracer
        .span_builder("write note")
        .with_attributes(vec![KeyValue::new(
            "ticket.note",
            format!("call back {user} tomorrow"),
        )])
        .start(&tracer);
    b.end();
    tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
        .await
        .unwrap();
}

/// Starts a support-triage run about `user` and drives it to its end (a reviewer approves when
/// the model is not confident).
async fn finished_run_about(server: &custos_server::RunningServer, user: &str) -> String {
    let api = server.api;
    let body = format!("Hello, customer {user} here, please refund me");
    let id = start_triage(server, &format!("e-{user}"), "refund", &body).await;
    let (_, ben) = super::access::token(server, "Custos::User::\"ben\"", None).await;
    for _ in 0..200 {
        let run = get_json(server, &format!("/api/runs/{id}")).await;
        match run["status"].as_str() {
            Some("finished") => return id,
            Some("waiting") if run["review"].is_string() => {
                let review = run["review"].as_str().unwrap();
                let res = super::bearer(&ben)
                    .post(format!("http://{api}/api/reviews/{review}/approve"))
                    .json(&json!({"reason": "fine"}))
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success() || res.status() == 409, "{res:?}");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} did not finish");
}

fn files_with(dir: &std::path::Path, needle: &str, skip: &[&str]) -> Vec<String> {
    super::privacy::every_file_as_text(dir)
        .into_iter()
        .filter(|(p, t)| t.contains(needle) && !skip.iter().any(|s| p.ends_with(s)))
        .map(|(p, _)| p)
        .collect()
}

async fn erase(server: &custos_server::RunningServer, token: &str, body: Value) -> (u16, Value) {
    let res = super::bearer(token)
        .post(format!("http://{}/api/erase", server.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_persons_spans_runs_and_connector_lines_are_erased_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[rules]\nredaction = {REDACTION:?}\n[executor]\nworkflows = {WORKFLOWS:?}\n"),
    )
    .await;
    send_spans_about(&server, PERSON).await;
    send_spans_about(&server, OTHER).await;
    server.store().flush().await.unwrap();
    send_spans_about(&server, PERSON).await; // still in the WAL and the memtable
    let run = finished_run_about(&server, PERSON).await;
    let other_run = finished_run_about(&server, OTHER).await;
    let key = custos_redact::PseudonymKey::open(dir.path()).unwrap();
    let hex = key.pseudonym(PERSON.as_bytes());
    let person_rows = format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['user.id'] = '[PERSON:{hex}]' \
         OR attributes['ticket.note'] LIKE '%{PERSON} %'"
    );
    assert_eq!(sql(&server, &person_rows).await[0]["n"], 4);
    assert!(
        !files_with(dir.path(), PERSON, &[]).is_empty(),
        "the raw value is on disk before (the journal, the WAL): else this test proves nothing"
    );

    // Only who the policies allow may erase; a bad selection changes nothing.
    let (_, sre) = super::access::token(&server, "Custos::User::\"sam\"", None).await;
    let (status, body) = erase(&server, &sre, json!({"person": PERSON})).await;
    assert_eq!(status, 403, "{body}");
    let admin = admin(&server);
    for (bad, says) in [
        (json!({}), "say what to erase"),
        (json!({"person": "u1"}), "at least 3 characters"),
        (json!({"where": "no_such = 1"}), "no_such"),
        (json!({"where": "x", "person": PERSON}), "not both"),
        (
            json!({"person": PERSON, "everything": true}),
            "unknown field",
        ),
    ] {
        let (status, body) = erase(&server, &admin, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{bad}: {body}"
        );
    }
    assert_eq!(sql(&server, &person_rows).await[0]["n"], 4);

    let (status, done) = erase(&server, &admin, json!({"person": PERSON, "now": true})).await;
    assert_eq!(status, 200, "{done}");
    assert!(done["spans"].as_u64().unwrap() >= 4, "{done}");
    assert!(done["purge_due"].is_null(), "{done}");
    let runs: Vec<&str> = done["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(runs, vec![run.as_str()], "{done}");
    assert_eq!(done["recorded_as"], format!("person = '[PERSON:{hex}]'"));

    // Gone from SQL and the API; the other customer's data is whole.
    assert_eq!(sql(&server, &person_rows).await[0]["n"], 0);
    let other_hex = key.pseudonym(OTHER.as_bytes());
    let other_rows = format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['user.id'] = '[PERSON:{other_hex}]' \
         OR attributes['ticket.note'] LIKE '%{OTHER} %'"
    );
    assert_eq!(sql(&server, &other_rows).await[0]["n"], 2);
    let erased: Value = get_json(&server, &format!("/api/runs/{run}")).await;
    assert!(
        erased["input"].is_null() && erased["erased_ms"].is_i64(),
        "{erased}"
    );
    assert_eq!(erased["status"], "finished", "how the run went stays");
    let kept: Value = get_json(&server, &format!("/api/runs/{other_run}")).await;
    assert!(
        kept["input"]["body"].as_str().unwrap().contains(OTHER),
        "{kept}"
    );

    // Gone from the bytes of every file: WAL, Parquet, Delta log, journal, connectors, audit.
    assert_eq!(files_with(dir.path(), PERSON, &[]), Vec::<String>::new());
    // The pseudonym is only in the erasure's own audit record.
    assert_eq!(
        files_with(dir.path(), &hex, &["audit.jsonl"]),
        Vec::<String>::new()
    );
    assert!(!files_with(dir.path(), OTHER, &[]).is_empty());

    // Recorded with the caller, and the chain verifies.
    let seq = done["audit_seq"].as_u64().unwrap();
    let record: Value = get_json(&server, &format!("/api/audit/records/{seq}")).await;
    assert_eq!(record["kind"], "erase", "{record}");
    assert_eq!(record["principal"], "Custos::User::\"admin\"");
    assert_eq!(record["context"]["runs"][0], run.as_str());
    let verified = authed(&server)
        .get(format!("http://{}/api/audit/verify", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200, "{}", verified.text().await.unwrap());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_where_erasure_keeps_no_value_in_its_record_and_waits_out_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[store]\nerase_grace_secs = 3600\n").await;
    send_spans_about(&server, PERSON).await;
    send_spans_about(&server, OTHER).await;
    server.store().flush().await.unwrap();
    let files = server.store().data_files().await;
    let cond = format!("attributes['ticket.note'] = 'call back {PERSON} tomorrow'");
    let (status, done) = erase(&server, &admin(&server), json!({"where": cond})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["spans"], 1, "{done}");
    assert!(done["purge_due"].is_string(), "{done}");
    let recorded = done["recorded_as"].as_str().unwrap();
    assert!(
        recorded.starts_with("attributes['ticket.note'] = '[VALUE:") && !recorded.contains(PERSON),
        "{recorded}"
    );
    let log = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    assert!(log.contains(recorded) && !log.contains(PERSON), "{log}");
    // Readers pinned to the old version may still be reading: the old files stay for the grace.
    assert!(files.iter().all(|f| f.exists()));
    let rows = sql(
        &server,
        &format!("SELECT count(*) AS n FROM spans WHERE {cond}"),
    )
    .await;
    assert_eq!(rows[0]["n"], 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_lose_their_data_after_the_journal_retention() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[executor]\nworkflows = {WORKFLOWS:?}\njournal_retention = \"2s\"\n"),
    )
    .await;
    let run = finished_run_about(&server, PERSON).await;
    let journal = dir.path().join("executor/journal.redb");
    assert!(
        String::from_utf8_lossy(&std::fs::read(&journal).unwrap()).contains(PERSON),
        "the journal holds the input as sent until the retention passes"
    );
    let mut cleared = Value::Null;
    for _ in 0..100 {
        cleared = get_json(&server, &format!("/api/runs/{run}")).await;
        if cleared["erased_ms"].is_i64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared["erased_ms"].is_i64(), "{cleared}");
    assert!(cleared["input"].is_null(), "{cleared}");
    assert!(cleared["outcome"].as_str().is_some(), "{cleared}");
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&journal).unwrap()).contains(PERSON),
        "no old page keeps the input"
    );
    let connectors = super::privacy::every_file_as_text(&dir.path().join("connectors"));
    assert!(
        connectors.iter().all(|(_, t)| !t.contains(PERSON)),
        "{connectors:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    let record = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "retention")
        .expect("the retention pass is recorded");
    assert_eq!(record["principal"], custos_server::SERVER_PRINCIPAL);
    assert_eq!(record["context"]["runs"][0], run.as_str());
    server.shutdown().await.unwrap();
}
