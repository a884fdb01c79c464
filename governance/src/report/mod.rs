//! `custos audit report`: a compliance report over a period, from the audit log and the spans.
//!
//! Sections: scope, policy decisions by policy and outcome, deploy gate results, human oversight,
//! the change log of model and prompt versions with their gate approvals, SLO attainment, denials
//! and incidents, the integrity check, retention. Every section shows the SQL it was computed with
//! (the same SQL anyone can run with `custos sql`). Written as a self-contained HTML file with
//! inline SVG charts, Markdown, CSV (one file per section) and JSON, plus `manifest.json` with each
//! file's SHA-256 and the audit chain's last hash (to anchor it elsewhere).

mod gather;
mod render;

use std::path::Path;

use chrono::{DateTime, Utc};
use custos_analytics::Analytics;
use custos_analytics::slo::SloSet;
use custos_audit::Verification;
use serde::Serialize;

pub use render::{ManifestEntry, render_csv, render_html, render_md, write};

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
                    return Err(Error::Report(format!(
                        "unknown report format `{other}`; use html, md, csv, json (comma-separated)"
                    )));
                }
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err(Error::Report("`--format` names no format".into()));
        }
        Ok(out)
    }
}

/// Builds the report. `audit_dir` is the data directory's audit log; `slos` the SLO set, if any;
/// `engine` the policies, whose workflows' `trusted_sources` decide whose decisions the oversight
/// section counts.
pub async fn build(
    analytics: &Analytics,
    data_dir: &Path,
    audit_dir: &Path,
    slos: Option<&SloSet>,
    engine: Option<&custos_policy::engine::Engine>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<AuditReport> {
    if to <= from {
        return Err(Error::Report(format!(
            "`--to` ({}) must be after `--from` ({})",
            to.to_rfc3339(),
            from.to_rfc3339()
        )));
    }
    let integrity = custos_audit::verify(audit_dir)?;
    let period = gather::Period::new(from, to);
    let mut sections = vec![
        gather::scope(analytics, &period).await?,
        gather::decisions(analytics, &period).await?,
    ];
    let (gate, approvals) = gather::gate(analytics, &period).await?;
    sections.push(gate);
    sections.push(gather::oversight(analytics, &period, engine).await?);
    sections.push(gather::changes(analytics, &period, &approvals).await?);
    sections.push(gather::slos(analytics, slos, to).await?);
    sections.push(gather::denials(analytics, &period).await?);
    sections.push(gather::integrity(&integrity));
    sections.push(gather::retention(analytics, to).await?);
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
