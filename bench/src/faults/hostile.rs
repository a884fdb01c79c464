//! The hostile side of the fault suite: what runs during each phase besides the well-behaved
//! load, until its `stop` flag is set, counting the answers it gets by status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ingest::Child;

/// The hostile side's answers by status (or `conn`, `refused`, ...).
pub(super) type Answers = Arc<Mutex<BTreeMap<String, u64>>>;

/// The tokens the hostile side uses.
pub(super) struct Tokens {
    /// The admin's: exports, queries, runs, schemathesis.
    pub admin: String,
    /// A reviewer's (`ben`, of the support queue): review decisions.
    pub reviewer: String,
}

/// Counts one answer.
pub(super) fn count(answers: &Answers, key: String) {
    if let Ok(mut a) = answers.lock() {
        *a.entry(key).or_default() += 1;
    }
}

/// The hostile exports: (content type, content encoding, body).
fn hostile_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let json_bomb = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(2_000_000)
    );
    vec![
        (
            "application/x-protobuf",
            None,
            custos_synth::ingest::empty_spans(4_000_000),
        ),
        ("application/x-protobuf", None, vec![0xff; 4096]),
        (
            "application/x-protobuf",
            None,
            vec![0x0a, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "application/x-protobuf",
            Some("gzip"),
            vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
        ),
        ("application/json", None, json_bomb.into_bytes()),
        ("application/json", None, "[".repeat(100_000).into_bytes()),
    ]
}

/// What a hostile side does during a phase, until `stop`.
#[derive(Clone, Copy)]
pub(super) enum Fault {
    /// Nothing: the baseline.
    None,
    /// 300 connections trickling one header byte a second.
    SlowClients,
    /// Oversized and malformed OTLP exports.
    HostileExports,
    /// Queries past the result caps and the query slots.
    HeavyQueries,
    /// Approvals and rejections of one review task sent at once.
    ReviewRaces,
    /// schemathesis' generated requests to every API operation.
    Schemathesis,
}

async fn hostile_exports(url: String, token: String, answers: Answers, stop: Arc<AtomicBool>) {
    let bodies = hostile_bodies();
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        for (ct, enc, body) in &bodies {
            let mut req = client
                .post(&url)
                .header("content-type", *ct)
                .bearer_auth(&token)
                .body(body.clone());
            if let Some(e) = enc {
                req = req.header("content-encoding", *e);
            }
            let key = match req.send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "conn".to_string(),
            };
            count(&answers, key);
        }
    }
}

async fn heavy_queries(api: String, token: String, answers: Answers, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let queries = [
        // The filter keeps the optimizer from answering from statistics.
        "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b \
         WHERE a.value * b.value = 7",
        "SELECT * FROM generate_series(1, 3000000000)",
    ];
    while !stop.load(Ordering::Relaxed) {
        for q in queries {
            let key = match client
                .post(format!("{api}/api/sql"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "sql": q }))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "conn".to_string(),
            };
            count(&answers, key);
        }
    }
}

async fn slow_client(addr: String, answers: Answers, stop: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            count(&answers, "refused".into());
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut buf = [0u8; 64];
        let mut closed = false;
        for b in request {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
            {
                closed = true;
                break;
            }
        }
        count(&answers, if closed { "closed" } else { "finished" }.into());
    }
}

/// Starts the hostile side of `fault` against `server`.
pub(super) fn start_fault(
    fault: Fault,
    server: &Child,
    tokens: &Tokens,
    answers: &Answers,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (a, s, t) = (answers.clone(), stop.clone(), tokens.admin.clone());
    match fault {
        Fault::None => Vec::new(),
        Fault::SlowClients => (0..300)
            .map(|i| {
                let addr = if i % 2 == 0 {
                    host(&server.api)
                } else {
                    host(&server.http)
                };
                tokio::spawn(slow_client(addr, a.clone(), s.clone()))
            })
            .collect(),
        Fault::HostileExports => (0..2)
            .map(|_| {
                tokio::spawn(hostile_exports(
                    server.http.clone(),
                    t.clone(),
                    a.clone(),
                    s.clone(),
                ))
            })
            .collect(),
        Fault::ReviewRaces => vec![tokio::spawn(super::reviews::race(
            server.api.clone(),
            (t.clone(), tokens.reviewer.clone()),
            a.clone(),
            s.clone(),
        ))],
        Fault::Schemathesis => vec![tokio::spawn(super::schemathesis::drive(
            server.api.clone(),
            t.clone(),
            a.clone(),
        ))],
        Fault::HeavyQueries => (0..3)
            .map(|_| {
                tokio::spawn(heavy_queries(
                    server.api.clone(),
                    t.clone(),
                    a.clone(),
                    s.clone(),
                ))
            })
            .collect(),
    }
}
