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

/// Fetches everything the dashboard shows; `range` is the metrics window (`1h`, `24h`, `7d`).
/// Verifying the audit chain reads the whole log, so it is asked for only when `verify` is set;
/// otherwise the snapshot's `audit` is empty and the dashboard keeps the last verification.
pub async fn fetch(client: &Client, range: &str, verify: bool) -> Result<Snapshot> {
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
    let slos = get(client, &["slo"], &[("max_age", Some("2m"))])
        .await
        .unwrap_or(Value::Null);
    let reviews = client.reviews(false).await.ok();
    let verification = if verify {
        Some(client.verify_audit().await.ok())
    } else {
        None
    };
    let decisions = sql(
        client,
        "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, decision, \
         array_to_string(policies, ',') AS policies FROM audit ORDER BY seq DESC LIMIT 200",
    )
    .await
    .unwrap_or(Value::Null);
    let runs = sql(
        client,
        "SELECT run_id, workflow, outcome, duration_ms, cost_usd, \
         CAST(start_time AS VARCHAR) AS start_time FROM runs ORDER BY start_time DESC LIMIT 200",
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
