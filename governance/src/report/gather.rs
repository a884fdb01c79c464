//! Gathering the report: one function per section, each running its SQL over the views and the
//! `audit` table and shaping the rows, notes and chart the section shows.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use custos_analytics::metrics::sql_timestamp;
use custos_analytics::slo::SloSet;
use custos_analytics::{Analytics, QueryResult};
use custos_audit::Verification;
use serde_json::Value;

use super::{Chart, Section};
use crate::Result;

/// The report's period and its SQL filters.
pub(super) struct Period {
    /// Start (inclusive).
    pub(super) from: DateTime<Utc>,
    /// End (exclusive).
    pub(super) to: DateTime<Utc>,
    /// The period as a filter on the audit table's `time`.
    pub(super) in_audit: String,
    /// The period as a filter on the views' `start_time`.
    pub(super) in_spans: String,
}

impl Period {
    /// The period `from`..`to` with its filters.
    pub(super) fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            in_audit: period_filter("time", from, to),
            in_spans: period_filter("start_time", from, to),
        }
    }
}

/// A gate decision as the change log matches it to versions.
#[derive(Debug, Clone)]
pub(super) struct GateOutcome {
    workflow: String,
    kind: String,
    candidate: String,
    decision: String,
    seq: String,
    time: String,
}

fn cells(r: &QueryResult) -> (Vec<String>, Vec<Vec<String>>) {
    let columns = r.schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    let options = arrow::util::display::FormatOptions::default().with_null("");
    for batch in &r.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).ok()
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    (columns, rows)
}

fn num(cell: &str) -> f64 {
    cell.parse().unwrap_or(0.0)
}

async fn table(analytics: &Analytics, sql: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    Ok(cells(&analytics.query(sql).await?))
}

fn period_filter(column: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "{column} >= {} AND {column} < {}",
        sql_timestamp(from),
        sql_timestamp(to)
    )
}

fn pct(n: f64, d: f64) -> String {
    if d > 0.0 {
        format!("{:.1} %", 100.0 * n / d)
    } else {
        "-".into()
    }
}

