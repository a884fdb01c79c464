//! Rendering a metrics report: aligned text tables (groups, errors, drift) and CSV; and the
//! plain-text table the other reports share.

use std::fmt::Write as _;

use super::{MetricsReport, PSI_ACT, PSI_WATCH};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// Renders the report as aligned text tables.
pub fn render_table(r: &MetricsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "window {} .. {} ({}), by {}\n",
        r.window_start,
        r.window_end,
        r.window,
        r.by.name()
    );
    groups_table(&mut out, r);
    if !r.errors.is_empty() {
        errors_table(&mut out, r);
    }
    if !r.drift.is_empty() {
        drift_table(&mut out, r);
    }
    out
}

/// The groups' table.
fn groups_table(out: &mut String, r: &MetricsReport) {
    let header = [
        r.by.name(),
        "runs",
        "open",
        "success",
        "escal",
        "run p50/p95/p99 ms",
        "step p99 ms",
        "err rate",
        "retries",
        "review",
        "override",
        "spend $",
        "$/success",
        "unpriced",
    ];
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            vec![
                g.key.clone(),
                g.runs.to_string(),
                g.in_progress_runs.to_string(),
                pct(g.success_rate),
                pct(g.escalation_rate),
                format!(
                    "{}/{}/{}",
                    opt(g.run_latency_ms.p50, 0),
                    opt(g.run_latency_ms.p95, 0),
                    opt(g.run_latency_ms.p99, 0)
                ),
                opt(g.step_latency_ms.p99, 0),
                pct(g.error_rate),
                g.retries.to_string(),
                pct(g.human_review_rate),
                pct(g.override_rate),
                format!("{:.4}", g.spend_usd),
                opt(g.cost_per_success_usd, 5),
                g.unpriced_spans.to_string(),
            ]
        })
        .collect();
    out.push_str(&text_table(&header, &rows));
}

/// The error taxonomy's table.
fn errors_table(out: &mut String, r: &MetricsReport) {
    out.push_str("\nerrors\n");
    let rows: Vec<Vec<String>> = r
        .errors
        .iter()
        .map(|e| {
            vec![
                e.step_kind.clone(),
                e.class.clone(),
                e.connector.clone(),
                e.errors.to_string(),
                e.runs.to_string(),
            ]
        })
        .collect();
    out.push_str(&text_table(
        &["step kind", "class", "connector", "errors", "runs"],
        &rows,
    ));
}

/// The drift table.
fn drift_table(out: &mut String, r: &MetricsReport) {
    let _ = writeln!(
        out,
        "\nconfidence drift (current {} vs the {} before; PSI watch {PSI_WATCH}, act {PSI_ACT})",
        r.window, r.window
    );
    let rows: Vec<Vec<String>> = r
        .drift
        .iter()
        .map(|d| {
            vec![
                d.model.clone(),
                d.baseline_rows.to_string(),
                d.current_rows.to_string(),
                opt(d.psi, 3),
                opt(d.psi_noise, 3),
                opt(d.ks, 3),
                opt(d.baseline_mean, 3),
                opt(d.current_mean, 3),
                d.status.clone(),
            ]
        })
        .collect();
    out.push_str(&text_table(
        &[
            "model",
            "baseline n",
            "current n",
            "psi",
            "noise",
            "ks",
            "mean before",
            "mean now",
            "status",
        ],
        &rows,
    ));
}

/// Renders the groups as CSV (one row per group, every numeric field).
pub fn render_csv(r: &MetricsReport) -> String {
    let mut out = String::from(
        "key,runs,finished_runs,in_progress_runs,successes,failures,escalations,success_rate,\
         escalation_rate,runs_per_hour,run_p50_ms,run_p95_ms,run_p99_ms,step_p50_ms,step_p95_ms,\
         step_p99_ms,step_spans,error_spans,error_rate,retries,decisions,human_reviews,overrides,\
         human_review_rate,override_rate,spend_usd,computed_spend_usd,unpriced_spans,\
         cost_per_success_usd\n",
    );
    let o = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for g in &r.groups {
        let key = if g.key.contains([',', '"', '\n']) {
            format!("\"{}\"", g.key.replace('"', "\"\""))
        } else {
            g.key.clone()
        };
        let _ = writeln!(
            out,
            "{key},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            g.runs,
            g.finished_runs,
            g.in_progress_runs,
            g.successes,
            g.failures,
            g.escalations,
            o(g.success_rate),
            o(g.escalation_rate),
            g.runs_per_hour,
            o(g.run_latency_ms.p50),
            o(g.run_latency_ms.p95),
            o(g.run_latency_ms.p99),
            o(g.step_latency_ms.p50),
            o(g.step_latency_ms.p95),
            o(g.step_latency_ms.p99),
            g.step_spans,
            g.error_spans,
            o(g.error_rate),
            g.retries,
            g.decisions,
            g.human_reviews,
            g.overrides,
            o(g.human_review_rate),
            o(g.override_rate),
            g.spend_usd,
            g.computed_spend_usd,
            g.unpriced_spans,
            o(g.cost_per_success_usd),
        );
    }
    out
}

/// An aligned plain-text table: left-aligned columns two spaces apart, no borders, no trailing
/// blanks (comfy-table with no lines drawn).
pub fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    use comfy_table::{CellAlignment, Table, presets::NOTHING};
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    for column in table.column_iter_mut() {
        column
            .set_padding((0, 2))
            .set_cell_alignment(CellAlignment::Left);
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::text_table;

    #[test]
    fn text_tables_align_left_two_spaces_apart_with_no_trailing_blanks() {
        let rows = [
            vec!["a".to_string(), "1".into(), String::new()],
            vec!["longer name".into(), "22".into(), "z".into()],
            vec![String::new(), String::new(), String::new()],
        ];
        assert_eq!(
            text_table(&["name", "value", "x"], &rows),
            "name         value  x\na            1\nlonger name  22     z\n\n"
        );
    }
}
