//! Rendering the report: one self-contained HTML page with inline SVG charts, Markdown, one CSV
//! per section, JSON, and writing the chosen formats with a `manifest.json` of their hashes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::SecondsFormat;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditReport, Chart, ReportFormat, Section};
use crate::{Error, Result};

/// The last day the period covers (its end is exclusive).
fn last_day(r: &AuditReport) -> String {
    (r.to - chrono::Duration::nanoseconds(1))
        .format("%Y-%m-%d")
        .to_string()
}

/// Prose with `backticked` spans as `<code>` (an unpaired backtick leaves the text as it is).
fn prose(s: &str) -> Markup {
    let parts: Vec<&str> = s.split('`').collect();
    let paired = !parts.len().is_multiple_of(2);
    html! {
        @if paired {
            @for (i, p) in parts.iter().enumerate() {
                @if i % 2 == 1 { code { (p) } } @else { (p) }
            }
        } @else {
            (s)
        }
    }
}

/// A bar's value as the chart prints it.
fn bar_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A horizontal bar chart as inline SVG.
fn svg_chart(c: &Chart) -> Markup {
    let bars: Vec<&(String, f64)> = c.bars.iter().take(24).collect();
    let max = bars
        .iter()
        .map(|(_, v)| v.abs())
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let (label_w, bar_w, row_h) = (260.0, 360.0, 22.0);
    let width = label_w + bar_w + 90.0;
    let height = 30.0 + row_h * bars.len() as f64;
    html! {
        @if !bars.is_empty() {
            svg class="chart" role="img" aria-label=(c.title) xmlns="http://www.w3.org/2000/svg"
                width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } {
                text x="0" y="16" class="ct" { (c.title) }
                @for (i, (label, v)) in bars.iter().enumerate() {
                    @let y = 28.0 + row_h * i as f64;
                    @let w = (v.abs() / max * bar_w).max(1.0);
                    text x=(label_w - 8.0) y=(y + 14.0) class="cl" text-anchor="end" { (label) }
                    rect x=(label_w) y=(y) width=(format!("{w:.1}")) height=(row_h - 6.0)
                        class=(if *v < 0.0 { "bar neg" } else { "bar" }) {}
                    text x=(label_w + w + 6.0) y=(y + 14.0) class="cv" { (bar_value(*v)) (c.unit) }
                }
            }
        }
    }
}

