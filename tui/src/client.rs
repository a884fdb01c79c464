//! Reads a [`Snapshot`] from a server's API (`/api/status`, `/api/metrics`, `/api/slo`,
//! `/api/reviews`, `/api/sql` over the `audit` table and the `runs` view, `/api/audit/verify`),
//! loads drill-downs ([`load`]) and sends review decisions ([`decide`]).

use serde_json::{Value, json};

use crate::app::{Decide, Detail, Request};
use crate::data::{self, Snapshot};
use crate::{Error, Result};

async fn answer(url: &str, resp: reqwest::Result<reqwest::Response>) -> Result<Value> {
    let resp = resp.map_err(|e| Error::Api(format!("cannot reach `{url}`: {e}")))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(v)
    } else {
        Err(Error::Api(format!(
            "`{url}` answered {status}: {}",
            v["error"].as_str().unwrap_or_default()
        )))
    }
}

async fn get(client: &reqwest::Client, url: String) -> Result<Value> {
    answer(&url, client.get(&url).send().await).await
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Result<Value> {
    answer(&url, client.post(&url).json(&body).send().await).await
}

async fn sql(client: &reqwest::Client, base: &str, q: &str) -> Result<Value> {
    post(client, format!("{base}/api/sql"), json!({ "sql": q })).await
}

/// `base` + `/api/<segments…>`, each segment percent-encoded.
fn api_url(base: &str, segments: &[&str]) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| Error::Api(format!("invalid server URL `{base}`: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| Error::Api(format!("invalid server URL `{base}`")))?
        .pop_if_empty()
        .push("api")
        .extend(segments);
    Ok(url.to_string())
}

/// Fetches everything the dashboard shows; `range` is the metrics window (`1h`, `24h`, `7d`).
/// Verifying the audit chain reads the whole log, so it is asked for only when `verify` is set;
/// otherwise the snapshot's `audit` is empty and the dashboard keeps the last verification.
pub async fn fetch(
    client: &reqwest::Client,
    server: &str,
    range: &str,
    verify: bool,
) -> Result<Snapshot> {
    let base = server.trim_end_matches('/');
    let status: data::Status =
        serde_json::from_value(get(client, format!("{base}/api/status")).await?)
            .map_err(|e| Error::Api(format!("unexpected `/api/status` answer: {e}")))?;
    let metrics = get(
        client,
        format!("{base}/api/metrics?window={range}&by=workflow"),
    )
    .await?;
    // Sparklines: per minute over the last hour, per hour over longer ranges.
    let step = if range == "1h" { "minute" } else { "hour" };
    let series = get(
        client,
        format!("{base}/api/metrics?window={range}&by={step}"),
    )
    .await?;
    // SLOs: the server's own periodic evaluation when it is at most two minutes old (SLO windows
    // are minutes to days long), so polls cost no evaluation.
    // SLOs, reviews and audit verification are optional: a server without SLOs, workflows or
    // policies answers with an error that the dashboard shows as empty.
    let slos = get(client, format!("{base}/api/slo?max_age=2m"))
        .await
        .unwrap_or(Value::Null);
    let reviews = get(client, format!("{base}/api/reviews"))
        .await
        .unwrap_or(Value::Null);
    let verification = if verify {
        Some(
            get(client, format!("{base}/api/audit/verify"))
                .await
                .unwrap_or(Value::Null),
        )
    } else {
        None
    };
    let decisions = sql(
        client,
        base,
        "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, decision, \
         array_to_string(policies, ',') AS policies FROM audit ORDER BY seq DESC LIMIT 200",
    )
    .await
    .unwrap_or(Value::Null);
    let runs = sql(
        client,
        base,
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
        reviews: data::reviews(&reviews),
        decisions: data::decisions(&decisions),
        runs: data::runs(&runs),
        audit,
    })
}

/// The audit line of a snapshot: the verification's finding, empty when not verified this poll.
fn audit_summary(verification: &Option<Value>) -> String {
    match verification {
        None => String::new(),
        Some(Value::Null) => "audit verification unavailable".to_string(),
        Some(verify) => {
            let finding = &verify["finding"];
            format!(
                "{} record(s), {}; last record {} ({})",
                verify["records"],
                if finding.is_null() {
                    "chain intact".to_string()
                } else {
                    format!("TAMPERED: {finding}")
                },
                verify["last_seq"],
                verify["last_hash"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(16)
                    .collect::<String>()
            )
        }
    }
}

/// Loads a drill-down: the runs that burned an SLO's budget (`/api/slo/{name}/runs`), the spans
/// of one run (`/api/sql` over `spans`), one audit record (`/api/sql` over `audit`), or a review
/// task with its context (`/api/reviews/{id}`).
pub async fn load(client: &reqwest::Client, server: &str, request: &Request) -> Result<Detail> {
    let base = server.trim_end_matches('/');
    Ok(match request {
        Request::SloRuns(name) => {
            let url = api_url(base, &["slo", name, "runs"])?;
            let body = get(client, format!("{url}?limit={}", crate::app::DRILL_LIMIT)).await?;
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
            Detail::Spans(data::waterfall(&sql(client, base, &q).await?))
        }
        Request::Record(seq) => {
            let q = format!(
                "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, \
                 decision, policies, advice, errors, context, policy_hash, prev_hash, hash \
                 FROM audit WHERE seq = {seq}"
            );
            match data::audit_record(&sql(client, base, &q).await?) {
                Some(r) => Detail::Record(Box::new(r)),
                None => return Err(Error::Api(format!("no audit record {seq}"))),
            }
        }
        Request::Review(id) => {
            let body = get(client, api_url(base, &["reviews", id])?).await?;
            Detail::Review(Box::new(data::review_detail(&body)))
        }
    })
}

/// Sends a review decision (`POST /api/reviews/{id}/approve|reject`); the server authorizes
/// and audits it.
pub async fn decide(client: &reqwest::Client, server: &str, d: &Decide) -> Result<data::Decided> {
    let base = server.trim_end_matches('/');
    let verb = if d.approve { "approve" } else { "reject" };
    let body = post(
        client,
        api_url(base, &["reviews", &d.id, verb])?,
        json!({ "reviewer": d.reviewer, "reason": d.reason }),
    )
    .await?;
    Ok(data::decided(&body))
}
