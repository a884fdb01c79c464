//! End-to-end tests: a real server on ephemeral ports, real OTLP clients, answers read back through
//! SQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use custos_analytics::{Analytics, QueryOptions};
use custos_server::{Config, RunningServer};
use custos_store::{Store, StoreOptions};
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanKind, Status as OtelStatus, Tracer as _, TracerProvider as _,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as PKeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::Value;

#[path = "integration/access.rs"]
mod access;
#[path = "integration/erasure.rs"]
mod erasure;
#[path = "integration/hardening.rs"]
mod hardening;
#[path = "integration/openapi.rs"]
mod openapi;
#[path = "integration/parsers.rs"]
mod parsers;
#[path = "integration/privacy.rs"]
mod privacy;
#[path = "integration/reload.rs"]
mod reload;
#[path = "integration/sources.rs"]
mod sources;
#[path = "integration/tls.rs"]
mod tls;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/otlp");

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/policy");

/// A server on `dir` with the shipped policies (unless `extra` names its own) and `extra`.
async fn start_with(dir: &Path, extra: &str) -> RunningServer {
    // Spans from any time are accepted unless a test says otherwise: the OTLP specification's
    // example (fixtures/otlp/spec-example.json) is from 2018. hardening.rs tests the window.
    let extra = if extra.contains("max_span_age_days") {
        extra.to_string()
    } else if extra.contains("[receiver]") {
        extra.replace("[receiver]\n", "[receiver]\nmax_span_age_days = 36500\n")
    } else {
        format!("{extra}\n[receiver]\nmax_span_age_days = 36500\n")
    };
    let extra = extra.as_str();
    let extra = if extra.contains("policies") {
        extra.to_string()
    } else if extra.contains("[rules]") {
        extra.replace("[rules]\n", &format!("[rules]\npolicies = {POLICIES:?}\n"))
    } else {
        format!("{extra}\n[rules]\npolicies = {POLICIES:?}\n")
    };
    // The listeners' ports are ephemeral; a test's own `[listen]` settings join them.
    let listen = "[listen]\notlp_grpc = \"127.0.0.1:0\"\notlp_http = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n";
    let (base, extra) = if extra.contains("[listen]\n") {
        ("", extra.replace("[listen]\n", listen))
    } else {
        (listen, extra)
    };
    let text = format!("data_dir = {:?}\n{base}{extra}", dir.display().to_string());
    let config: Config = toml::from_str(&text).unwrap();
    custos_server::start(config.validate().unwrap())
        .await
        .unwrap()
}

async fn start(dir: &Path) -> RunningServer {
    start_with(dir, "").await
}

