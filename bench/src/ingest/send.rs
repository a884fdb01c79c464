//! What the benchmark's clients send: the workloads, their request bodies, and the sending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde::Serialize;

use crate::{Error, Result};

/// The spans a benchmark sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// custos' own executor's shape ([`custos_synth::ingest`]): 64 distinct requests sent in turn.
    Synthetic,
    /// A user's own SDK code's shape ([`custos_synth::foreign`]): every span distinct, random ids,
    /// 15–20 attributes a span, 14 days in time order.
    Foreign,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "synthetic" => Ok(Self::Synthetic),
            "foreign" => Ok(Self::Foreign),
            other => Err(format!(
                "unknown workload `{other}`: expected `synthetic` or `foreign`"
            )),
        }
    }
}

/// The end of the foreign workload's 14 days (2026-11-01T00:00:00Z), shared with the analytics
/// benchmark.
pub const FOREIGN_END_UNIX_NANO: u64 = 1_793_491_200_000_000_000;

/// The foreign workload of every benchmark: `spans` spans in requests of `batch`.
pub fn foreign_options(spans: usize, batch: usize) -> custos_synth::foreign::ForeignOptions {
    custos_synth::foreign::ForeignOptions {
        seed: 0x5eed_f0e1,
        spans,
        batch,
        days: 14,
        end_unix_nano: FOREIGN_END_UNIX_NANO,
    }
}

/// The foreign workload's export requests, encoded.
pub fn foreign_requests(spans: usize, batch: usize) -> impl Iterator<Item = bytes::Bytes> {
    custos_synth::foreign::Foreign::new(foreign_options(spans, batch))
        .map(|r| bytes::Bytes::from(r.encode_to_vec()))
}

/// Where the clients take their request bodies from.
#[derive(Clone)]
pub(super) enum Bodies {
    /// The pool, sent in turn `requests` times.
    Pool(
        Arc<Vec<bytes::Bytes>>,
        usize,
        Arc<std::sync::atomic::AtomicUsize>,
    ),
    /// Encoded by a producer thread ahead of the clients, until it ends.
    Stream(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<bytes::Bytes>>>),
}

impl Bodies {
    pub(super) fn pool(pool: Vec<bytes::Bytes>, requests: usize) -> Self {
        Self::Pool(Arc::new(pool), requests, Arc::default())
    }

    /// A producer thread encoding `requests` into a bounded queue.
    pub(super) fn stream(requests: impl Iterator<Item = bytes::Bytes> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        std::thread::spawn(move || {
            for body in requests {
                if tx.blocking_send(body).is_err() {
                    break;
                }
            }
        });
        Self::Stream(Arc::new(tokio::sync::Mutex::new(rx)))
    }

    async fn next(&self) -> Option<bytes::Bytes> {
        match self {
            Self::Pool(pool, requests, next) => {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (k < *requests)
                    .then(|| pool.get(k % pool.len().max(1)).cloned())
                    .flatten()
            }
            Self::Stream(rx) => rx.lock().await.recv().await,
        }
    }
}

/// Sends every body from `concurrency` clients; each export's latency and the spans sent.
pub(super) async fn export_all(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    bodies: Bodies,
    concurrency: usize,
) -> Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let url = url.to_string();
        let bearer = format!("Bearer {token}");
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(body) = bodies.next().await else {
                    break;
                };
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("authorization", &bearer)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("export failed: {e}"))?;
                if !res.status().is_success() {
                    return Err(format!("export answered {}", res.status()));
                }
                let _ = res.bytes().await;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        let l = t
            .await
            .map_err(|e| Error::Task(format!("client task failed: {e}")))?
            .map_err(Error::Task)?;
        latencies.extend(l);
    }
    Ok(latencies)
}
