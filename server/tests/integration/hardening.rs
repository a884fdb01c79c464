//! Hostile requests and unlucky timing cost an error, never the process or a double effect
//! (issue 16): two decisions racing for one review task, queries past the result caps and the
//! query slots, exports past the span and attribute caps.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::{Value, json};

use super::{get_json, start_triage, start_with};

const WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");

/// Starts support-triage runs until one waits for a review; returns the run and its task.
async fn run_waiting_for_review(server: &custos_server::RunningServer) -> (String, String) {
    for n in 0..40 {
        let body = format!("parcel {n} has not arrived");
        let id = start_triage(server, &format!("e-{n}"), "where is my parcel", &body).await;
        for _ in 0..100 {
            let run = get_json(server, &format!("/api/runs/{id}")).await;
            match run["status"].as_str() {
                Some("waiting") if run["review"].is_string() => {
                    return (id, run["review"].as_str().unwrap().to_string());
                }
                Some("finished") => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    panic!("no run waited for a review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_review_decisions_have_one_winner_and_the_loser_gets_409() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[executor]\nworkflows = {WORKFLOWS:?}\n"),
    )
    .await;
    let (_, ben) = super::access::token(&server, "Custos::User::\"ben\"", None).await;
    for round in 0..3 {
        let (run, task) = run_waiting_for_review(&server).await;
        let decide = |verb: &'static str| {
            let url = format!("http://{}/api/reviews/{task}/{verb}", server.api);
            let client = super::bearer(&ben);
            async move {
                let res = client
                    .post(url)
                    .json(&json!({"reason": format!("{verb} in a race")}))
                    .send()
                    .await
                    .unwrap();
                (verb, res.status().as_u16(), res.text().await.unwrap())
            }
        };
        let (a, b) = tokio::join!(decide("approve"), decide("reject"));
        let mut codes = [a.1, b.1];
        codes.sort_unstable();
        assert_eq!(codes, [200, 409], "round {round}: {a:?} {b:?}");
        let loser = if a.1 == 409 { &a } else { &b };
        assert!(loser.2.contains("decided meanwhile"), "{loser:?}");
        let winner = if a.1 == 200 { a.0 } else { b.0 };
        let got = get_json(&server, &format!("/api/reviews/{task}")).await;
        let want = if winner == "approve" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(got["status"], want, "round {round}: {got}");
        // The run goes on once: one reply or one ticket at most, never one per decision.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for connector in ["mail", "tickets"] {
            let lines =
                std::fs::read_to_string(dir.path().join(format!("connectors/{connector}.jsonl")))
                    .unwrap_or_default();
            let n = lines
                .lines()
                .filter(|l| l.contains(&format!("\"run_id\":\"{run}\"")))
                .count();
            assert!(
                n <= 1,
                "round {round}: {connector} has {n} effects of {run}"
            );
        }
    }
    server.shutdown().await.unwrap();
}

