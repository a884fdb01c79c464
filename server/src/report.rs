//! `custos audit report`: a compliance report over a period, from the audit log and the spans.
//!
//! Sections: scope, policy decisions by policy and outcome, deploy gate results, human oversight,
//! the change log of model and prompt versions with their gate approvals, SLO attainment, denials
//! and incidents, the integrity check, retention. Every section shows the SQL it was computed with
//! (the same SQL anyone can run with `custos sql`). Written as a self-contained HTML file with
//! inline SVG charts, Markdown, CSV (one file per section) and JSON, plus `manifest.json` with each
//! file's SHA-256 and the audit chain's last hash (to anchor it elsewhere).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use custos_analytics::metrics::sql_timestamp;
use custos_analytics::slo::SloSet;
use custos_analytics::{Analytics, QueryResult};
use custos_audit::Verification;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A bar chart: labels and values.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// What the bars measure.
    pub title: String,
    /// `(label, value)` bars.
    pub bars: Vec<(String, f64)>,
    /// Unit suffix for values.
    pub unit: String,
}

/// One section of the report: a table, the SQL behind it, notes, maybe a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Stable id (file names, anchors).
    pub id: String,
    /// Title.
    pub title: String,
    /// What the section shows and how to read it.
    pub summary: String,
    /// The SQL behind the table.
    pub sql: Vec<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, as displayed.
    pub rows: Vec<Vec<String>>,
    /// Findings worth a reader's attention.
    pub notes: Vec<String>,
    /// A chart of the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Period start (inclusive).
    pub from: DateTime<Utc>,
    /// Period end (exclusive).
    pub to: DateTime<Utc>,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// custos version.
    pub version: String,
    /// The data directory.
    pub data_dir: String,
    /// The integrity check of the whole audit log.
    pub integrity: Verification,
    /// Sections in order.
    pub sections: Vec<Section>,
}

/// Report output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// One self-contained HTML file.
    Html,
    /// Markdown.
    Md,
    /// One CSV per section.
    Csv,
    /// The report as JSON.
    Json,
}

impl ReportFormat {
    /// Parses a comma-separated list like `html,md`.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f = match part {
                "html" => Self::Html,
                "md" | "markdown" => Self::Md,
                "csv" => Self::Csv,
                "json" => Self::Json,
                other => {
                    return Err(Error::Gate(format!(
                        "unknown report format `{other}`; use html, md, csv, json (comma-separated)"
                    )));
                }
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err(Error::Gate("`--format` names no format".into()));
        }
        Ok(out)
    }
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

/// Builds the report. `audit_dir` is the data directory's audit log; `slos` the SLO set, if any.
pub async fn build(
    analytics: &Analytics,
    data_dir: &Path,
    audit_dir: &Path,
    slos: Option<&SloSet>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<AuditReport> {
    if to <= from {
        return Err(Error::Gate(format!(
            "`--to` ({}) must be after `--from` ({})",
            to.to_rfc3339(),
            from.to_rfc3339()
        )));
    }
    let integrity = custos_audit::verify(audit_dir)?;
    let in_audit = period_filter("time", from, to);
    let in_spans = period_filter("start_time", from, to);
    let mut sections = Vec::new();

    // Scope.
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
    sections.push(Section {
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
            bars: rows.iter().map(|r| (format!("{} ({})", r[0], r[1]), num(&r[2]))).collect(),
            unit: String::new(),
        }),
        columns,
        rows,
        notes,
    });

    // Policy decisions by policy and outcome.
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
    sections.push(Section {
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
    });

    // Deploy gate results.
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
    sections.push(Section {
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
    });

    // Human oversight.
    let sql_reviewers = format!(
        "SELECT coalesce(human_reviewer, '(unknown)') AS reviewer, count(*) AS reviews, \
         count(*) FILTER (WHERE human_override) AS overrides, \
         round(approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY review_ms) / 1000.0, 1) AS p50_time_to_decision_s, \
         round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY review_ms) / 1000.0, 1) AS p95_time_to_decision_s \
         FROM decisions WHERE {in_spans} AND human_reviewed GROUP BY 1 ORDER BY 2 DESC"
    );
    let sql_totals = format!(
        "SELECT workflow, count(*) AS decisions, count(*) FILTER (WHERE human_reviewed) AS reviewed, \
         count(*) FILTER (WHERE human_override) AS overridden FROM decisions WHERE {in_spans} \
         GROUP BY 1 ORDER BY 1"
    );
    let (columns, rows) = table(analytics, &sql_reviewers).await?;
    let (_, totals) = table(analytics, &sql_totals).await?;
    let notes: Vec<String> = totals
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
    sections.push(Section {
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
    });

    // Change log of model and prompt versions.
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
    sections.push(Section {
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
    });

    // SLO attainment.
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
    sections.push(slo_section);

    // Denials and incidents.
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
    sections.push(Section {
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
    });

    // Integrity.
    sections.push(Section {
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
    });

    // Retention.
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
    sections.push(Section {
        id: "retention".into(),
        title: "Retention status".into(),
        summary: "How far back the audit log and the spans go.".into(),
        sql: vec![sql],
        columns,
        rows,
        notes,
        chart: None,
    });

    Ok(AuditReport {
        from,
        to,
        generated_at: Utc::now(),
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: data_dir.display().to_string(),
        integrity,
        sections,
    })
}

