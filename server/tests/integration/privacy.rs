//! Personal data and secrets sent by stock SDK exporters never reach the disk: what SQL returns
//! is masked or pseudonymized, and no file under the data directory (WAL, Parquet, Delta log,
//! audit log) holds a planted value, while look-alikes stay as they were.

use std::path::Path;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status as OtelStatus, Tracer as _, TracerProvider as _};

use super::{admin, sql, start_with};

const REDACTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/redaction.yaml");

const EMAIL: &str = "ana.lopez@example.com";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89370400440532013000";
const PHONE: &str = "+49 30 9876543";
const SSN: &str = "219-09-9999";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const OPENAI: &str = "sk-proj-Zx8Qp2Lm9Rt4Vw7Yb1Nc3Df6";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.c2lnbmF0dXJlLXZhbHVlLWhlcmU";
const PASSWORD: &str = "Tr0ub4dor-and-3";
const BEARER: &str = "q9Vx3Lr8Tz2Kp5Wm7Ys4";
/// Look-alikes that must stay: an order number failing Luhn, a date, an amount.
const ORDER: &str = "order 4111111111111112 of 2026-12-01 for EUR 1 234 567.89";

/// The body of an admin's `GET path` on the API.
async fn api_get(server: &custos_server::RunningServer, path: &str) -> String {
    super::authed(server)
        .get(format!("http://{}{path}", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every file under `dir`, as text: Parquet files decoded (their pages are compressed), others
/// as their bytes.
pub(super) fn every_file_as_text(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                        .unwrap()
                        .build()
                        .unwrap();
                let batches: Vec<_> = reader.map(Result::unwrap).collect();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.push((p.display().to_string(), text));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_values_are_redacted_before_any_byte_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &format!("[rules]\nredaction = {REDACTION:?}\n")).await;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    let token = format!("Bearer {}", admin(&server));
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", token.parse().unwrap());
    let grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", server.otlp_grpc))
        .with_metadata(metadata)
        .build()
        .unwrap();
    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", server.otlp_http))
        .with_headers([("authorization".to_string(), token)].into())
        .build()
        .unwrap();
    let body =
        format!("Customer {EMAIL} ({PHONE}) pays {IBAN} with card {CARD}; ssn {SSN}; {ORDER}");
    let tool = format!(
        "aws {AWS_KEY} openai {OPENAI} jwt {JWT} password={PASSWORD} Authorization: Bearer {BEARER}"
    );
    for (transport, exporter) in [("grpc", grpc), ("http", http)] {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(format!("pii-{transport}"))
                    .with_attribute(KeyValue::new("host.owner", EMAIL))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("custos-test");
        let mut span = tracer
            .span_builder(format!("reply to {EMAIL}"))
            .with_attributes(vec![
                KeyValue::new("automation.workflow", "support-triage"),
                KeyValue::new("automation.run_id", format!("run-{transport}")),
                KeyValue::new("user.email", EMAIL),
                KeyValue::new("email.body", body.clone()),
                KeyValue::new("tool.args", tool.clone()),
                KeyValue::new(
                    "http.request.header.authorization",
                    format!("Bearer {BEARER}"),
                ),
                KeyValue::new("order.ref", ORDER),
            ])
            .start(&tracer);
        span.add_event("mail sent", vec![KeyValue::new("to", EMAIL)]);
        span.set_status(OtelStatus::error(format!("card {CARD} declined")));
        span.end();
        tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
            .await
            .unwrap();
    }
    let grpc_or_http = "service_name IN ('pii-grpc', 'pii-http')";
    let rows = sql(
        &server,
        &format!(
            "SELECT service_name, name, status_message, attributes['user.email'] AS person, \
             attributes['email.body'] AS body, attributes['tool.args'] AS tool, \
             attributes['order.ref'] AS order_ref, \
             attributes['http.request.header.authorization'] AS auth, \
             resource_attributes['host.owner'] AS owner, events[1]['attributes']['to'] AS to \
             FROM spans WHERE {grpc_or_http} ORDER BY service_name"
        ),
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The email is one pseudonym everywhere, made with the data directory's key.
    let key = custos_redact::PseudonymKey::open(dir.path()).unwrap();
    let email = format!("[EMAIL:{}]", key.pseudonym(EMAIL.as_bytes()));
    let person = format!("[PERSON:{}]", key.pseudonym(EMAIL.as_bytes()));
    for r in &rows {
        assert_eq!(r["name"], format!("reply to {email}"), "{r}");
        assert_eq!(r["status_message"], "card [CARD] declined");
        assert_eq!(r["person"], person.as_str());
        assert_eq!(
            r["body"],
            format!("Customer {email} ([PHONE]) pays [IBAN] with card [CARD]; ssn [SSN]; {ORDER}")
        );
        assert_eq!(
            r["tool"],
            "aws [AWS_ACCESS_KEY] openai [API_KEY] jwt [JWT] password=[PASSWORD] Authorization: Bearer [BEARER_TOKEN]"
        );
        assert_eq!(r["order_ref"], ORDER, "look-alikes stay");
        assert!(r["auth"].is_null(), "the header is dropped: {r}");
        assert_eq!(r["owner"], email.as_str());
        assert_eq!(r["to"], email.as_str());
    }
    // Counted by rule and action, never logged.
    let metrics = api_get(&server, "/metrics").await;
    assert!(
        metrics.contains("custos_redactions_total{rule=\"email\",action=\"hash\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("custos_redactions_total{rule=\"auth-headers\",action=\"drop\"} 2"),
        "{metrics}"
    );

    // Nothing planted is in any file: WAL before the flush, Parquet and the Delta log after.
    let planted = [
        EMAIL, CARD, IBAN, PHONE, SSN, AWS_KEY, OPENAI, JWT, PASSWORD, BEARER,
    ];
    let check = |when: &str| {
        let files = every_file_as_text(dir.path());
        assert!(files.len() > 3, "{when}: {files:?}");
        for (path, text) in &files {
            for p in planted {
                assert!(!text.contains(p), "{when}: `{p}` is in {path}");
            }
        }
    };
    check("before the flush");
    assert!(server.store().flush().await.unwrap() > 0);
    let files = every_file_as_text(dir.path());
    assert!(
        files
            .iter()
            .any(|(p, t)| p.ends_with(".parquet") && t.contains("[CARD]")),
        "the flush wrote the redacted spans"
    );
    check("after the flush");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_contexts_and_served_run_inputs_are_redacted_too() {
    let dir = tempfile::tempdir().unwrap();
    let workflows = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");
    let server = start_with(
        dir.path(),
        &format!("[rules]\nredaction = {REDACTION:?}\n[executor]\nworkflows = {workflows:?}\n"),
    )
    .await;
    let api = server.api;
    let (_, exec) = super::access::token(&server, "Custos::Service::\"executor\"", None).await;
    // A caller's context is recorded as the policy read it, minus what the rules take out.
    let res = super::bearer(&exec)
        .post(format!("http://{api}/api/authorize"))
        .json(&serde_json::json!({
            "principal": "Custos::Service::\"executor\"",
            "action": "execute",
            "resource": "Custos::Connector::\"erp\"",
            "context": {
                "workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
                "confidence": "0.99", "amount_usd": "25.00", "human_approved": false,
                "note": format!("pay {IBAN} for {EMAIL}"),
            },
        }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["audit"]["seq"].is_u64(), "{status} {body}");
    // A run's input is journaled as sent (it needs it to resume) and served redacted.
    let started = super::authed(&server)
        .post(format!("http://{api}/api/runs"))
        .json(&serde_json::json!({
            "workflow": "support-triage",
            "input": {"email_id": "e-1", "subject": "refund", "body": format!("I am {EMAIL}, card {CARD}")},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let run: serde_json::Value = started.json().await.unwrap();
    let id = run["run_id"].as_str().unwrap();
    let got = api_get(&server, &format!("/api/runs/{id}")).await;
    assert!(got.contains("[CARD]") && got.contains("[EMAIL:"), "{got}");
    assert!(!got.contains(EMAIL) && !got.contains(CARD), "{got}");
    let records = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    assert!(
        records.contains("[IBAN]"),
        "the context is recorded: {records}"
    );
    for p in [EMAIL, IBAN, CARD] {
        assert!(!records.contains(p), "`{p}` is in the audit log");
    }
    let verified = super::authed(&server)
        .get(format!("http://{api}/api/audit/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200, "{}", verified.text().await.unwrap());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_says_what_encrypts_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[store]\nencryption_at_rest = \"test-volume-kms\"\n",
    )
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&api_get(&server, "/api/status").await).unwrap();
    assert_eq!(status["encryption_at_rest"], "declared: test-volume-kms");
    server.shutdown().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let server = start_with(other.path(), "").await;
    let status: serde_json::Value =
        serde_json::from_str(&api_get(&server, "/api/status").await).unwrap();
    let found = status["encryption_at_rest"].as_str().unwrap();
    assert!(
        found == "none detected" || found.starts_with("dm-crypt ("),
        "{found}"
    );
    server.shutdown().await.unwrap();
    let config: custos_server::Config =
        toml::from_str("[store]\nencryption_at_rest = \" \"\n").unwrap();
    let e = config.validate().unwrap_err().to_string();
    assert!(
        e.contains("`store.encryption_at_rest` must say what encrypts"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_fields_marked_sensitive_in_the_schema_are_recorded_as_pseudonyms() {
    let policies = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/policy");
    for e in std::fs::read_dir(shipped).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, policies.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let schema = std::fs::read_to_string(policies.path().join("schema.cedarschema")).unwrap();
    let marked = schema.replace(
        "      human_approved: Bool,\n    },",
        "      human_approved: Bool,\n      @sensitive(\"PERSON\") customer?: String,\n      \
         requester?: { @sensitive email: String, team: String },\n    },",
    );
    assert_ne!(marked, schema);
    std::fs::write(policies.path().join("schema.cedarschema"), marked).unwrap();
    std::fs::write(
        policies.path().join("blocked.cedar"),
        "@id(\"blocked-customer\")\n@advice(\"stop: this customer's payments need a person\")\n\
         forbid (principal, action == Custos::Action::\"execute\", resource)\n\
         when { context has customer && context.customer == \"u-blocked\" };\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[rules]\npolicies = {:?}\n", policies.path()),
    )
    .await;
    let (_, exec) = super::access::token(&server, "Custos::Service::\"executor\"", None).await;
    let res = super::bearer(&exec)
        .post(format!("http://{}/api/authorize", server.api))
        .json(&serde_json::json!({
            "principal": "Custos::Service::\"executor\"",
            "action": "Custos::Action::\"execute\"",
            "resource": "Custos::Connector::\"erp\"",
            "context": {
                "workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
                "confidence": "0.99", "amount_usd": "25.00", "human_approved": false,
                "customer": "u-blocked",
                "requester": {"email": EMAIL, "team": "finance"},
            },
        }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    // The policy read the value as sent...
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(
        body["determining_policies"][0]["id"], "blocked-customer",
        "{body}"
    );
    // ...and the record keeps its pseudonym.
    let key = custos_redact::PseudonymKey::open(dir.path()).unwrap();
    let seq = body["audit"]["seq"].as_u64().unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&api_get(&server, &format!("/api/audit/records/{seq}")).await)
            .unwrap();
    let context = &record["context"];
    assert_eq!(
        context["customer"],
        format!("[PERSON:{}]", key.pseudonym(b"u-blocked")),
        "{record}"
    );
    assert_eq!(
        context["requester"]["email"],
        format!("[SENSITIVE:{}]", key.pseudonym(EMAIL.as_bytes()))
    );
    assert_eq!(context["requester"]["team"], "finance");
    assert_eq!(context["amount_usd"], "25.00", "unmarked fields stay");
    let log = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    assert!(!log.contains("u-blocked") && !log.contains(EMAIL), "{log}");
    let verified = super::authed(&server)
        .get(format!("http://{}/api/audit/verify", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    server.shutdown().await.unwrap();
}
