//! Rendering the report: one self-contained HTML page with inline SVG charts, Markdown, one CSV
//! per section, JSON, and writing the chosen formats with a `manifest.json` of their hashes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::SecondsFormat;
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
        html_section(&mut out, s);
    }
    out.push_str("</main></body></html>\n");
    out
}

/// One section of the HTML page: title, summary, notes, chart, table and SQL.
fn html_section(out: &mut String, s: &Section) {
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
