//! Reads a [`Snapshot`] from a server's API (`/api/status`, `/api/metrics`, `/api/slo`,
//! `/api/reviews`, `/api/sql` over the `audit` table and the `runs` view, `/api/audit/verify`),
//! loads drill-downs ([`load`]) and sends review decisions ([`decide`]).

use custos_api::{Client, ReviewDecision};
use serde_json::Value;

use crate::app::{Decide, Detail, Request};
use crate::data::{self, Snapshot};
use crate::{Error, Result};

fn api(e: custos_api::Error) -> Error {
    Error::Api(e.to_string())
}

async fn get(client: &Client, segments: &[&str], query: &[(&str, Option<&str>)]) -> Result<Value> {
    client.get(segments, query).await.map_err(api)
}

async fn sql(client: &Client, q: &str) -> Result<Value> {
    client.sql(q).await.map_err(api)
}

/// The optional reads the server refused (403) this session. They are not asked again: each
/// refusal is an audit record, and a dashboard whose token may not read the audit trail must not
/// write one every poll. A new `custos top` (a new token, say) asks again.
#[derive(Debug, Default)]
pub struct Refused(std::collections::BTreeSet<&'static str>);

impl Refused {
    /// The answer of `call`, unless `what` was refused before (then `call` is never sent) or is
    /// refused now, or fails.
    async fn ask<T>(
        &mut self,
        what: &'static str,
        call: impl std::future::Future<Output = custos_api::Result<T>>,
    ) -> Option<T> {
        if self.0.contains(what) {
            return None;
        }
        match call.await {
            Ok(v) => Some(v),
            Err(e) => {
                if e.status() == Some(reqwest::StatusCode::FORBIDDEN) {
                    self.0.insert(what);
                }
                None
            }
        }
    }

    /// Whether `what` was refused.
    pub fn contains(&self, what: &str) -> bool {
        self.0.contains(what)
    }
}

/// Fetches everything the dashboard shows; `range` is the metrics window (`1h`, `24h`, `7d`).
/// Verifying the audit chain reads the whole log, so it is asked for only when `verify` is set;
/// otherwise the snapshot's `audit` is empty and the dashboard keeps the last verification.
/// Optional reads the token may not make are asked once (`refused`).
pub async fn fetch(
    client: &Client,
    range: &str,
    verify: bool,
    refused: &mut Refused,
) -> Result<Snapshot> {
    let status = client.status().await.map_err(api)?;
    let window = Some(range);
    let metrics = get(
        client,
        &["metrics"],
        &[("window", window), ("by", Some("workflow"))],
    )
    .await?;
    // Sparklines: per minute over the last hour, per hour over longer ranges.
    let step = if range == "1h" { "minute" } else { "hour" };
    let series = get(
        client,
        &["metrics"],
        &[("window", window), ("by", Some(step))],
    )
    .await?;
    // SLOs: the server's own periodic evaluation when it is at most two minutes old (SLO windows
    // are minutes to days long), so polls cost no evaluation.
    // SLOs, reviews and audit verification are optional: a server without SLOs, workflows or
    // policies answers with an error that the dashboard shows as empty.
    let slos = refused
        .ask(
            "slo",
            client.get::<Value>(&["slo"], &[("max_age", Some("2m"))]),
        )
        .await
        .unwrap_or(Value::Null);
    let reviews = refused.ask("reviews", client.reviews(false)).await;
    let verification = if verify {
        Some(refused.ask("verify", client.verify_audit()).await)
    } else {
        None
    };
    let decisions = refused
        .ask(
            "decisions",
            client.sql(
                "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, decision, \
                 array_to_string(policies, ',') AS policies FROM audit ORDER BY seq DESC LIMIT 200",
            ),
        )
        .await
        .unwrap_or(Value::Null);
    let runs = refused
        .ask(
            "runs",
            client.sql(
                "SELECT run_id, workflow, outcome, duration_ms, cost_usd, \
                 CAST(start_time AS VARCHAR) AS start_time FROM runs ORDER BY start_time DESC LIMIT 200",
            ),
        )
        .await
        .unwrap_or(Value::Null);
    let audit = audit_summary(&verification);
    Ok(Snapshot {
        status,
        workflows: data::workflows(&metrics),
        series: data::series(&series),
        drift_psi: data::drift(&metrics),
        slos: data::slos(&slos),
        reviews: reviews
            .map(|r| data::reviews(&r.reviews))
            .unwrap_or_default(),
        decisions: data::decisions(&decisions),
        runs: data::runs(&runs),
        audit,
    })
}

/// The audit line of a snapshot: the verification's finding, empty when not verified this poll.
fn audit_summary(verification: &Option<Option<custos_api::Verification>>) -> String {
    match verification {
        None => String::new(),
        Some(None) => "audit verification unavailable".to_string(),
        Some(Some(v)) => format!(
            "{} record(s), {}; last record {} ({})",
            v.records,
            match &v.finding {
                None => "chain intact".to_string(),
                Some(f) => format!("TAMPERED: {}", serde_json::to_string(f).unwrap_or_default()),
            },
            v.last_seq,
            v.last_hash.chars().take(16).collect::<String>()
        ),
    }
}

/// Loads a drill-down: the runs that burned an SLO's budget (`/api/slo/{name}/runs`), the spans
/// of one run (`/api/sql` over `spans`), one audit record (`/api/sql` over `audit`), or a review
/// task with its context (`/api/reviews/{id}`).
pub async fn load(client: &Client, request: &Request) -> Result<Detail> {
    Ok(match request {
        Request::SloRuns(name) => {
            let limit = crate::app::DRILL_LIMIT.to_string();
            let body = get(client, &["slo", name, "runs"], &[("limit", Some(&limit))]).await?;
            Detail::Runs(data::runs(&body["runs"]))
        }
        Request::Trace(run_id) => {
            let q = format!(
                "SELECT span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, \
                 status_code, status_message, attributes FROM spans WHERE run_id = '{}' \
                 ORDER BY start_time_unix_nano LIMIT {}",
                run_id.replace('\'', "''"),
                crate::app::DRILL_LIMIT
            );
            Detail::Spans(data::waterfall(&sql(client, &q).await?))
        }
        Request::Record(seq) => {
            let seq =
                u64::try_from(*seq).map_err(|_| Error::Api(format!("no audit record {seq}")))?;
            Detail::Record(Box::new(client.audit_record(seq).await.map_err(api)?))
        }
        Request::Review(id) => {
            let task = client.review(id).await.map_err(api)?;
            Detail::Review(Box::new(data::review_detail(&task)))
        }
    })
}

/// Sends a review decision (`POST /api/reviews/{id}/approve|reject`); the server authorizes
/// and audits it.
pub async fn decide(client: &Client, d: &Decide) -> Result<data::Decided> {
    // The server takes the reviewer from the token.
    let body = ReviewDecision {
        reviewer: None,
        reason: d.reason.clone(),
    };
    let answer = client.decide(&d.id, d.approve, &body).await.map_err(api)?;
    Ok(data::decided(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering every request with `status`, counting the requests.
    async fn answering(
        status: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"error":"`Custos::User::\"ben\"` may not `read_audit`"}"#;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), count)
    }

    #[tokio::test]
    async fn a_refused_read_is_asked_once_and_other_failures_again() {
        let (url, count) = answering("403 Forbidden").await;
        let client = Client::new(&url).unwrap();
        let mut refused = Refused::default();
        for _ in 0..3 {
            assert!(refused.ask("verify", client.verify_audit()).await.is_none());
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(refused.contains("verify"));
        // A server error is not a refusal: it is asked again next poll.
        let (url, count) = answering("500 Internal Server Error").await;
        let client = Client::new(&url).unwrap();
        for _ in 0..2 {
            assert!(refused.ask("runs", client.sql("SELECT 1")).await.is_none());
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(!refused.contains("runs"));
    }
}