/// A gate decision as the change log matches it to versions.
#[derive(Debug, Clone)]
struct GateOutcome {
    workflow: String,
    kind: String,
    candidate: String,
    decision: String,
    seq: String,
    time: String,
}

/// The last day the period covers (its end is exclusive).
fn last_day(r: &AuditReport) -> String {
    (r.to - chrono::Duration::nanoseconds(1))
        .format("%Y-%m-%d")
        .to_string()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escaped prose with `backticked` spans as `<code>`.
fn html_prose(s: &str) -> String {
    let escaped = html_escape(s);
    let parts: Vec<&str> = escaped.split('`').collect();
    if parts.len().is_multiple_of(2) {
        // An unpaired backtick: leave the text as it is.
        return escaped;
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                format!("<code>{p}</code>")
            } else {
                (*p).to_string()
            }
        })
        .collect()
}

/// A horizontal bar chart as inline SVG.
fn svg_chart(c: &Chart) -> String {
    let bars: Vec<&(String, f64)> = c.bars.iter().take(24).collect();
    if bars.is_empty() {
        return String::new();
    }
    let max = bars
        .iter()
        .map(|(_, v)| v.abs())
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let (label_w, bar_w, row_h) = (260.0, 360.0, 22.0);
    let height = 30.0 + row_h * bars.len() as f64;
    let mut out = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">\n<text x=\"0\" y=\"16\" class=\"ct\">{}</text>\n",
        html_escape(&c.title),
        label_w + bar_w + 90.0,
        label_w + bar_w + 90.0,
        html_escape(&c.title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let w = (v.abs() / max * bar_w).max(1.0);
        let class = if *v < 0.0 { "bar neg" } else { "bar" };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"cl\" text-anchor=\"end\">{}</text><rect x=\"{}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" class=\"{class}\"/><text x=\"{}\" y=\"{}\" class=\"cv\">{}{}</text>",
            label_w - 8.0,
            y + 14.0,
            html_escape(label),
            label_w,
            row_h - 6.0,
            label_w + w + 6.0,
            y + 14.0,
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            },
            html_escape(&c.unit)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The report as one self-contained HTML page.
pub fn render_html(r: &AuditReport) -> String {
    let mut out = String::new();
    let title = format!(
        "custos audit report {} to {}",
        r.from.format("%Y-%m-%d"),
        last_day(r)
    );
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<style>
body{{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2433;margin:0;background:#f6f7f9}}
main{{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}}
h1{{font-size:26px;margin:8px 0 4px}} h2{{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #e3e6eb;padding-bottom:4px}}
.meta{{color:#5b6475}} .ok{{color:#146c2e;font-weight:600}} .bad{{color:#b3261e;font-weight:600}}
table{{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}}
th,td{{border:1px solid #e3e6eb;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f0f2f5}} tr:nth-child(even) td{{background:#fafbfc}}
td{{max-width:420px;overflow-wrap:anywhere}}
details{{margin:6px 0}} summary{{cursor:pointer;color:#3b4a6b}}
pre{{background:#f4f5f7;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}}
ul.notes li{{margin:2px 0}} nav a{{margin-right:12px}}
.chart .bar{{fill:#3b6fd8}} .chart .neg{{fill:#c0392b}} .chart text{{font-size:12px;fill:#1d2433}} .chart .ct{{font-weight:600}}
</style></head><body><main>
<h1>{t}</h1>
<p class="meta">Generated {g} by custos {v} from <code>{d}</code>. Period: {f} to {to} (UTC, end exclusive).</p>
<p>Audit log integrity: {integrity}</p>
<nav>"#,
        t = html_escape(&title),
        g = r.generated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        v = html_escape(&r.version),
        d = html_escape(&r.data_dir),
        f = r.from.to_rfc3339_opts(SecondsFormat::Secs, true),
        to = r.to.to_rfc3339_opts(SecondsFormat::Secs, true),
        integrity = match &r.integrity.finding {
            None => format!(
                "<span class=\"ok\">intact</span> ({} records, last hash <code>{}</code>)",
                r.integrity.records, r.integrity.last_hash
            ),
            Some(f) => format!(
                "<span class=\"bad\">TAMPERED</span>: {}",
                html_escape(&f.message)
            ),
        }
    );
    for s in &r.sections {
        let _ = write!(out, "<a href=\"#{}\">{}</a>", s.id, html_escape(&s.title));
    }
    out.push_str("</nav>\n");
    for s in &r.sections {
        let _ = writeln!(
            out,
            "<section id=\"{}\"><h2>{}</h2><p>{}</p>",
            s.id,
            html_escape(&s.title),
            html_prose(&s.summary)
        );
        if !s.notes.is_empty() {
            out.push_str("<ul class=\"notes\">");
            for n in &s.notes {
                let _ = write!(out, "<li>{}</li>", html_prose(n));
            }
            out.push_str("</ul>\n");
        }
        if let Some(c) = &s.chart {
            out.push_str(&svg_chart(c));
        }
        if s.rows.is_empty() {
            out.push_str("<p class=\"meta\">No rows.</p>\n");
        } else {
            out.push_str("<table><thead><tr>");
            for c in &s.columns {
                let _ = write!(out, "<th>{}</th>", html_escape(c));
            }
            out.push_str("</tr></thead><tbody>\n");
            for row in &s.rows {
                out.push_str("<tr>");
                for cell in row {
                    let _ = write!(out, "<td>{}</td>", html_escape(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table>\n");
        }
        for sql in &s.sql {
            let _ = writeln!(
                out,
                "<details><summary>SQL</summary><pre>{}</pre></details>",
                html_escape(sql)
            );
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main></body></html>\n");
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as Markdown.
pub fn render_md(r: &AuditReport) -> String {
    let mut out = format!(
        "# custos audit report {} to {}\n\nGenerated {} by custos {} from `{}`. Period: {} to {} (UTC, end exclusive).\n\nAudit log integrity: {}\n",
        r.from.format("%Y-%m-%d"),
        last_day(r),
        r.generated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        r.version,
        r.data_dir,
        r.from.to_rfc3339_opts(SecondsFormat::Secs, true),
        r.to.to_rfc3339_opts(SecondsFormat::Secs, true),
        match &r.integrity.finding {
            None => format!(
                "**intact** ({} records, last hash `{}`)",
                r.integrity.records, r.integrity.last_hash
            ),
            Some(f) => format!("**TAMPERED**: {}", f.message),
        }
    );
    for s in &r.sections {
        let _ = write!(out, "\n## {}\n\n{}\n\n", s.title, s.summary);
        for n in &s.notes {
            let _ = writeln!(out, "- {n}");
        }
        if !s.notes.is_empty() {
            out.push('\n');
        }
        if s.rows.is_empty() {
            out.push_str("No rows.\n");
        } else {
            let _ = writeln!(
                out,
                "| {} |",
                s.columns
                    .iter()
                    .map(|c| md_cell(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(out, "|{}", "---|".repeat(s.columns.len()));
            for row in &s.rows {
                let _ = writeln!(
                    out,
                    "| {} |",
                    row.iter()
                        .map(|c| md_cell(c))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }
        for sql in &s.sql {
            let _ = write!(out, "\n```sql\n{}\n```\n", sql.trim());
        }
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A section as CSV.
pub fn render_csv(s: &Section) -> String {
    let mut out = String::new();
    let line = |cells: &[String]| {
        cells
            .iter()
            .map(|c| csv_cell(c))
            .collect::<Vec<_>>()
            .join(",")
    };
    out.push_str(&line(&s.columns));
    out.push('\n');
    for row in &s.rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// One written file of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestEntry {
    /// File name within the output directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

/// Writes the report in `formats` into `out` and a `manifest.json`; returns the manifest entries.
pub fn write(r: &AuditReport, out: &Path, formats: &[ReportFormat]) -> Result<Vec<ManifestEntry>> {
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Gate(format!("cannot create `{}`: {e}", out.display())))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in formats {
        match f {
            ReportFormat::Html => files.push(("report.html".into(), render_html(r).into_bytes())),
            ReportFormat::Md => files.push(("report.md".into(), render_md(r).into_bytes())),
            ReportFormat::Json => files.push((
                "report.json".into(),
                serde_json::to_vec_pretty(r)
                    .map_err(|e| Error::Gate(format!("cannot render JSON: {e}")))?,
            )),
            ReportFormat::Csv => {
                for s in &r.sections {
                    files.push((format!("{}.csv", s.id), render_csv(s).into_bytes()));
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (name, bytes) in &files {
        let path: PathBuf = out.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| Error::Gate(format!("cannot write `{}`: {e}", path.display())))?;
        entries.push(ManifestEntry {
            file: name.clone(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
    }
    let manifest = serde_json::json!({
        "generator": format!("custos {}", r.version),
        "generated_at": r.generated_at,
        "period": {"from": r.from, "to": r.to},
        "audit_log": {
            "records": r.integrity.records,
            "last_seq": r.integrity.last_seq,
            "last_hash": r.integrity.last_hash,
            "intact": r.integrity.ok(),
        },
        "files": entries,
    });
    let path = out.join("manifest.json");
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Gate(format!("cannot render the manifest: {e}")))?;
    std::fs::write(&path, text)
        .map_err(|e| Error::Gate(format!("cannot write `{}`: {e}", path.display())))?;
    Ok(entries)
}
