//! The Runs screen and its drill-downs: recent runs (or the runs that burned an SLO), and one
//! run's spans as a waterfall with the selected span's attributes.
use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row};

use super::Theme;
use super::widgets::{block, clip, count, dur, short_time, sorted, table};
use crate::app::App;
use crate::data::SpanRow;

pub(super) fn runs(f: &mut Frame<'_>, app: &App, area: Rect, theme: Theme, title: String) {
    let rows: Vec<Row> = app
        .run_list()
        .into_iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(short_time(&r.start_time)),
                Cell::from(clip(&r.workflow, 18)),
                Cell::from(r.outcome.clone()).style(theme.status(&r.outcome)),
                Cell::from(r.duration_ms.map(dur).unwrap_or_else(|| "-".into())),
                Cell::from(
                    r.cost_usd
                        .map(|c| format!("{c:.4}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(r.run_id.clone()),
            ])
        })
        .collect();
    let list = app.list();
    table(
        f,
        area,
        format!("{title} ({}){}", count(rows.len()), sorted(app, list)),
        true,
        &[
            ("start", Constraint::Length(14)),
            ("workflow", Constraint::Length(18)),
            ("outcome", Constraint::Length(11)),
            ("duration", Constraint::Length(8)),
            ("$", Constraint::Length(6)),
            ("run", Constraint::Min(8)),
        ],
        rows,
        app.selection(),
    );
}

/// A run's spans as a waterfall: the tree on the left, each span's bar on the run's timeline,
/// and the selected span's attributes below (Enter or `e` gives them the whole pane).
pub(super) fn waterfall(f: &mut Frame<'_>, app: &App, run: &str, area: Rect, theme: Theme) {
    let spans = app.span_list();
    let t0 = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.end_ns)
        .max()
        .unwrap_or(t0)
        .max(t0.saturating_add(1));
    let selected = spans.get(app.selection().min(spans.len().saturating_sub(1)));
    let attrs_h = if app.expanded {
        area.height.saturating_sub(5)
    } else {
        selected
            .map(|s| {
                u16::try_from(s.attributes.len())
                    .unwrap_or(u16::MAX)
                    .saturating_add(3)
            })
            .unwrap_or(3)
            .min(area.height / 2)
    };
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(4), Constraint::Length(attrs_h)])
        .split(area);
    let name_w: u16 = 28;
    let fixed = name_w + 8 + 6 + 2 + 2 + 4;
    let bar_w = parts[0].width.saturating_sub(fixed).max(4) as usize;
    let rows: Vec<Row> = spans
        .iter()
        .map(|s| span_row(s, (t0, t1), bar_w, name_w, theme))
        .collect();
    table(
        f,
        parts[0],
        format!(
            "Trace of run {run} ({} spans, {})",
            count(rows.len()),
            dur(t1.saturating_sub(t0) as f64 / 1e6)
        ),
        true,
        &[
            ("span", Constraint::Length(name_w)),
            ("duration", Constraint::Length(8)),
            ("status", Constraint::Length(6)),
            ("timeline", Constraint::Min(4)),
        ],
        rows,
        app.selection(),
    );
    f.render_widget(span_attributes(selected), parts[1]);
}

/// One span's row: its name indented by depth, duration, status and bar on the run's timeline
/// `[t0, t1]`.
fn span_row(
    s: &SpanRow,
    (t0, t1): (i64, i64),
    bar_w: usize,
    name_w: u16,
    theme: Theme,
) -> Row<'static> {
    let span = t1.saturating_sub(t0) as f64;
    let from = (s.start_ns.saturating_sub(t0) as f64 / span * bar_w as f64) as usize;
    let len = ((s.end_ns.saturating_sub(s.start_ns).max(0) as f64 / span) * bar_w as f64)
        .round()
        .max(1.0) as usize;
    let from = from.min(bar_w.saturating_sub(1));
    let len = len.min(bar_w - from);
    let bar = format!("{}{}", " ".repeat(from), "█".repeat(len));
    let status = if s.status.is_empty() {
        "unset".to_string()
    } else {
        s.status.clone()
    };
    Row::new(vec![
        Cell::from(clip(
            &format!("{}{}", "  ".repeat(s.depth), s.name),
            name_w as usize,
        )),
        Cell::from(dur(s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6)),
        Cell::from(status.clone()).style(theme.status(if status == "error" {
            "failure"
        } else {
            &status
        })),
        Cell::from(bar).style(theme.fg(if status == "error" {
            Color::Red
        } else {
            Color::Cyan
        })),
    ])
}

pub(super) fn span_attributes(span: Option<&&SpanRow>) -> Paragraph<'static> {
    let Some(s) = span else {
        return Paragraph::new("no spans stored for this run yet")
            .block(block("Attributes", false));
    };
    let mut lines = Vec::new();
    if !s.message.is_empty() {
        lines.push(Line::from(format!("status message: {}", s.message)));
    }
    let key_w = s
        .attributes
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        .min(32);
    for (k, v) in &s.attributes {
        lines.push(Line::from(vec![
            Span::styled(
                format!("{k:<key_w$}  "),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(v.clone()),
        ]));
    }
    Paragraph::new(lines)
        .wrap(ratatui::widgets::Wrap { trim: false })
        .block(block(
            &format!("Attributes of {} ({})", s.name, s.span_id),
            false,
        ))
}