/// Scope: the workflows that ran in the period, the services that ran them, the policy sets in
/// effect.
pub(super) async fn scope(analytics: &Analytics, p: &Period) -> Result<Section> {
    let in_audit = &p.in_audit;
    let in_spans = &p.in_spans;
    let (from, to) = (p.from, p.to);
    let sql_systems = format!(
        "SELECT workflow, service_name, count(*) AS runs, \
         count(*) FILTER (WHERE outcome = 'success') AS successes, \
         min(start_time) AS first_run, max(start_time) AS last_run \
         FROM runs WHERE {in_spans} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let sql_sets = format!(
        "SELECT policy_hash, min(time) AS first_used, max(time) AS last_used, count(*) AS records \
         FROM audit WHERE {in_audit} GROUP BY 1 ORDER BY 2"
    );
    let (columns, rows) = table(analytics, &sql_systems).await?;
    let (_, sets) = table(analytics, &sql_sets).await?;
    let mut notes = vec![format!(
        "policy sets in effect: {}",
        if sets.is_empty() {
            "none recorded in the period".to_string()
        } else {
            sets.iter()
                .map(|r| format!("`{}` ({} records)", r[0], r[3]))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )];
    if rows.is_empty() {
        notes.push("no workflow runs in the period".into());
    }
    Ok(Section {
        id: "scope".into(),
        title: "Scope".into(),
        summary: format!(
            "Period {} to {} (UTC, end exclusive). Systems: the automated workflows that ran in the period and the services that ran them.",
            from.to_rfc3339_opts(SecondsFormat::Secs, true),
            to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        sql: vec![sql_systems, sql_sets],
        chart: Some(Chart {
            title: "runs per workflow".into(),
            bars: rows
                .iter()
                .map(|r| (format!("{} ({})", r[0], r[1]), num(&r[2])))
                .collect(),
            unit: String::new(),
        }),
        columns,
        rows,
        notes,
    })
}

/// Policy decisions by policy and outcome.
pub(super) async fn decisions(analytics: &Analytics, p: &Period) -> Result<Section> {
    let in_audit = &p.in_audit;
    let sql = format!(
        "SELECT kind, decision, CASE WHEN cardinality(policies) = 0 THEN '(none: default deny or errors)' \
         ELSE array_to_string(policies, ', ') END AS determining_policies, count(*) AS decisions \
         FROM audit WHERE {in_audit} AND kind <> 'policy_change' GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC"
    );
    let (columns, rows) = table(analytics, &sql).await?;
    let mut by_outcome: BTreeMap<String, f64> = BTreeMap::new();
    for r in &rows {
        *by_outcome.entry(format!("{} {}", r[0], r[1])).or_default() += num(&r[3]);
    }
    Ok(Section {
        id: "decisions".into(),
        title: "Policy decisions by policy and outcome".into(),
        summary: "Every recorded governance decision in the period (deploy gate, runtime authorization, human review), by the policies that determined it.".into(),
        sql: vec![sql],
        columns,
        notes: if rows.is_empty() {
            vec!["no decisions were recorded in the period".into()]
        } else {
            Vec::new()
        },
        rows,
        chart: Some(Chart {
            title: "decisions by kind and outcome".into(),
            bars: by_outcome.into_iter().collect(),
            unit: String::new(),
        }),
    })
}

/// Deploy gate results, and each gate decision for the change log to match versions against.
pub(super) async fn gate(analytics: &Analytics, p: &Period) -> Result<(Section, Vec<GateOutcome>)> {
    let in_audit = &p.in_audit;
    let sql = format!(
        "SELECT seq, time, principal, resource, decision, array_to_string(policies, ', ') AS policies, context \
         FROM audit WHERE {in_audit} AND kind = 'gate' ORDER BY seq"
    );
    let r = analytics.query(&sql).await?;
    let (_, raw) = cells(&r);
    let mut gate_rows = Vec::new();
    let mut approvals: Vec<GateOutcome> = Vec::new();
    for row in &raw {
        let ctx: Value = serde_json::from_str(&row[6]).unwrap_or(Value::Null);
        let change = &ctx["change"];
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let metrics = &ctx["evaluated"]["metrics"];
        let workflow = text(&change["workflow"]);
        let candidate = text(&change["candidate"]);
        approvals.push(GateOutcome {
            workflow: workflow.clone(),
            kind: text(&change["change"]),
            candidate: candidate.clone(),
            decision: row[4].clone(),
            seq: row[0].clone(),
            time: row[1].clone(),
        });
        gate_rows.push(vec![
            row[0].clone(),
            row[1].clone(),
            workflow,
            format!(
                "{} {} -> {}",
                text(&change["change"]),
                text(&change["current"]),
                candidate
            ),
            row[2].clone(),
            row[4].clone(),
            if row[5].is_empty() {
                "(none)".into()
            } else {
                row[5].clone()
            },
            metrics["sample_size"].to_string().replace("null", "-"),
            text(&metrics["override_rate_delta"]),
            text(&metrics["confidence_psi"]),
        ]);
    }
    let denied = gate_rows.iter().filter(|r| r[5] == "deny").count();
    let section = Section {
        id: "gate".into(),
        title: "Deploy gate results".into(),
        summary: "Every `custos gate` decision: what was asked, by whom, what was measured on the canary, and the determining policies. Change fields come from each record's `context`.".into(),
        sql: vec![sql],
        columns: [
            "seq", "time", "workflow", "change", "requested_by", "decision", "policies",
            "sample_size", "override_rate_delta", "confidence_psi",
        ]
        .map(String::from)
        .to_vec(),
        notes: vec![format!(
            "{} gate decision(s): {} allowed, {denied} denied",
            gate_rows.len(),
            gate_rows.len() - denied
        )],
        chart: None,
        rows: gate_rows,
    };
    Ok((section, approvals))
}

/// ` AND (…)` keeping, for each workflow of the period that names `trusted_sources`, only the
/// decisions from those sources; nothing when no workflow names any (or there are no policies).
async fn trusted_only(
    analytics: &Analytics,
    p: &Period,
    engine: Option<&custos_policy::engine::Engine>,
) -> Result<(String, Vec<String>)> {
    let Some(engine) = engine else {
        return Ok((String::new(), Vec::new()));
    };
    let sql = format!(
        "SELECT DISTINCT workflow FROM decisions WHERE {} AND workflow IS NOT NULL ORDER BY 1",
        p.in_spans
    );
    let (_, rows) = table(analytics, &sql).await?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let (mut clauses, mut notes) = (Vec::new(), Vec::new());
    for wf in rows.iter().filter_map(|r| r.first()) {
        match engine.trusted_sources(wf) {
            Some(sources) => {
                notes.push(format!(
                    "`{wf}`: only decisions sent by its trusted sources ({}) are counted",
                    if sources.is_empty() {
                        "none".to_string()
                    } else {
                        sources.join(", ")
                    }
                ));
                clauses.push(format!(
                    "(workflow = {}{})",
                    quote(wf),
                    custos_analytics::canary::source_filter(Some(&sources))
                ));
            }
            None => clauses.push(format!("workflow = {}", quote(wf))),
        }
    }
    if notes.is_empty() {
        return Ok((String::new(), notes));
    }
    Ok((format!(" AND ({})", clauses.join(" OR ")), notes))
}

/// Human oversight: reviewers, overrides, time to decision; per workflow only the decisions from
/// its trusted sources.
pub(super) async fn oversight(
    analytics: &Analytics,
    p: &Period,
    engine: Option<&custos_policy::engine::Engine>,
) -> Result<Section> {
    let (trusted, trust_notes) = trusted_only(analytics, p, engine).await?;
    let in_spans = &format!("{}{trusted}", p.in_spans);
    let sql_reviewers = format!(
        "SELECT coalesce(human_reviewer, '(unknown)') AS reviewer, count(*) AS reviews, \
         count(*) FILTER (WHERE human_override) AS overrides, \
         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY review_ms) / 1000.0, 1) AS p50_time_to_decision_s, \
         round(percentile_cont(0.95) WITHIN GROUP (ORDER BY review_ms) / 1000.0, 1) AS p95_time_to_decision_s \
         FROM decisions WHERE {in_spans} AND human_reviewed GROUP BY 1 ORDER BY 2 DESC"
    );
    let sql_totals = format!(
        "SELECT workflow, count(*) AS decisions, count(*) FILTER (WHERE human_reviewed) AS reviewed, \
         count(*) FILTER (WHERE human_override) AS overridden FROM decisions WHERE {in_spans} \
         GROUP BY 1 ORDER BY 1"
    );
    let (columns, rows) = table(analytics, &sql_reviewers).await?;
    let (_, totals) = table(analytics, &sql_totals).await?;
    let mut notes: Vec<String> = totals
        .iter()
        .map(|t| {
            format!(
                "`{}`: {} decisions, {} reviewed by a person ({}), {} overridden ({} of reviewed)",
                t[0],
                t[1],
                t[2],
                pct(num(&t[2]), num(&t[1])),
                t[3],
                pct(num(&t[3]), num(&t[2]))
            )
        })
        .collect();
    notes.extend(trust_notes);
    Ok(Section {
        id: "oversight".into(),
        title: "Human oversight".into(),
        summary: "Who verified automated decisions (EU AI Act Art. 14), how often they overrode them, and how long a decision waited for them.".into(),
        sql: vec![sql_reviewers, sql_totals],
        chart: Some(Chart {
            title: "reviews per reviewer".into(),
            bars: rows.iter().map(|r| (r[0].clone(), num(&r[1]))).collect(),
            unit: String::new(),
        }),
        columns,
        rows,
        notes,
    })
}

/// The change log of model and prompt versions, each with its gate approval.
pub(super) async fn changes(
    analytics: &Analytics,
    p: &Period,
    approvals: &[GateOutcome],
) -> Result<Section> {
    let in_spans = &p.in_spans;
    let sql = format!(
        "SELECT workflow, step, model, model_version, prompt_version, min(start_time) AS first_seen, \
         max(start_time) AS last_seen, count(*) AS decisions FROM decisions WHERE {in_spans} \
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 6"
    );
    let (mut columns, mut rows) = table(analytics, &sql).await?;
    columns.push("gate approval".into());
    let (mut unapproved, mut served_denied) = (0, 0);
    for r in &mut rows {
        let matching: Vec<&GateOutcome> = approvals
            .iter()
            .filter(|g| {
                g.workflow == r[0]
                    && ((g.kind == "prompt" && g.candidate == r[4])
                        || (g.kind == "model" && g.candidate == r[3]))
            })
            .collect();
        let allowed = matching.iter().rev().find(|g| g.decision == "allow");
        let denied = matching.iter().rev().find(|g| g.decision != "allow");
        r.push(match (allowed, denied) {
            (Some(g), _) => format!("allowed ({}), audit seq {} at {}", g.kind, g.seq, g.time),
            (None, Some(g)) => {
                served_denied += 1;
                format!(
                    "DENIED ({}), audit seq {} at {}: served without an allow",
                    g.kind, g.seq, g.time
                )
            }
            (None, None) => {
                unapproved += 1;
                "none recorded".into()
            }
        });
    }
    Ok(Section {
        id: "changes".into(),
        title: "Change log: model and prompt versions".into(),
        summary: "Every model and prompt version that made decisions in the period, when it was first and last seen, and the deploy gate approval recorded for it.".into(),
        sql: vec![sql],
        columns,
        notes: vec![
            format!(
                "{served_denied} version(s) served decisions although the gate denied them (canary traffic before the gate ran, or deployed around it)"
            ),
            format!(
                "{unapproved} version(s) without any gate decision in the period (baselines deployed before it, or deployed around the gate)"
            ),
        ],
        rows,
        chart: None,
    })
}

/// SLO attainment: each SLO over its own period ending at the period end.
pub(super) async fn slos(
    analytics: &Analytics,
    slos: Option<&SloSet>,
    to: DateTime<Utc>,
) -> Result<Section> {
    let mut slo_section = Section {
        id: "slos".into(),
        title: "SLO attainment".into(),
        summary: format!(
            "Each SLO over its own period ending at {}.",
            to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        sql: Vec::new(),
        columns: [
            "slo",
            "objective",
            "period",
            "sli",
            "error_budget_remaining",
            "status",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
        notes: Vec::new(),
        chart: None,
    };
    match slos {
        None => slo_section
            .notes
            .push("no SLO file configured (`--slos` or rules/slos.yaml)".into()),
        Some(set) => {
            let report = custos_analytics::slo::evaluate(analytics, set, to).await?;
            for (s, def) in report.slos.iter().zip(&set.slos) {
                slo_section.sql.push(format!(
                    "-- {}: errors\n{}\n-- {}: total\n{}",
                    s.name,
                    def.error_query.trim(),
                    s.name,
                    def.total_query.trim()
                ));
                slo_section.rows.push(vec![
                    s.name.clone(),
                    format!("{} %", s.objective_percent),
                    s.period.clone(),
                    s.sli.map_or("-".into(), |v| format!("{:.3} %", v * 100.0)),
                    s.error_budget_remaining
                        .map_or("-".into(), |v| format!("{:.1} %", v * 100.0)),
                    s.status.clone(),
                ]);
            }
            slo_section.chart = Some(Chart {
                title: "error budget remaining (%)".into(),
                bars: report
                    .slos
                    .iter()
                    .map(|s| {
                        (
                            s.name.clone(),
                            s.error_budget_remaining.unwrap_or(0.0) * 100.0,
                        )
                    })
                    .collect(),
                unit: " %".into(),
            });
            let breached: Vec<&str> = report
                .slos
                .iter()
                .filter(|s| s.error_budget_remaining.is_some_and(|b| b < 0.0))
                .map(|s| s.name.as_str())
                .collect();
            if !breached.is_empty() {
                slo_section
                    .notes
                    .push(format!("error budget overspent: {}", breached.join(", ")));
            }
        }
    }
    Ok(slo_section)
}

/// Denials and incidents: every denied request; failed and escalated runs per day.
pub(super) async fn denials(analytics: &Analytics, p: &Period) -> Result<Section> {
    let in_audit = &p.in_audit;
    let in_spans = &p.in_spans;
    let sql_denials = format!(
        "SELECT seq, time, kind, principal, action, resource, array_to_string(policies, ', ') AS policies, \
         array_to_string(advice, '; ') AS advice, array_to_string(errors, '; ') AS errors \
         FROM audit WHERE {in_audit} AND decision = 'deny' ORDER BY seq"
    );
    let sql_failures = format!(
        "SELECT date_trunc('day', start_time) AS day, workflow, count(*) FILTER (WHERE outcome = 'failure') AS failed_runs, \
         count(*) FILTER (WHERE outcome = 'escalated') AS escalated_runs, count(*) AS runs \
         FROM runs WHERE {in_spans} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let (columns, rows) = table(analytics, &sql_denials).await?;
    let (_, failures) = table(analytics, &sql_failures).await?;
    let mut notes = vec![format!("{} denial(s) in the period", rows.len())];
    for f in failures.iter().filter(|f| num(&f[2]) > 0.0) {
        notes.push(format!(
            "{} `{}`: {} failed and {} escalated of {} runs",
            f[0].get(..10).unwrap_or(&f[0]),
            f[1],
            f[2],
            f[3],
            f[4]
        ));
    }
    Ok(Section {
        id: "denials".into(),
        title: "Denials and incidents".into(),
        summary: "Every denied request with its determining policies, advice and errors; failed and escalated runs per day.".into(),
        sql: vec![sql_denials, sql_failures],
        chart: Some(Chart {
            title: "failed runs per day and workflow".into(),
            bars: failures
                .iter()
                .map(|f| (format!("{} {}", f[0].get(..10).unwrap_or(&f[0]), f[1]), num(&f[2])))
                .collect(),
            unit: String::new(),
        }),
        columns,
        rows,
        notes,
    })
}

/// The integrity check of the whole audit log.
pub(super) fn integrity(integrity: &Verification) -> Section {
    Section {
        id: "integrity".into(),
        title: "Integrity check".into(),
        summary: "`custos audit verify` over the whole audit log (not only the period): every hash recomputed, the chain and sequence followed, the head compared.".into(),
        sql: Vec::new(),
        columns: ["log", "records", "last_seq", "last_hash", "result"]
            .map(String::from)
            .to_vec(),
        rows: vec![vec![
            integrity.path.display().to_string(),
            integrity.records.to_string(),
            integrity.last_seq.to_string(),
            integrity.last_hash.clone(),
            match &integrity.finding {
                None => "intact".into(),
                Some(f) => format!("TAMPERED: {}", f.message),
            },
        ]],
        notes: vec![
            "anchor the chain: keep `last_hash` (also in manifest.json) somewhere the log's writers cannot change".into(),
        ],
        chart: None,
    }
}

/// Retention status: how far back the audit log and the spans go.
pub(super) async fn retention(analytics: &Analytics, to: DateTime<Utc>) -> Result<Section> {
    let sql = "SELECT 'audit' AS log, min(time) AS oldest, max(time) AS newest, count(*) AS records FROM audit \
               UNION ALL SELECT 'spans', min(start_time), max(start_time), count(*) FROM spans"
        .to_string();
    let (columns, rows) = table(analytics, &sql).await?;
    let mut notes = Vec::new();
    if let Some(oldest) = rows
        .first()
        .and_then(|r| DateTime::parse_from_rfc3339(&r[1].replace(' ', "T")).ok())
    {
        let days = (to - oldest.to_utc()).num_days();
        notes.push(format!(
            "the audit log covers {days} day(s) before the period end; custos never deletes audit records (EU AI Act Art. 19 and 26(6): keep logs at least six months)"
        ));
    }
    notes.push("span retention follows `[store] retention_days` of the server configuration; audit records are not subject to it".into());
    Ok(Section {
        id: "retention".into(),
        title: "Retention status".into(),
        summary: "How far back the audit log and the spans go.".into(),
        sql: vec![sql],
        columns,
        rows,
        notes,
        chart: None,
    })
}