async fn post_sql(client: &reqwest::Client, url: &str, sql: &str) -> (u16, Option<String>, Value) {
    let res = client
        .post(url)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_past_the_caps_are_stopped_with_413_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[query]\nmax_result_rows = 200000\n").await;
    let client = super::authed(&server);
    let url = format!("http://{}/api/sql", server.api);
    // Three billion rows, and a cross join of ten billion: without the caps the first took the
    // server to an 18 GiB peak and the second got it killed.
    for sql in [
        "SELECT * FROM generate_series(1, 3000000000)",
        "SELECT * FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
    ] {
        let started = std::time::Instant::now();
        let (status, _, body) = post_sql(&client, &url, sql).await;
        assert_eq!(status, 413, "{sql}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("200000 rows") && msg.contains("LIMIT"),
            "{msg}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{sql}");
    }
    let (status, _, body) = post_sql(
        &client,
        &url,
        "SELECT count(*) AS n FROM generate_series(1, 3000000)",
    )
    .await;
    assert_eq!(
        (status, body[0]["n"].as_i64()),
        (200, Some(3_000_000)),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_slots_get_429_and_ingest_is_not_held_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[query]\ntimeout_secs = 3\nmax_concurrent = 2\n",
    )
    .await;
    let client = super::authed(&server);
    let url = format!("http://{}/api/sql", server.api);
    // The filter keeps the optimizer from answering the count from statistics.
    let heavy = "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b \
                 WHERE a.value * b.value = 7";
    let started = std::time::Instant::now();
    let busy = [
        tokio::spawn(post_sql_owned(client.clone(), url.clone(), heavy)),
        tokio::spawn(post_sql_owned(client.clone(), url.clone(), heavy)),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, retry, body) = post_sql(&client, &url, "SELECT 1").await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    // The analytics routes share the slots.
    let res = client
        .get(format!("http://{}/api/metrics?window=1h", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // While both compute, exports are acknowledged promptly.
    for n in 0..5u8 {
        let t = std::time::Instant::now();
        let res = super::post(
            &server,
            "application/x-protobuf",
            None,
            prost::Message::encode_to_vec(&super::request(vec![super::span(n + 1, 1, "during")])),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "export {n} took {:?}",
            t.elapsed()
        );
    }
    for b in busy {
        let (status, _, body) = b.await.unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("timeout"),
            "{body}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The slots are free again once the timed-out queries are cancelled.
    let (status, _, body) = post_sql(&client, &url, "SELECT count(*) AS n FROM spans").await;
    assert_eq!((status, body[0]["n"].as_i64()), (200, Some(5)), "{body}");
    server.shutdown().await.unwrap();
}

async fn post_sql_owned(
    client: reqwest::Client,
    url: String,
    sql: &'static str,
) -> (u16, Option<String>, Value) {
    post_sql(&client, &url, sql).await
}

/// Sends `message` as one raw gRPC frame to the export method; the response's headers.
async fn grpc_frame(
    server: &custos_server::RunningServer,
    message: &[u8],
) -> reqwest::header::HeaderMap {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
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
        .header("authorization", format!("Bearer {}", super::admin(server)))
        .body(frame)
        .send()
        .await
        .unwrap();
    res.headers().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_the_span_and_attribute_caps_are_refused_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[receiver]\nmax_spans_per_request = 1000\nmax_attributes = 8\n",
    )
    .await;
    let many = custos_synth::ingest::empty_spans(1001);
    let h = grpc_frame(&server, &many).await;
    assert_eq!(h["grpc-status"], "8", "{h:?}");
    let msg = h["grpc-message"].to_str().unwrap();
    assert!(msg.contains("1000"), "{msg}");
    let res = super::post(&server, "application/x-protobuf", None, many).await;
    assert_eq!(res.status(), 413);
    // One span with nine attributes: over the attribute cap on either transport.
    let mut s = super::span(7, 1, "wide");
    s.attributes = (0..9)
        .map(|i| super::kv(&format!("k{i}"), any_value::Value::IntValue(i)))
        .collect();
    let wide = prost::Message::encode_to_vec(&super::request(vec![s]));
    let h = grpc_frame(&server, &wide).await;
    assert_eq!(h["grpc-status"], "8", "{h:?}");
    let res = super::post(&server, "application/x-protobuf", None, wide).await;
    assert_eq!(res.status(), 413);
    let text = res.text().await.unwrap();
    assert!(text.contains("8 attributes"), "{text}");
    // Broken protobuf is still INVALID_ARGUMENT / 400, and exports within the caps are stored.
    let h = grpc_frame(&server, &[0x0a, 0x05, 0x12]).await;
    assert_eq!(h["grpc-status"], "3", "{h:?}");
    let ok = prost::Message::encode_to_vec(&super::request(vec![super::span(7, 2, "fine")]));
    let h = grpc_frame(&server, &ok).await;
    assert_eq!(
        h.get("grpc-status").map(|v| v.to_str().unwrap()),
        None,
        "{h:?}"
    );
    let res = super::post(&server, "application/x-protobuf", None, ok).await;
    assert_eq!(res.status(), 200);
    server.shutdown().await.unwrap();
}

const SLOW_GET: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
/// The HTTP/2 connection preface.
const SLOW_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client that sends `request` one byte a second; returns once the server closes the
/// connection (or after `give_up`): whether it was closed.
async fn trickle(addr: std::net::SocketAddr, request: &[u8], give_up: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    for b in request.iter() {
        if started.elapsed() > give_up {
            return false;
        }
        if s.write_all(&[*b]).await.is_err() {
            return true;
        }
        // A closed connection reads end of file (or an error); what a server sends first (an
        // HTTP/2 server's settings) is read and passed over.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(r) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_neither_hold_their_sockets_nor_delay_a_normal_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[listen]\nheader_timeout_secs = 3\n").await;
    let slow: Vec<_> = (0..500)
        .map(|_| tokio::spawn(trickle(server.api, SLOW_GET, Duration::from_secs(20))))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let res = client
            .get(format!("http://{}/healthz", server.api))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every slow client is cut off at the header timeout, long before it finishes its request.
    let mut closed = 0;
    for s in slow {
        closed += usize::from(s.await.unwrap());
    }
    assert_eq!(closed, 500);
    // The gRPC listener (HTTP/2 only) closes a connection that starts no request in time.
    let started = std::time::Instant::now();
    assert!(trickle(server.otlp_grpc, SLOW_PREFACE, Duration::from_secs(20)).await);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        "[listen]\nmax_connections = 4\nheader_timeout_secs = 2\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(server.api).await.unwrap();
        s.write_all(b"GET /heal").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    let res = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.api))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // It waited until the held connections timed out, and was served then.
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_clocks_far_off_are_rejected_by_name_and_make_no_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "[receiver]\nmax_span_age_days = 30\n").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let at = |id: u8, start: u64| {
        let mut s = super::span(9, id, &format!("span-{id}"));
        s.start_time_unix_nano = start;
        s.end_time_unix_nano = start + 1_000_000;
        s
    };
    let req = super::request(vec![
        at(1, 1_000_000_000),                 // 1970
        at(2, 7_258_118_400_000_000_000),     // 2200
        at(3, now - 40 * 86_400_000_000_000), // 40 days ago
        at(4, now),
    ]);
    let res = super::post(
        &server,
        "application/x-protobuf",
        None,
        prost::Message::encode_to_vec(&req),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    let answer: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse =
        prost::Message::decode(body).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial.error_message.contains("`span-1`")
            && partial.error_message.contains("1970-01-01")
            && partial
                .error_message
                .contains("outside the accepted window"),
        "{}",
        partial.error_message
    );
    let rows = super::sql(&server, "SELECT DISTINCT date, name FROM spans").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "span-4");
    server.shutdown().await.unwrap();
}