const STYLE: &str = r#"
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2433;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:26px;margin:8px 0 4px} h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #e3e6eb;padding-bottom:4px}
.meta{color:#5b6475} .ok{color:#146c2e;font-weight:600} .bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{border:1px solid #e3e6eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5} tr:nth-child(even) td{background:#fafbfc}
td{max-width:420px;overflow-wrap:anywhere}
details{margin:6px 0} summary{cursor:pointer;color:#3b4a6b}
pre{background:#f4f5f7;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
ul.notes li{margin:2px 0} nav a{margin-right:12px}
.chart .bar{fill:#3b6fd8} .chart .neg{fill:#c0392b} .chart text{font-size:12px;fill:#1d2433} .chart .ct{font-weight:600}
"#;

/// The report as one self-contained HTML page (maud: every value is escaped unless marked).
pub fn render_html(r: &AuditReport) -> String {
    let title = format!(
        "custos audit report {} to {}",
        r.from.format("%Y-%m-%d"),
        last_day(r)
    );
    let secs = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main {
                h1 { (title) }
                p class="meta" {
                    "Generated " (secs(&r.generated_at)) " by custos " (r.version) " from "
                    code { (r.data_dir) } ". Period: " (secs(&r.from)) " to " (secs(&r.to))
                    " (UTC, end exclusive)."
                }
                p {
                    "Audit log integrity: "
                    @match &r.integrity.finding {
                        None => {
                            span class="ok" { "intact" }
                            " (" (r.integrity.records) " records, last hash "
                            code { (r.integrity.last_hash) } ")"
                        }
                        Some(f) => { span class="bad" { "TAMPERED" } ": " (f.message) }
                    }
                }
                nav { @for s in &r.sections { a href={ "#" (s.id) } { (s.title) } } }
                @for s in &r.sections { (html_section(s)) }
            } }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// One section of the HTML page: title, summary, notes, chart, table and SQL.
fn html_section(s: &Section) -> Markup {
    html! {
        section id=(s.id) {
            h2 { (s.title) }
            p { (prose(&s.summary)) }
            @if !s.notes.is_empty() {
                ul class="notes" { @for n in &s.notes { li { (prose(n)) } } }
            }
            @if let Some(c) = &s.chart { (svg_chart(c)) }
            @if s.rows.is_empty() {
                p class="meta" { "No rows." }
            } @else {
                table {
                    thead { tr { @for c in &s.columns { th { (c) } } } }
                    tbody { @for row in &s.rows { tr { @for cell in row { td { (cell) } } } } }
                }
            }
            @for sql in &s.sql { details { summary { "SQL" } pre { (sql) } } }
        }
    }
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
        .map_err(|e| Error::Report(format!("cannot create `{}`: {e}", out.display())))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for f in formats {
        match f {
            ReportFormat::Html => files.push(("report.html".into(), render_html(r).into_bytes())),
            ReportFormat::Md => files.push(("report.md".into(), render_md(r).into_bytes())),
            ReportFormat::Json => files.push((
                "report.json".into(),
                serde_json::to_vec_pretty(r)
                    .map_err(|e| Error::Report(format!("cannot render JSON: {e}")))?,
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
            .map_err(|e| Error::Report(format!("cannot write `{}`: {e}", path.display())))?;
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
        .map_err(|e| Error::Report(format!("cannot render the manifest: {e}")))?;
    std::fs::write(&path, text)
        .map_err(|e| Error::Report(format!("cannot write `{}`: {e}", path.display())))?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(title: &str, cell: &str, finding: Option<custos_audit::Finding>) -> AuditReport {
        let t = |s: &str| s.parse().unwrap();
        AuditReport {
            from: t("2026-11-01T00:00:00Z"),
            to: t("2026-11-08T00:00:00Z"),
            generated_at: t("2026-11-08T01:00:00Z"),
            version: "0.1.0".into(),
            data_dir: "/srv/<data>".into(),
            integrity: custos_audit::Verification {
                path: "audit.log".into(),
                records: 3,
                last_seq: 3,
                last_hash: "ab12".into(),
                partial_tail: false,
                signed_by: None,
                anchor: None,
                finding,
            },
            sections: vec![Section {
                id: "decisions".into(),
                title: title.into(),
                summary: "who decided `what`, and <why>".into(),
                sql: vec!["SELECT 1 < 2".into()],
                columns: vec!["a&b".into()],
                rows: vec![vec![cell.into()]],
                notes: vec!["an unpaired ` stays".into()],
                chart: Some(Chart {
                    title: "bars \"q\"".into(),
                    bars: vec![("<l>".into(), 2.5), ("n".into(), -1.0)],
                    unit: "%".into(),
                }),
            }],
        }
    }

    #[test]
    fn every_value_on_the_page_is_escaped() {
        let html = render_html(&report(
            "<script>alert(1)</script>",
            "\"><img src=x onerror=alert(1)>",
            None,
        ));
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        for escaped in [
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
            "<th>a&amp;b</th>",
            "<code>/srv/&lt;data&gt;</code>",
            "who decided <code>what</code>, and &lt;why&gt;",
            "an unpaired ` stays",
            "aria-label=\"bars &quot;q&quot;\"",
            ">&lt;l&gt;</text>",
            "<pre>SELECT 1 &lt; 2</pre>",
            "<span class=\"ok\">intact</span> (3 records, last hash <code>ab12</code>)",
            "class=\"bar neg\"",
            ">2.5%</text>",
        ] {
            assert!(html.contains(escaped), "lacks `{escaped}`: {html}");
        }
        assert!(
            html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
            "{html}"
        );
    }

    #[test]
    fn a_tampered_log_says_so_in_red() {
        let finding = custos_audit::Finding {
            tamper: custos_audit::Tamper::Deleted,
            seq: 2,
            line: 2,
            message: "record 2 <gone>".into(),
        };
        let html = render_html(&report("t", "c", Some(finding)));
        assert!(
            html.contains("<span class=\"bad\">TAMPERED</span>: record 2 &lt;gone&gt;"),
            "{html}"
        );
    }
}
