//! Reading the API's answers into the dashboard's rows: metrics into workflow rows and sparkline
//! series (idle buckets filled), SQL rows into decisions, runs, span waterfalls and audit records,
//! review tasks into list rows and the review screen.

use custos_api::ReviewTask;
use serde_json::Value;

use super::{
    Decided, DecisionRow, Point, PolicyView, ReviewDetail, ReviewRow, RunRow, SloRow, SpanRow,
    WorkflowRow,
};

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Reads the `/api/metrics` groups.
pub fn workflows(metrics: &Value) -> Vec<WorkflowRow> {
    metrics["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|g| WorkflowRow {
                    workflow: s(g, "key"),
                    runs: g["runs"].as_i64().unwrap_or(0),
                    success_rate: f(g, "success_rate"),
                    p99_ms: g["run_latency_ms"]["p99"].as_f64(),
                    error_rate: f(g, "error_rate"),
                    override_rate: f(g, "override_rate"),
                    cost_per_success: f(g, "cost_per_success_usd"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `/api/metrics?by=minute|hour|day` into a series, oldest first, with one point per
/// bucket of the whole window: buckets without runs are zeros, so a sparkline's time axis is true
/// (idle minutes show as gaps, the last bar is the current bucket). Other groupings are returned
/// as they are, sorted by key.
pub fn series(metrics: &Value) -> Vec<Point> {
    let mut v: Vec<Point> = metrics["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|g| Point {
                    key: s(g, "key"),
                    runs: g["runs"].as_f64().unwrap_or(0.0),
                    p99_ms: g["run_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    error_rate: f(g, "error_rate").unwrap_or(0.0),
                    override_rate: f(g, "override_rate").unwrap_or(0.0),
                    cost_per_success: f(g, "cost_per_success_usd").unwrap_or(0.0),
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    let step = match metrics["by"].as_str() {
        Some("minute") => 60,
        Some("hour") => 3600,
        Some("day") => 86_400,
        _ => return v,
    };
    let (Some(start), Some(end)) = (
        metrics["window_start"].as_str().and_then(epoch_secs),
        metrics["window_end"].as_str().and_then(epoch_secs),
    ) else {
        return v;
    };
    // The end is exclusive; a window ending on a bucket boundary has no point in that bucket.
    let (first, last) = (start.div_euclid(step), (end - 1).div_euclid(step));
    if last < first || last - first > 10_000 {
        return v;
    }
    let buckets: Option<Vec<i64>> = v
        .iter()
        .map(|p| epoch_secs(&p.key).map(|t| t.div_euclid(step)))
        .collect();
    // Keys this reader does not understand, or outside the window: the series as it came.
    let Some(buckets) = buckets.filter(|b| b.iter().all(|x| (first..=last).contains(x))) else {
        return v;
    };
    let mut by_bucket: std::collections::HashMap<i64, Point> = buckets.into_iter().zip(v).collect();
    (first..=last)
        .map(|b| {
            by_bucket.remove(&b).unwrap_or_else(|| Point {
                key: bucket_key(b * step, step),
                ..Point::default()
            })
        })
        .collect()
}

/// Seconds since the epoch of a UTC time written `YYYY-MM-DD[THH[:MM[:SS]]]…` (what the metrics
/// keys and window bounds look like); the rest (fractions, offset) is ignored.
fn epoch_secs(t: &str) -> Option<i64> {
    let num = |from: usize, len: usize| -> Option<i64> {
        t.get(from..from + len).and_then(|x| x.parse::<i64>().ok())
    };
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let h = num(11, 2).unwrap_or(0);
    let min = num(14, 2).unwrap_or(0);
    let sec = num(17, 2).unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The key of an empty bucket, in the metrics' own format.
fn bucket_key(secs: i64, step: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min) = (rest / 3600, rest % 3600 / 60);
    match step {
        60 => format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:00Z"),
        3600 => format!("{y:04}-{m:02}-{d:02}T{h:02}:00Z"),
        _ => format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// The highest PSI among the drift rows.
pub fn drift(metrics: &Value) -> Option<f64> {
    metrics["drift"]
        .as_array()?
        .iter()
        .filter_map(|d| f(d, "psi"))
        .reduce(f64::max)
}

/// Reads `/api/slo`.
pub fn slos(report: &Value) -> Vec<SloRow> {
    report["slos"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|x| SloRow {
                    name: s(x, "name"),
                    objective_percent: f(x, "objective_percent").unwrap_or(0.0),
                    budget_left: f(x, "error_budget_remaining"),
                    burn: x["windows"]
                        .as_array()
                        .and_then(|w| w.first())
                        .and_then(|w| f(w, "burn_rate")),
                    status: s(x, "status"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of `/api/reviews`.
pub fn reviews(tasks: &[ReviewTask]) -> Vec<ReviewRow> {
    tasks
        .iter()
        .map(|t| ReviewRow {
            id: t.id.clone(),
            workflow: t.workflow.clone(),
            queue: t.queue.clone(),
            priority: t.priority.clone(),
            created_ms: t.created_ms,
            confidence: t.context["confidence"].as_f64(),
            label: match &t.context["label"] {
                Value::Null => None,
                other => Some(text(other)),
            },
        })
        .collect()
}

/// Reads audit rows from `/api/sql`.
pub fn decisions(rows: &Value) -> Vec<DecisionRow> {
    rows.as_array()
        .map(|v| {
            v.iter()
                .map(|r| DecisionRow {
                    seq: r["seq"].as_i64().unwrap_or(0),
                    time: s(r, "time"),
                    kind: s(r, "kind"),
                    principal: s(r, "principal"),
                    action: s(r, "action"),
                    resource: s(r, "resource"),
                    decision: s(r, "decision"),
                    policies: s(r, "policies"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads run rows from `/api/sql`.
pub fn runs(rows: &Value) -> Vec<RunRow> {
    rows.as_array()
        .map(|v| {
            v.iter()
                .map(|r| RunRow {
                    run_id: s(r, "run_id"),
                    workflow: s(r, "workflow"),
                    outcome: s(r, "outcome"),
                    duration_ms: f(r, "duration_ms"),
                    cost_usd: f(r, "cost_usd"),
                    start_time: s(r, "start_time"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads span rows from `/api/sql` (`span_id, parent_span_id, name, start_time_unix_nano,
/// end_time_unix_nano, status_code, status_message, attributes`) into a waterfall: depth-first
/// from the roots, children by start time, each with its depth. Spans whose parent is missing are
/// roots.
pub fn waterfall(rows: &Value) -> Vec<SpanRow> {
    let spans: Vec<SpanRow> = rows
        .as_array()
        .map(|v| {
            v.iter()
                .map(|r| SpanRow {
                    span_id: s(r, "span_id"),
                    parent_span_id: Some(s(r, "parent_span_id")).filter(|p| !p.is_empty()),
                    name: s(r, "name"),
                    start_ns: r["start_time_unix_nano"].as_i64().unwrap_or(0),
                    end_ns: r["end_time_unix_nano"].as_i64().unwrap_or(0),
                    status: s(r, "status_code"),
                    message: s(r, "status_message"),
                    attributes: pairs(&r["attributes"]),
                    depth: 0,
                })
                .collect()
        })
        .unwrap_or_default();
    let ids: std::collections::HashSet<&str> = spans.iter().map(|x| x.span_id.as_str()).collect();
    let is_root = |x: &SpanRow| {
        x.parent_span_id
            .as_deref()
            .is_none_or(|p| !ids.contains(p) || p == x.span_id)
    };
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].start_ns, spans[i].span_id.clone()));
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = order
        .iter()
        .rev()
        .filter(|&&i| is_root(&spans[i]))
        .map(|&i| (i, 0))
        .collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let mut row = spans[i].clone();
        row.depth = depth;
        out.push(row);
        for &c in order.iter().rev() {
            if !seen[c] && spans[c].parent_span_id.as_deref() == Some(spans[i].span_id.as_str()) {
                stack.push((c, depth + 1));
            }
        }
    }
    // Cycles without a root: keep them, flat.
    for &i in &order {
        if !seen[i] {
            out.push(spans[i].clone());
        }
    }
    out
}

/// What the review screen shows of `GET /api/reviews/{id}`.
pub fn review_detail(t: &ReviewTask) -> ReviewDetail {
    let c = &t.context;
    let opt = |v: &Value| match v {
        Value::Null => None,
        other => Some(text(other)),
    };
    let policy = match &c["policy"] {
        Value::Null => None,
        p => Some(PolicyView {
            step: s(p, "step"),
            decision: s(&p["decision"], "decision"),
            policies: p["decision"]["policies"]
                .as_array()
                .map(|v| v.iter().map(text).collect())
                .unwrap_or_default(),
            advice: p["decision"]["advice"]
                .as_array()
                .map(|v| v.iter().map(text).collect())
                .unwrap_or_default(),
            audit_seq: p["decision"]["audit_seq"].as_u64(),
        }),
    };
    ReviewDetail {
        id: t.id.clone(),
        run_id: t.run_id.clone(),
        workflow: t.workflow.clone(),
        step: t.step.clone(),
        queue: t.queue.clone(),
        priority: t.priority.clone(),
        status: t.status.to_lowercase(),
        created_ms: t.created_ms,
        due_ms: t.due_ms,
        input: pairs(&c["input"]),
        proposal: match &c["proposal"] {
            Value::Null => String::new(),
            Value::String(x) => x.clone(),
            other => other.to_string(),
        },
        label: opt(&c["label"]),
        confidence: c["confidence"].as_f64(),
        model: opt(&c["model"]),
        prompt_version: opt(&c["prompt_version"]),
        decision_step: opt(&c["decision_step"]),
        policy,
        trace_id: opt(&c["trace_id"]),
        started_by: opt(&c["started_by"]),
    }
}

/// What the dashboard says of the answer to `POST /api/reviews/{id}/approve|reject`.
pub fn decided(answer: &custos_api::Decided) -> Decided {
    Decided {
        id: answer.task.id.clone(),
        decision: answer.task.status.clone(),
        reviewer: answer.task.reviewer.clone().unwrap_or_default(),
        audit_seq: Some(answer.audit_seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_round_trip_through_bucket_keys() {
        for key in [
            "1970-01-01T00:00:00Z",
            "2026-11-21T23:07:00Z",
            "2000-02-29T12:59:00Z",
        ] {
            assert_eq!(bucket_key(epoch_secs(key).unwrap(), 60), key);
        }
        assert_eq!(
            epoch_secs("2026-11-21T23:00Z"),
            epoch_secs("2026-11-21T23:00:00Z")
        );
        assert_eq!(epoch_secs("2026-11-21"), Some(1_795_219_200));
        assert_eq!(epoch_secs("not a time"), None);
        assert_eq!(epoch_secs("2026-13-01T00:00Z"), None);
    }

    #[test]
    fn minute_series_fill_idle_minutes_up_to_the_window_end() {
        let m = json!({
            "by": "minute",
            "window_start": "2026-11-21T22:00:30.5+00:00",
            "window_end": "2026-11-21T23:00:30.5+00:00",
            "groups": [
                {"key": "2026-11-21T22:10:00Z", "runs": 5},
                {"key": "2026-11-21T22:07:00Z", "runs": 2, "error_rate": 0.5}
            ]
        });
        let v = series(&m);
        // 22:00 … 23:00: 61 buckets (the window covers part of both ends).
        assert_eq!(v.len(), 61);
        assert_eq!(v[0].key, "2026-11-21T22:00:00Z");
        assert_eq!(v[60].key, "2026-11-21T23:00:00Z");
        assert_eq!((v[7].runs, v[7].error_rate), (2.0, 0.5));
        assert_eq!(v[10].runs, 5.0);
        assert_eq!(v.iter().map(|p| p.runs).sum::<f64>(), 7.0);
        // Other groupings stay as they are.
        let w = json!({"by": "workflow", "groups": [{"key": "b"}, {"key": "a"}]});
        let keys: Vec<String> = series(&w).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["a", "b"]);
        // Keys this reader does not understand: the series as it came, not zeros.
        let odd = json!({"by": "minute", "window_start": "2026-11-21T22:00:00Z",
            "window_end": "2026-11-21T23:00:00Z", "groups": [{"key": "22h07", "runs": 4}]});
        assert_eq!(
            series(&odd).iter().map(|p| p.runs).collect::<Vec<_>>(),
            [4.0]
        );
    }
}
