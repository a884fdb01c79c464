//! The Overview screen: tiles with sparklines, the SLO table, pending reviews and recent
//! denials.
use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::Theme;
use super::decisions::decisions;
use super::reviews::reviews;
use super::slos::slo_table;
use super::widgets::{num, pct, scaled, tile};
use crate::app::{App, Pane};
use crate::data::Snapshot;

pub(super) fn overview(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
    if app.expanded {
        return match app.pane {
            Pane::Slos => slo_table(f, app, area, theme, true),
            Pane::Reviews => reviews(f, app, area, theme, true, false),
            Pane::Denials => decisions(f, app, area, theme, true, true),
        };
    }
    let tiles_h = if area.height >= 16 { 4 } else { 3 };
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(tiles_h), Constraint::Min(3)])
        .split(area);
    tiles(f, s, parts[0], theme);
    let lower = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(parts[1]);
    slo_table(f, app, lower[0], theme, app.pane == Pane::Slos);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(lower[1]);
    reviews(f, app, right[0], theme, app.pane == Pane::Reviews, true);
    decisions(f, app, right[1], theme, app.pane == Pane::Denials, true);
}

/// The tiles: runs, p99, errors, overrides, $/success (worst workflow, with sparklines) and
/// drift.
fn tiles(f: &mut Frame<'_>, s: &Snapshot, area: Rect, theme: Theme) {
    let cells = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Ratio(1, 6); 6])
        .split(area);
    let runs: i64 = s.workflows.iter().map(|w| w.runs).sum();
    let worst = |g: fn(&crate::data::WorkflowRow) -> Option<f64>| {
        s.workflows.iter().filter_map(g).reduce(f64::max)
    };
    let series = &s.series;
    tile(
        f,
        cells[0],
        "runs",
        num(runs as f64),
        &scaled(series.iter().map(|p| p.runs), 1.0),
        theme,
    );
    tile(
        f,
        cells[1],
        "p99",
        worst(|w| w.p99_ms)
            .map(|v| format!("{} ms", num(v)))
            .unwrap_or_else(|| "-".into()),
        &scaled(series.iter().map(|p| p.p99_ms), 1.0),
        theme,
    );
    tile(
        f,
        cells[2],
        "errors",
        pct(worst(|w| w.error_rate)),
        &scaled(series.iter().map(|p| p.error_rate), 10_000.0),
        theme,
    );
    tile(
        f,
        cells[3],
        "overrides",
        pct(worst(|w| w.override_rate)),
        &scaled(series.iter().map(|p| p.override_rate), 10_000.0),
        theme,
    );
    tile(
        f,
        cells[4],
        "$/success",
        worst(|w| w.cost_per_success)
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into()),
        &scaled(series.iter().map(|p| p.cost_per_success), 1e6),
        theme,
    );
    tile(
        f,
        cells[5],
        "drift psi",
        s.drift_psi
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into()),
        &[],
        theme,
    );
}