/// The admin token the server wrote at start.
fn admin(server: &RunningServer) -> String {
    // A restarted server writes none: the first start's is still valid.
    let path = server.admin_token.clone().unwrap_or_else(|| {
        server
            .store()
            .options()
            .data_dir
            .join("auth")
            .join(custos_server::ADMIN_TOKEN_FILE)
    });
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// An HTTP client sending `token`.
fn bearer(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// An HTTP client with the admin's token.
fn authed(server: &RunningServer) -> reqwest::Client {
    bearer(&admin(server))
}

/// Adds `authorization` to every gRPC call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Grpc = TraceServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// An OTLP/gRPC client sending `token`.
async fn grpc_as(server: &RunningServer, token: &str) -> Grpc {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.otlp_grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let value = format!("Bearer {token}").parse().unwrap();
    TraceServiceClient::with_interceptor(channel, Bearer(value))
}

/// An OTLP/gRPC client with the admin's token.
async fn grpc(server: &RunningServer) -> Grpc {
    grpc_as(server, &admin(server)).await
}

/// An admin's `GET path` on the API, as JSON.
async fn get_json(server: &RunningServer, path: &str) -> Value {
    authed(server)
        .get(format!("http://{}{path}", server.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Starts a run of the reference `support-triage` workflow as the admin; returns its id.
async fn start_triage(server: &RunningServer, email_id: &str, subject: &str, body: &str) -> String {
    let started: Value = authed(server)
        .post(format!("http://{}/api/runs", server.api))
        .json(&serde_json::json!({
            "workflow": "support-triage",
            "input": {"email_id": email_id, "subject": subject, "body": body},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    started["run_id"].as_str().unwrap().to_string()
}

async fn sql(server: &RunningServer, query: &str) -> Vec<Value> {
    let res = authed(server)
        .post(format!("http://{}/api/sql", server.api))
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap()
}

async fn post(
    server: &RunningServer,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = authed(server)
        .post(format!("http://{}/v1/traces", server.otlp_http))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn kv(key: &str, v: any_value::Value) -> PKeyValue {
    PKeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("svc".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(trace: u8, id: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 1,
        start_time_unix_nano: 1_763_700_000_000_000_000 + u64::from(id),
        end_time_unix_nano: 1_763_700_000_500_000_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_spec_example_round_trips_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let res = post(
        &server,
        "application/json",
        None,
        fixture("spec-example.json"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    assert!(body.as_object().is_some_and(|o| o.is_empty()), "{body}");

    let rows = sql(
        &server,
        "SELECT trace_id, span_id, parent_span_id, name, kind, service_name, trace_state, flags, \
         start_time_unix_nano, end_time_unix_nano, duration_ms, status_code, status_message, \
         attributes['my.span.attr'] AS a, attributes['retry.count'] AS rc, attributes['ratio'] AS ratio, \
         attributes['cached'] AS cached, attributes['tags'] AS tags, attributes['blob'] AS blob, \
         resource_attributes['host.cores'] AS cores, scope_name, scope_version, \
         events[1]['name'] AS ev, events[1]['time_unix_nano'] AS ev_t, events[1]['attributes']['exception.message'] AS ev_msg, \
         links[1]['trace_id'] AS l_trace, links[1]['span_id'] AS l_span, links[1]['trace_state'] AS l_state, \
         links[1]['attributes']['link.kind'] AS l_kind, dropped_attributes_count, run_id, date, \
         CAST(start_time AS VARCHAR) AS st FROM spans",
    )
    .await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(r["span_id"], "eee19b7ec3c1b174");
    assert_eq!(r["parent_span_id"], "eee19b7ec3c1b173");
    assert_eq!(r["name"], "I'm a server span");
    assert_eq!(r["kind"], "server");
    assert_eq!(r["service_name"], "my.service");
    assert_eq!(r["trace_state"], "vendor=value");
    assert_eq!(r["flags"], 1);
    assert_eq!(r["start_time_unix_nano"], 1_544_712_660_000_000_000i64);
    assert_eq!(r["end_time_unix_nano"], 1_544_712_661_000_000_000i64);
    assert_eq!(r["duration_ms"], 1000.0);
    assert_eq!(r["status_code"], "error");
    assert_eq!(r["status_message"], "something failed");
    assert_eq!(r["a"], "some value");
    assert_eq!(r["rc"], "3");
    assert_eq!(r["ratio"], "0.25");
    assert_eq!(r["cached"], "true");
    assert_eq!(
        r["tags"],
        r#"{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}}"#
    );
    assert_eq!(r["blob"], "aGVsbG8=");
    assert_eq!(r["cores"], "8");
    assert_eq!(r["scope_name"], "my.library");
    assert_eq!(r["scope_version"], "1.0.0");
    assert_eq!(r["ev"], "exception");
    assert_eq!(r["ev_t"], 1_544_712_660_500_000_000i64);
    assert_eq!(r["ev_msg"], "boom");
    assert_eq!(r["l_trace"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(r["l_span"], "b7ad6b7169203331");
    assert_eq!(r["l_state"], "k=v");
    assert_eq!(r["l_kind"], "follows");
    assert_eq!(r["dropped_attributes_count"], 1);
    assert_eq!(r["run_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(r["date"], "2018-12-13");
    assert!(
        r["st"].as_str().unwrap().starts_with("2018-12-13T14:51:00"),
        "{}",
        r["st"]
    );

    // The same answer after the spans moved from the memtable into Parquet.
    server.store().flush().await.unwrap();
    let again = sql(
        &server,
        "SELECT trace_id, attributes['my.span.attr'] AS a, events[1]['name'] AS ev FROM spans",
    )
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["a"], "some value");
    assert_eq!(again[0]["ev"], "exception");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_attributes_are_lifted_into_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let res = post(
        &server,
        "application/json; charset=utf-8",
        None,
        fixture("automation-run.json"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let rows = sql(
        &server,
        "SELECT step, workflow, run_id, step_kind, model, provider, model_version, prompt_version, \
         input_tokens, output_tokens, cache_read_tokens, cost_usd, confidence, decision, \
         human_override, human_reviewer, review_ms, outcome, service_name, kind, status_code \
         FROM spans ORDER BY start_time",
    )
    .await;
    assert_eq!(rows.len(), 3);
    let (root, classify, review) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(root["outcome"], "success");
    assert_eq!(root["workflow"], "invoice-posting");
    assert_eq!(root["run_id"], "run-42");
    assert!(root["step"].is_null());
    assert_eq!(classify["step"], "classify");
    assert_eq!(classify["step_kind"], "model");
    assert_eq!(classify["model"], "gpt-4o-2024-08-06");
    assert_eq!(classify["provider"], "openai");
    assert_eq!(classify["model_version"], "m-2026-10");
    assert_eq!(classify["prompt_version"], "p-7");
    assert_eq!(classify["input_tokens"], 1200);
    assert_eq!(classify["output_tokens"], 80);
    assert_eq!(classify["cache_read_tokens"], 1000);
    assert_eq!(classify["cost_usd"], 0.0042);
    assert_eq!(classify["confidence"], 0.62);
    assert_eq!(classify["decision"], "approve");
    assert_eq!(classify["kind"], "client");
    assert_eq!(classify["status_code"], "ok");
    assert_eq!(classify["workflow"], "invoice-posting");
    assert_eq!(review["human_override"], true);
    assert_eq!(review["human_reviewer"], "ana");
    assert_eq!(review["review_ms"], 1100);
    // A string where a number belongs stays raw and leaves the column null.
    assert!(review["input_tokens"].is_null());
    // An integer fills a float column.
    assert_eq!(review["cost_usd"], 2.0);
    assert_eq!(review["service_name"], "invoice-bot");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_exporters_over_grpc_and_http_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};

    use opentelemetry_otlp::WithHttpConfig as _;
    let token = format!("Bearer {}", admin(&server));
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", token.parse().unwrap());
    let grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .with_endpoint(format!("http://{}", server.otlp_grpc))
        .with_metadata(metadata)
        .build()
        .unwrap();
    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("http://{}/v1/traces", server.otlp_http))
        .with_headers([("authorization".to_string(), token.clone())].into())
        .build()
        .unwrap();
    for (transport, exporter) in [("grpc", grpc), ("http", http)] {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(format!("sdk-{transport}"))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("custos-test");
        for i in 0..50 {
            let mut span = tracer
                .span_builder(format!("step-{i}"))
                .with_kind(SpanKind::Client)
                .with_attributes(vec![
                    KeyValue::new("automation.workflow", "triage"),
                    KeyValue::new("automation.step", format!("s{i}")),
                    KeyValue::new("gen_ai.usage.input_tokens", i as i64),
                    KeyValue::new("automation.decision.confidence", 0.5 + f64::from(i) / 100.0),
                ])
                .start(&tracer);
            span.add_event("checkpoint", vec![KeyValue::new("n", i as i64)]);
            span.set_status(OtelStatus::Ok);
            span.end();
        }
        tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
            .await
            .unwrap();
        let rows = sql(
            &server,
            &format!(
                "SELECT count(*) AS n, sum(input_tokens) AS tokens, min(confidence) AS lo, \
                 max(confidence) AS hi, count(DISTINCT span_id) AS ids, min(status_code) AS st, \
                 min(kind) AS kind, min(events[1]['attributes']['n']) AS ev \
                 FROM spans WHERE service_name = 'sdk-{transport}' AND workflow = 'triage'"
            ),
        )
        .await;
        assert_eq!(rows[0]["n"], 50, "{transport}");
        assert_eq!(rows[0]["ids"], 50, "{transport}");
        assert_eq!(rows[0]["tokens"], (0..50).sum::<i64>(), "{transport}");
        assert_eq!(rows[0]["lo"], 0.5);
        assert_eq!(rows[0]["hi"], 0.99);
        assert_eq!(rows[0]["st"], "ok");
        assert_eq!(rows[0]["kind"], "client");
        assert_eq!(rows[0]["ev"], "0");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_rejects_invalid_ids_and_stores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    // JSON.
    let res = post(
        &server,
        "application/json",
        None,
        fixture("invalid-ids.json"),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "2", "{body}");
    let msg = body["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(msg.contains("trace id") && msg.contains("span id"), "{msg}");
    // Protobuf, same rules.
    let mut bad = span(7, 1, "bad");
    bad.span_id = vec![1, 2, 3];
    let req = request(vec![bad, span(7, 2, "good")]);
    let res = post(&server, "application/x-protobuf", None, req.encode_to_vec()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(res.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    // gRPC, same rules.
    let mut client = grpc(&server).await;
    let mut bad = span(8, 1, "bad");
    bad.trace_id = vec![0; 16];
    let resp = client
        .export(request(vec![bad, span(8, 2, "good")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    let rows = sql(&server, "SELECT name FROM spans ORDER BY name").await;
    let names: Vec<_> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["good", "good", "valid"]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_accepted_in_both_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let res = post(
        &server,
        "application/json",
        Some("gzip"),
        gzip(&fixture("spec-example.json")),
    )
    .await;
    assert_eq!(res.status(), 200);
    let req = request(vec![span(9, 1, "gz")]);
    let res = post(
        &server,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&req.encode_to_vec()),
    )
    .await;
    assert_eq!(res.status(), 200);
    let rows = sql(&server, "SELECT count(*) AS n FROM spans").await;
    assert_eq!(rows[0]["n"], 2);
    server.shutdown().await.unwrap();
}

fn rpc_status(body: &[u8]) -> tonic_types::Status {
    tonic_types::Status::decode(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[receiver]\nmax_body_mib = 1\n").await;
    let client = authed(&server);
    let url = format!("http://{}/v1/traces", server.otlp_http);

    // 400: undecodable protobuf, with a google.rpc.Status body in protobuf.
    let res = post(
        &server,
        "application/x-protobuf",
        None,
        vec![0xff, 0xff, 0xff, 0x0f],
    )
    .await;
    assert_eq!(res.status(), 400);
    let st = rpc_status(&res.bytes().await.unwrap());
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("cannot decode protobuf"),
        "{}",
        st.message
    );

    // 400: malformed JSON, with the position, as a JSON Status.
    let res = post(
        &server,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"].as_str().unwrap().contains("line 1"),
        "{body}"
    );

    // 400: ids that are not hex.
    let res = post(
        &server,
        "application/json",
        None,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"00"}]}]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(res.status(), 400);

    // 400: a broken gzip stream.
    let res = post(
        &server,
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(res.status(), 400);

    // 413: too large before compression.
    let res = post(
        &server,
        "application/x-protobuf",
        None,
        vec![0u8; (1 << 20) + 1],
    )
    .await;
    assert_eq!(res.status(), 413);

    // 413: a gzip bomb, small on the wire, large after decompression.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let res = post(&server, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(res.status(), 413);
    let st = rpc_status(&res.bytes().await.unwrap());
    assert!(st.message.contains("after decompression"), "{}", st.message);

    // 413: small on the wire, huge once the resource's attributes are copied onto every span.
    let mut req = request((1..=250u8).map(|i| span(12, i, "tiny")).collect());
    req.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv(
            "big",
            any_value::Value::StringValue("z".repeat(900 << 10)),
        ));
    let res = post(&server, "application/x-protobuf", None, req.encode_to_vec()).await;
    assert_eq!(res.status(), 413);
    let st = rpc_status(&res.bytes().await.unwrap());
    assert!(
        st.message.contains("fewer spans per request"),
        "{}",
        st.message
    );

    // 415: unknown content type, and unknown content encoding.
    let res = post(&server, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(res.status(), 415);
    let res = post(&server, "application/json", Some("br"), b"{}".to_vec()).await;
    assert_eq!(res.status(), 415);

    // 405: a method other than POST.
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let res = client.put(&url).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 405);

    // The server still serves after all of that.
    let res = post(
        &server,
        "application/json",
        None,
        fixture("spec-example.json"),
    )
    .await;
    assert_eq!(res.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_503_and_unavailable_with_retry_info() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of 8 MiB with flushes far apart: a few requests (each about 2 MB once decoded)
    // fill it.
    let server = start_with(
        dir.path(),
        "[store]\nmemory_budget_mib = 8\nflush_mib = 8\nflush_interval_secs = 3600\n[receiver]\nmax_body_mib = 1\nretry_after_secs = 2\n",
    )
    .await;
    let big: Vec<Span> = (0..2000u32)
        .map(|i| {
            let mut s = span(10, 1, "filler");
            s.span_id = (u64::from(i) + 1).to_be_bytes().to_vec();
            s.attributes = vec![kv(
                "payload",
                any_value::Value::StringValue("x".repeat(200)),
            )];
            s
        })
        .collect();
    let body = request(big).encode_to_vec();
    let mut saw_503 = false;
    for _ in 0..20 {
        let res = post(&server, "application/x-protobuf", None, body.clone()).await;
        if res.status() == 503 {
            assert_eq!(res.headers()["retry-after"], "2");
            let st = rpc_status(&res.bytes().await.unwrap());
            assert_eq!(st.code, 14);
            saw_503 = true;
            break;
        }
        assert_eq!(res.status(), 200);
    }
    assert!(saw_503, "the budget never ran out");

    let mut client = grpc(&server).await;
    // The refusal above asked for a flush, so memory may be free again: fill it over gRPC.
    let mut refusal = None;
    for _ in 0..20 {
        match client
            .export(ExportTraceServiceRequest::decode(&body[..]).unwrap())
            .await
        {
            Ok(_) => continue,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let err = refusal.expect("gRPC never reported overload");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt as _;
    let retry = err.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(2)));

    // It recovers by itself: the refusal asked for a flush.
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = post(
            &server,
            "application/json",
            None,
            fixture("spec-example.json"),
        )
        .await;
        if res.status() == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the server did not recover after a flush");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[receiver]\nmax_body_mib = 1\n").await;
    // RESOURCE_EXHAUSTED without RetryInfo for a message over the limit.
    let mut client = grpc(&server).await;
    let mut s = span(11, 1, "huge");
    s.attributes = vec![kv(
        "blob",
        any_value::Value::StringValue("y".repeat(2 << 20)),
    )];
    let err = client.export(request(vec![s])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    use tonic_types::StatusExt as _;
    assert!(err.get_details_retry_info().is_none());

    // INVALID_ARGUMENT for bytes that are not an ExportTraceServiceRequest, sent as a raw gRPC frame.
    let garbage = [0xffu8, 0xff, 0xff, 0x0f];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
    frame.extend_from_slice(&garbage);
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = raw
        .post(format!(
            "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            server.otlp_grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", admin(&server)))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "3", "{:?}", res.headers());

    // And the service keeps serving.
    client
        .export(request(vec![span(11, 2, "ok")]))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = authed(&server);
    let url = format!("http://{}/api/sql", server.api);
    for (q, needle) in [
        ("DROP TABLE spans", "read-only"),
        ("CREATE TABLE t AS SELECT 1", "read-only"),
        ("INSERT INTO spans (name) VALUES ('x')", "read-only"),
        ("COPY (SELECT 1) TO '/tmp/custos-copy.csv'", "read-only"),
        ("SET datafusion.execution.batch_size = 1", "read-only"),
        ("SELEC 1", "Line: 1, Column"),
        ("SELECT nope FROM spans", "nope"),
    ] {
        let res = client
            .post(&url)
            .json(&serde_json::json!({ "sql": q }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{q}");
        let body: Value = res.json().await.unwrap();
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    assert!(!Path::new("/tmp/custos-copy.csv").exists());
    // A body that is not the expected JSON.
    let res = client.post(&url).body("SELECT 1").send().await.unwrap();
    assert_eq!(res.status(), 400);
    // Formats by Accept.
    let res = client
        .post(&url)
        .header("accept", "text/csv")
        .json(&serde_json::json!({ "sql": "SELECT 1 AS one, 'a' AS two" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "one,two\n1,a\n");
    let res = client
        .post(&url)
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": "SELECT 42 AS answer" }))
        .send()
        .await
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].num_rows(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_and_memory_limit_fail_clearly_while_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[query]\ntimeout_secs = 1\nmemory_limit_mib = 16\n",
    )
    .await;
    let client = authed(&server);
    let url = format!("http://{}/api/sql", server.api);
    let slow = "SELECT count(*) FROM generate_series(1, 10000000000) a";
    let res = client
        .post(&url)
        .json(&serde_json::json!({ "sql": slow }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    let hungry = "SELECT a.value % 1000 AS k, array_agg(a.value) FROM generate_series(1, 50000000) a GROUP BY k";
    let res = client
        .post(&url)
        .json(&serde_json::json!({ "sql": hungry }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("memory") || msg.contains("timeout"), "{msg}");
    let res = post(
        &server,
        "application/json",
        None,
        fixture("spec-example.json"),
    )
    .await;
    assert_eq!(res.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicates_or_gaps_across_flushes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = grpc(&server).await;
    let mut expected = 0;
    for round in 0..6u8 {
        let spans: Vec<Span> = (1..=20u8).map(|i| span(round + 1, i, "s")).collect();
        expected += spans.len();
        client.export(request(spans)).await.unwrap();
        if round % 2 == 1 {
            server.store().flush().await.unwrap();
        }
        let rows = sql(
            &server,
            "SELECT count(*) AS n, count(DISTINCT trace_id || span_id) AS d FROM spans",
        )
        .await;
        assert_eq!(rows[0]["n"], expected);
        assert_eq!(rows[0]["d"], expected);
    }
    server.shutdown().await.unwrap();
    // After a restart: the same rows, still once each, and the WAL emptied by the shutdown flush.
    let server = start(dir.path()).await;
    let rows = sql(
        &server,
        "SELECT count(*) AS n, count(DISTINCT trace_id || span_id) AS d FROM spans",
    )
    .await;
    assert_eq!(rows[0]["n"], expected);
    assert_eq!(rows[0]["d"], expected);
    let m = authed(&server)
        .get(format!("http://{}/metrics", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("custos_table_files{date=\"2025-11-21\"}"), "{m}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    post(
        &server,
        "application/json",
        None,
        fixture("automation-run.json"),
    )
    .await;
    post(
        &server,
        "application/json",
        None,
        fixture("invalid-ids.json"),
    )
    .await;
    let health: Value = reqwest::get(format!("http://{}/healthz", server.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let m = authed(&server)
        .get(format!("http://{}/metrics", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "custos_receiver_spans_accepted_total{transport=\"http\"} 4",
        "custos_receiver_spans_rejected_total{transport=\"http\"} 2",
        "custos_receiver_request_duration_seconds_bucket",
        "custos_wal_syncs_total",
        "custos_wal_sync_seconds_total",
        "custos_wal_sync_duration_seconds_bucket",
        "custos_memtable_rows 4",
        "custos_sql_query_duration_seconds",
    ] {
        assert!(m.contains(needle), "missing `{needle}` in\n{m}");
    }
    server.shutdown().await.unwrap();
}

mod round_trip {
    //! Property: OTLP → Arrow → (WAL, memtable | Delta/Parquet) → SQL preserves every field.

    use super::*;
    use custos_analytics::format::{Format, render};
    use opentelemetry_proto::tonic::trace::v1::{Status, span};
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = (any_value::Value, String)> {
        prop_oneof![
            "[a-zA-Z0-9 _.-]{0,12}".prop_map(|s| (any_value::Value::StringValue(s.clone()), s)),
            any::<i64>().prop_map(|i| (any_value::Value::IntValue(i), i.to_string())),
            any::<bool>().prop_map(|b| (any_value::Value::BoolValue(b), b.to_string())),
            (-1.0e6f64..1.0e6).prop_map(|d| (any_value::Value::DoubleValue(d), d.to_string())),
        ]
    }

    prop_compose! {
        fn arb_span()(
            trace in prop::array::uniform16(1u8..),
            id in prop::array::uniform8(1u8..),
            parent in prop::option::of(prop::array::uniform8(1u8..)),
            name in "[a-z ]{0,16}",
            kind in 0i32..6,
            start in 0u64..4_000_000_000_000_000_000,
            dur in 0u64..10_000_000_000,
            code in 0i32..3,
            message in "[a-z]{0,8}",
            attrs in prop::collection::btree_map("[a-z]{1,6}(\\.[a-z]{1,4})?", any_value(), 0..5),
            events in prop::collection::vec(("[a-z]{1,8}", 0u64..4_000_000_000_000_000_000), 0..3),
            flags in any::<u32>(),
        ) -> (Span, BTreeMapText) {
            let attributes: Vec<PKeyValue> = attrs.iter().map(|(k, (v, _))| kv(k, v.clone())).collect();
            let text: std::collections::BTreeMap<String, String> = attrs.into_iter().map(|(k, (_, t))| (k, t)).collect();
            let s = Span {
                trace_id: trace.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                status: Some(Status { code, message }),
                attributes,
                events: events.into_iter().map(|(n, t)| span::Event { name: n, time_unix_nano: t, ..Default::default() }).collect(),
                flags,
                ..Default::default()
            };
            (s, text)
        }
    }

    type BTreeMapText = std::collections::BTreeMap<String, String>;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn every_field_survives(spans in prop::collection::vec(arb_span(), 1..20), flush in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                // Unique span ids, so rows can be matched.
                let mut seen = std::collections::HashSet::new();
                let spans: Vec<_> = spans.into_iter().filter(|(s, _)| seen.insert(s.span_id.clone())).collect();
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
                let req = request(spans.iter().map(|(s, _)| s.clone()).collect());
                let n = custos_collector::normalize(&req, None).unwrap();
                assert_eq!(n.rejected, 0);
                store.append(n.batch.unwrap()).await.unwrap();
                if flush {
                    store.flush().await.unwrap();
                }
                let analytics = Analytics::new(store.clone(), QueryOptions::default()).await.unwrap();
                let result = analytics.query(
                    "SELECT trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, \
                     end_time_unix_nano, status_code, status_message, attributes, flags, \
                     events, service_name FROM spans ORDER BY span_id").await.unwrap();
                let rows: Vec<Value> = serde_json::from_slice(&render(&result, Format::Json).unwrap()).unwrap();
                let mut expected = spans.clone();
                expected.sort_by_key(|(s, _)| hex_of(&s.span_id));
                assert_eq!(rows.len(), expected.len());
                for (row, (s, text)) in rows.iter().zip(&expected) {
                    assert_eq!(row["trace_id"], hex_of(&s.trace_id));
                    assert_eq!(row["span_id"], hex_of(&s.span_id));
                    if s.parent_span_id.is_empty() {
                        assert!(row["parent_span_id"].is_null());
                    } else {
                        assert_eq!(row["parent_span_id"], hex_of(&s.parent_span_id));
                    }
                    assert_eq!(row["name"], s.name.as_str());
                    let kinds = ["unspecified", "internal", "server", "client", "producer", "consumer"];
                    assert_eq!(row["kind"], kinds[s.kind as usize]);
                    assert_eq!(row["start_time_unix_nano"], s.start_time_unix_nano as i64);
                    assert_eq!(row["end_time_unix_nano"], s.end_time_unix_nano as i64);
                    let st = s.status.as_ref().unwrap();
                    assert_eq!(row["status_code"], ["unset", "ok", "error"][st.code as usize]);
                    if st.message.is_empty() {
                        assert!(row["status_message"].is_null());
                    } else {
                        assert_eq!(row["status_message"], st.message.as_str());
                    }
                    assert_eq!(row["flags"], i64::from(s.flags));
                    let attrs: BTreeMapText = serde_json::from_value(row["attributes"].clone()).unwrap();
                    assert_eq!(&attrs, text);
                    let events = row["events"].as_array().unwrap();
                    assert_eq!(events.len(), s.events.len());
                    for (e, want) in events.iter().zip(&s.events) {
                        assert_eq!(e["name"], want.name.as_str());
                        assert_eq!(e["time_unix_nano"], want.time_unix_nano as i64);
                    }
                    assert_eq!(row["service_name"], "svc");
                }
                store.shutdown().await.unwrap();
            });
        }
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// A store holding the synthetic workload with the `invoice-posting` canaries (`v2` healthy, `v3`
/// regressed), half flushed to Parquet.
async fn canary_store(dir: &Path) -> Store {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = Duration::from_secs(3600);
    o.retention_days = None;
    let store = Store::open(o).await.unwrap();
    let synth = custos_synth::reference::SynthOptions {
        runs: 8_000,
        runs_per_request: 500,
        canary: true,
        ..Default::default()
    };
    let requests: Vec<_> = custos_synth::reference::generate(synth).collect();
    let half = requests.len() / 2;
    for (i, req) in requests.iter().enumerate() {
        // As the collector's receiver would store them: `invoice-posting` trusts its spans.
        let n =
            custos_collector::normalize(req, Some("Custos::Service::\"otel-collector\"")).unwrap();
        store.append(n.batch.unwrap()).await.unwrap();
        if i + 1 == half {
            store.flush().await.unwrap();
        }
    }
    store
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn change(candidate: &str) -> custos_governance::gate::ChangeFile {
    custos_governance::gate::ChangeFile::parse(
        &format!(
            "change: prompt\nworkflow: invoice-posting\nstep: approve\ncurrent: v1\ncandidate: {candidate}\nrequested_by: 'Custos::Service::\"ci\"'\ncanary:\n  last: 48h\ndescription: PR 42\n"
        ),
        "change.yaml",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_denies_a_regressed_canary_and_allows_a_healthy_one_in_every_format() {
    use custos_governance::gate::{GateFormat, evaluate, record, render};
    let dir = tempfile::tempdir().unwrap();
    let store = canary_store(dir.path()).await;
    let prices = custos_analytics::PriceTable::load(&repo().join("rules/prices.yaml")).unwrap();
    let analytics = Analytics::with_prices(store, QueryOptions::default(), prices)
        .await
        .unwrap();
    let engine = custos_policy::engine::Engine::load(&repo().join("rules/policy")).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-03T00:00:00Z")
        .unwrap()
        .to_utc();
    let audit = custos_audit::AuditLog::open(&dir.path().join("audit")).unwrap();

    let mut bad = evaluate(&analytics, &engine, &change("v3"), at, "rules/policy")
        .await
        .unwrap();
    assert!(
        !bad.allowed(),
        "{}",
        render(&bad, GateFormat::Text).unwrap()
    );
    assert_eq!(bad.exit_code(), 2);
    assert_eq!(
        bad.decision.policy_ids(),
        ["deploy-override-rate-regressed"]
    );
    assert!(
        bad.measurement.candidate.decisions >= 200,
        "{:?}",
        bad.measurement
    );
    let delta = bad.measurement.candidate.override_rate.unwrap()
        - bad.measurement.current.override_rate.unwrap();
    assert!(delta > 0.2, "{delta}");
    assert_eq!(bad.mattered[0].metric, "override_rate_delta_upper");

    let mut good = evaluate(&analytics, &engine, &change("v2"), at, "rules/policy")
        .await
        .unwrap();
    assert!(
        good.allowed(),
        "{}",
        render(&good, GateFormat::Text).unwrap()
    );
    assert_eq!(good.exit_code(), 0);
    assert_eq!(good.decision.policy_ids(), ["deploy-by-ci-or-owner"]);

    // Nothing measured: a window without traffic is a deny naming what is missing.
    let mut empty_change = change("v2");
    empty_change.canary = custos_governance::gate::CanaryWindow {
        last: None,
        from: Some(at + chrono::Duration::days(30)),
        to: Some(at + chrono::Duration::days(31)),
    };
    let mut empty = evaluate(&analytics, &engine, &empty_change, at, "rules/policy")
        .await
        .unwrap();
    assert!(!empty.allowed());
    assert!(
        empty
            .decision
            .errors
            .iter()
            .any(|e| e.message.contains("no canary traffic")),
        "{:?}",
        empty.decision
    );

    record(&audit, &mut bad).unwrap();
    record(&audit, &mut good).unwrap();
    record(&audit, &mut empty).unwrap();
    assert_eq!(good.audit.as_ref().unwrap().seq, 2);
    let records = custos_audit::read_all(&dir.path().join("audit")).unwrap();
    assert_eq!(records[0].decision, "deny");
    assert_eq!(records[0].policies, ["deploy-override-rate-regressed"]);
    assert_eq!(
        records[0].context["evaluated"]["metrics"]["sample_size"],
        bad.measurement.candidate.decisions
    );
    assert_eq!(records[1].policy_hash, engine.hash());
    assert!(
        custos_audit::verify(&dir.path().join("audit"))
            .unwrap()
            .ok()
    );

    // The audit table sees them.
    let r = analytics
        .query("SELECT seq, kind, decision, policies FROM audit ORDER BY seq")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 3);

    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"[0-9a-f]{64}", "[sha256]");
    settings.add_filter(r"policy set [0-9a-f]{12}", "policy set [hash]");
    settings.add_filter(r#""version": "\d+\.\d+\.\d+""#, r#""version": "[version]""#);
    // Float sums depend on the order partial sums were added in: keep six decimals.
    settings.add_filter(r"(\d+\.\d{6})\d+", "$1");
    settings.bind(|| {
        for (name, report) in [("deny", &bad), ("allow", &good), ("missing", &empty)] {
            for (fname, format) in [
                ("text", GateFormat::Text),
                ("json", GateFormat::Json),
                ("github", GateFormat::Github),
                ("junit", GateFormat::Junit),
                ("sarif", GateFormat::Sarif),
            ] {
                let out = render(report, format).unwrap();
                if matches!(format, GateFormat::Json | GateFormat::Sarif) {
                    serde_json::from_str::<Value>(&out).unwrap();
                }
                insta::assert_snapshot!(format!("gate_{name}_{fname}"), out);
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_api_decides_records_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!(
            "[rules]\npolicies = {:?}\n",
            repo().join("rules/policy").display().to_string()
        ),
    )
    .await;
    let url = format!("http://{}/api/authorize", server.api);
    // Only services ask for decisions on someone else's behalf: the admin may not.
    let res = authed(&server)
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("authorize-only-services"),
        "{body}"
    );
    // The admin makes the executor a token through the API.
    let admin_api = custos_api::Client::new(&format!("http://{}", server.api))
        .unwrap()
        .with_token(Some(admin(&server)));
    let made = admin_api
        .create_token(&custos_api::CreateToken {
            principal: "Custos::Service::\"executor\"".into(),
            expires: Some("1d".into()),
            note: "test".into(),
        })
        .await
        .unwrap();
    let client = bearer(&made.token);
    let ask = |body: Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let res = client.post(&url).json(&body).send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let exec = |conf: &str, amount: &str, human: bool| {
        serde_json::json!({
            "principal": "Custos::Service::\"executor\"",
            "action": "execute",
            "resource": {"type": "Custos::Connector", "id": "erp"},
            "context": {"workflow": {"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}},
                        "confidence": conf, "amount_usd": amount, "human_approved": human}
        })
    };
    let (status, d) = ask(exec("0.97", "120.00", false)).await;
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("allow")),
        "{d}"
    );
    assert_eq!(d["determining_policies"][0]["id"], "execute-when-confident");
    let (status, d) = ask(exec("0.99", "25000.00", false)).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("deny")), "{d}");
    assert!(
        d["advice"][0]
            .as_str()
            .unwrap()
            .contains("route to human review"),
        "{d}"
    );
    let (status, d) = ask(exec("very", "1", false)).await;
    assert_eq!((status, d["decision"].as_str()), (400, Some("deny")), "{d}");
    assert!(
        d["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("decimal"),
        "{d}"
    );
    let res = client.post(&url).body("{not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
    // A review decision being authorized is recorded as a review; four eyes holds.
    let review = |who: &str| {
        serde_json::json!({
            "principal": {"type": "Custos::User", "id": who},
            "action": "approve_review",
            "resource": "Custos::ReviewTask::\"r-7\"",
            "context": {"override": true},
            "entities": [{"uid": {"type": "Custos::ReviewTask", "id": "r-7"}, "attrs": {
                "workflow": {"type": "Custos::Workflow", "id": "invoice-posting"},
                "reviewers": {"type": "Custos::Team", "id": "reviewers"},
                "requested_by": {"type": "Custos::User", "id": "ana"}}, "parents": []}]
        })
    };
    let (status, d) = ask(review("ben")).await;
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("allow")),
        "{d}"
    );
    let (status, d) = ask(review("ana")).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("deny")), "{d}");
    assert_eq!(d["determining_policies"][0]["id"], "review-four-eyes");
    // Every decision was recorded, after the policy set itself.
    let rows = sql(&server, "SELECT kind, decision FROM audit ORDER BY seq").await;
    let kinds: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("policy_change".to_string(), "recorded".to_string()),
            ("token".into(), "created".into()),
            ("access".into(), "deny".into()),
            ("token".into(), "created".into()),
            ("authorize".into(), "allow".into()),
            ("authorize".into(), "deny".into()),
            ("authorize".into(), "deny".into()),
            ("review".into(), "allow".into()),
            ("review".into(), "deny".into()),
        ]
    );
    let v: Value = authed(&server)
        .get(format!("http://{}/api/audit/verify", server.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["records"], 9, "{v}");
    assert!(v["finding"].is_null(), "{v}");
    // One record, whole, through the typed client: what the SQL table says, context as JSON.
    let api = admin_api;
    let eight = api.audit_record(8).await.unwrap();
    assert_eq!(
        (eight.seq, eight.kind.as_str(), eight.decision.as_str()),
        (8, "review", "allow")
    );
    assert!(eight.context.is_object(), "{eight:?}");
    assert_eq!(eight.hash.len(), 64, "{eight:?}");
    let nine = api.audit_record(9).await.unwrap();
    assert_eq!(nine.prev_hash, eight.hash);
    // The executor may not read the audit trail; the denial names it and is recorded.
    let e = custos_api::Client::new(&format!("http://{}", server.api))
        .unwrap()
        .with_token(Some(made.token.clone()))
        .audit_record(1)
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    assert!(e.message().contains("may not `read_audit`"), "{e}");
    let client = authed(&server);
    for (seq, status, says) in [
        ("11", 404, "no record `11`"),
        ("0", 400, "numbered from 1"),
        ("seven", 400, "`seven` is not a record number"),
    ] {
        let r = client
            .get(format!("http://{}/api/audit/records/{seq}", server.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{seq}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{seq}: {body}"
        );
    }
    server.shutdown().await.unwrap();

    // A restart with the same policies records no change (nor a new admin token); without
    // policies the server does not start: access to every port is a policy decision.
    let server = start_with(
        dir.path(),
        &format!(
            "[rules]\npolicies = {:?}\n",
            repo().join("rules/policy").display().to_string()
        ),
    )
    .await;
    assert!(
        server.admin_token.is_none(),
        "the admin's token is still valid"
    );
    let api = custos_api::Client::new(&format!("http://{}", server.api))
        .unwrap()
        .with_token(Some(admin(&server)));
    let n = api.sql("SELECT count(*) AS n FROM audit").await.unwrap();
    assert_eq!(n[0]["n"], 10, "{n}");
    server.shutdown().await.unwrap();
    let empty = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[listen]\notlp_grpc = \"127.0.0.1:0\"\notlp_http = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n",
        empty.path().display().to_string()
    );
    let config: Config = toml::from_str(&text).unwrap();
    let e = custos_server::start(config.validate().unwrap())
        .await
        .err()
        .expect("no policies, no server");
    assert!(e.to_string().contains("no policy directory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_drill_down_lists_the_runs_that_burned_the_budget_slowest_first() {
    let dir = tempfile::tempdir().unwrap();
    let slos = dir.path().join("slos.yaml");
    std::fs::write(
        &slos,
        "version: custos/v1\nservice: t\nslos:\n  - name: success\n    objective: 99\n    sli:\n      events:\n        \
         error_query: SELECT count(*) FROM runs WHERE outcome = 'failure' AND end_time >= {{.window_start}} AND end_time < {{.window_end}}\n        \
         total_query: SELECT count(*) FROM runs WHERE end_time >= {{.window_start}} AND end_time < {{.window_end}}\n  \
         - name: grouped\n    objective: 99\n    sli:\n      events:\n        \
         error_query: SELECT count(*) FROM runs WHERE end_time < {{.window_end}} GROUP BY workflow\n        \
         total_query: SELECT count(*) FROM runs WHERE end_time < {{.window_end}}\n",
    )
    .unwrap();
    let server = start_with(
        dir.path(),
        &format!("[rules]\nslos = {:?}\n", slos.display().to_string()),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let s = |v: &str| any_value::Value::StringValue(v.into());
    // Four runs an hour ago: two failures (2 s and 0.5 s), a success (9 s), one failure without
    // its root span yet (in progress: not counted).
    let mut spans = Vec::new();
    for (i, (run, outcome, ms)) in [
        ("r-fast-fail", Some("failure"), 500u64),
        ("r-slow-fail", Some("failure"), 2000),
        ("r-ok", Some("success"), 9000),
        ("r-open", None, 100),
    ]
    .into_iter()
    .enumerate()
    {
        let start = now - 3_600_000_000_000 + i as u64 * 1_000_000;
        let mut child = span(i as u8 + 1, 100 + i as u8, "classify");
        child.parent_span_id = vec![i as u8 + 1; 8];
        child.start_time_unix_nano = start + 1_000_000;
        child.end_time_unix_nano = start + 2_000_000;
        child.attributes = vec![
            kv("automation.run_id", s(run)),
            kv("automation.workflow", s("wf")),
            kv("automation.step", s("classify")),
            kv("note", s("it's quoted")),
        ];
        spans.push(child);
        if let Some(outcome) = outcome {
            let mut root = span(i as u8 + 1, i as u8 + 1, "run wf");
            root.start_time_unix_nano = start;
            root.end_time_unix_nano = start + ms * 1_000_000;
            root.attributes = vec![
                kv("automation.run_id", s(run)),
                kv("automation.workflow", s("wf")),
                kv("automation.outcome", s(outcome)),
            ];
            spans.push(root);
        }
    }
    let res = post(
        &server,
        "application/x-protobuf",
        None,
        request(spans).encode_to_vec(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let api = format!("http://{}", server.api);
    let api = api.as_str();
    let client = authed(&server);
    let client = &client;
    let get = |path: String| async move {
        let res = client.get(format!("{api}{path}")).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let (status, body) = get("/api/slo/success/runs".into()).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r-slow-fail", "r-fast-fail"], "{body}");
    assert_eq!(body["runs"][0]["duration_ms"], 2000.0, "{body}");
    assert!(
        body["sql"]
            .as_str()
            .unwrap()
            .contains("outcome = 'failure'")
    );
    // A window before the runs holds none of them.
    let (status, body) = get("/api/slo/success/runs?window=5m".into()).await;
    assert_eq!(
        (status, body["runs"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, body) = get("/api/slo/nope/runs".into()).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("known: success, grouped")
    );
    let (status, body) = get("/api/slo/grouped/runs".into()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("groups its rows"),
        "{body}"
    );
    let (status, _) = get("/api/slo/success/runs?window=soon".into()).await;
    assert_eq!(status, 400);

    // `max_age` serves the server's periodic evaluation: the same report until it is too old.
    let mut cached = None;
    for _ in 0..100 {
        let (a, b) = (
            get("/api/slo?max_age=1h".into()).await.1,
            get("/api/slo?max_age=1h".into()).await.1,
        );
        if a["at"] == b["at"] {
            cached = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cached = cached.expect("the server evaluates its SLOs at start");
    let fresh = get("/api/slo".into()).await.1;
    assert!(
        fresh["at"].as_str() > cached["at"].as_str(),
        "{fresh} vs {cached}"
    );
    assert_eq!(fresh["slos"][0]["name"], cached["slos"][0]["name"]);
    let (status, body) = get("/api/slo?max_age=often".into()).await;
    assert_eq!(status, 400, "{body}");

    // The waterfall query `custos top` sends: attributes arrive as a JSON object.
    let rows = sql(
        &server,
        "SELECT span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, \
         status_code, status_message, attributes FROM spans WHERE run_id = 'r-slow-fail' \
         ORDER BY start_time_unix_nano",
    )
    .await;
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["parent_span_id"].is_null());
    assert_eq!(rows[1]["attributes"]["note"], "it's quoted", "{rows:?}");
    server.shutdown().await.unwrap();
}
