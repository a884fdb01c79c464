//! Reads a [`Snapshot`] from a server's API (`/api/status`, `/api/metrics`, `/api/slo`,
//! `/api/reviews`, `/api/sql` over the `audit` table and the `runs` view, `/api/audit/verify`).

use serde_json::{Value, json};

use crate::data::{self, Snapshot};
use crate::{Error, Result};

/// Fetches everything the dashboard shows; `range` is the metrics window (`1h`, `24h`, `7d`).
pub async fn fetch(client: &reqwest::Client, server: &str, range: &str) -> Result<Snapshot> {
    let base = server.trim_end_matches('/');
    let get = |path: String| async move {
        let url = format!("{base}{path}");
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Api(format!("cannot reach `{url}`: {e}")))?;
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
    };
    let sql = |q: &'static str| async move {
        let url = format!("{base}/api/sql");
        let resp = client
            .post(&url)
            .json(&json!({ "sql": q }))
            .send()
            .await
            .map_err(|e| Error::Api(format!("cannot reach `{url}`: {e}")))?;
        Ok::<Value, Error>(resp.json().await.unwrap_or(Value::Null))
    };
    let status: data::Status = serde_json::from_value(get("/api/status".into()).await?)
        .map_err(|e| Error::Api(format!("unexpected `/api/status` answer: {e}")))?;
    let metrics = get(format!("/api/metrics?window={range}&by=workflow")).await?;
    let hourly_window = if range == "1h" { "24h" } else { range };
    let hourly = get(format!("/api/metrics?window={hourly_window}&by=hour")).await?;
    // SLOs, reviews and audit verification are optional: a server without SLOs, workflows or
    // policies answers with an error that the dashboard shows as empty.
    let slos = get("/api/slo".into()).await.unwrap_or(Value::Null);
    let reviews = get("/api/reviews".into()).await.unwrap_or(Value::Null);
    let verify = get("/api/audit/verify".into()).await.unwrap_or(Value::Null);
    let decisions = sql(
        "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, decision, \
         array_to_string(policies, ',') AS policies FROM audit ORDER BY seq DESC LIMIT 200",
    )
    .await
    .unwrap_or(Value::Null);
    let runs = sql(
        "SELECT run_id, workflow, outcome, duration_ms, CAST(start_time AS VARCHAR) AS start_time \
         FROM runs ORDER BY start_time DESC LIMIT 200",
    )
    .await
    .unwrap_or(Value::Null);
    let audit = if verify.is_null() {
        "audit verification unavailable".to_string()
    } else {
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
    };
    Ok(Snapshot {
        status,
        workflows: data::workflows(&metrics),
        series: data::series(&hourly),
        drift_psi: data::drift(&metrics),
        slos: data::slos(&slos),
        reviews: data::reviews(&reviews),
        decisions: data::decisions(&decisions),
        runs: data::runs(&runs),
        audit,
    })
}
