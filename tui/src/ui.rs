//! Drawing: a pure function of the [`App`] onto a ratatui frame.
//!
//! Focus and selection never rely on colour alone: the focused pane has a double border and a
//! `▶` in its title, the selected row a `>` marker. With `NO_COLOR` no colour is used at all.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState,
};

use crate::app::{App, Connection, Detail, Dialog, List, Mode, Pane, SCREENS, Screen, Stage};
use crate::data::{AuditRecord, ReviewDetail, Snapshot, SpanRow};

/// Colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// Use colours.
    pub color: bool,
}

impl Theme {
    /// Colours unless `NO_COLOR` is set (to anything non-empty).
    pub fn from_env() -> Self {
        Self {
            color: std::env::var("NO_COLOR")
                .map(|v| v.is_empty())
                .unwrap_or(true),
        }
    }
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn status(self, s: &str) -> Style {
        match s {
            "ok" | "allow" | "success" | "connected" => self.fg(Color::Green),
            "ticket" | "escalated" | "warning" => self.fg(Color::Yellow),
            "page" | "deny" | "failure" | "compensated" | "lost" => {
                self.fg(Color::Red).add_modifier(Modifier::BOLD)
            }
            _ => Style::default(),
        }
    }
}

fn age(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms.saturating_sub(then_ms).max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86_400),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}%", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A duration for people: `45 ms`, `2.4 s`, `15m12s`, `2h05m`.
fn dur(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, s % 3600 / 60)
        }
    }
}

/// `2026-11-21 18:02:11` (or with a `T`) as `11-21 18:02:11`.
fn short_time(t: &str) -> String {
    let t: String = t.chars().skip(5).take(14).collect();
    t.replacen('T', " ", 1)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame<'_>, app: &App, theme: Theme) {
    let area = f.area();
    if area.width < 60 || area.height < 12 {
        return draw_small(f, app, theme);
    }
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(area);
    f.render_widget(header(app, theme), rows[0]);
    f.render_widget(tabs(app, theme), rows[1]);
    match &app.snapshot {
        None => f.render_widget(
            Paragraph::new(match &app.connection {
                Connection::Lost { error, .. } => format!("cannot reach {}: {error}", app.server),
                _ => format!("connecting to {} …", app.server),
            })
            .block(Block::default().borders(Borders::ALL)),
            rows[2],
        ),
        Some(_) if !app.stack.is_empty() => drill(f, app, rows[2], theme),
        Some(s) => match app.screen {
            Screen::Overview => overview(f, app, s, rows[2], theme),
            Screen::Slos => slo_table(f, app, rows[2], theme, true),
            Screen::Runs => runs(f, app, rows[2], theme, "Recent runs".into()),
            Screen::Reviews => reviews(f, app, rows[2], theme, true, false),
            Screen::Decisions => decisions(f, app, rows[2], theme, true, false),
            Screen::Audit => audit(f, app, s, rows[2], theme),
        },
    }
    f.render_widget(footer(app, theme), rows[3]);
    if let Some(d) = &app.dialog {
        dialog(f, app, d, area, theme);
    }
    if app.mode == Mode::Help {
        help(f, app, area);
    }
}

/// The innermost drill-down level.
fn drill(f: &mut Frame<'_>, app: &App, area: Rect, theme: Theme) {
    let Some(level) = app.stack.last() else {
        return;
    };
    let waiting = |f: &mut Frame<'_>, what: String| {
        let text = match &level.error {
            Some(e) => format!("cannot load {what}: {e}\n\nr retry · esc back"),
            None => format!("loading {what} …"),
        };
        f.render_widget(
            Paragraph::new(text)
                .wrap(ratatui::widgets::Wrap { trim: false })
                .block(block(&level.crumb(), true)),
            area,
        );
    };
    match (&level.request, &level.detail) {
        (crate::app::Request::SloRuns(name), Some(Detail::Runs(_))) => {
            runs(f, app, area, theme, format!("Runs that burned SLO {name}"))
        }
        (crate::app::Request::Trace(run), Some(Detail::Spans(_))) => {
            waterfall(f, app, run, area, theme)
        }
        (_, Some(Detail::Review(t))) => review_context(f, app, t, area, theme),
        (_, Some(Detail::Record(r))) => audit_record(f, r, app.selection(), area, theme),
        _ => waiting(f, level.crumb()),
    }
}

fn draw_small(f: &mut Frame<'_>, app: &App, theme: Theme) {
    let mut lines = vec![header(app, theme)];
    if let Some(s) = &app.snapshot {
        let runs: i64 = s.workflows.iter().map(|w| w.runs).sum();
        lines.push(Line::from(format!(
            "runs {runs} · reviews {}",
            s.reviews.len()
        )));
        for slo in &s.slos {
            lines.push(Line::from(vec![
                Span::raw(format!("{} ", clip(&slo.name, 16))),
                Span::styled(slo.status.clone(), theme.status(&slo.status)),
            ]));
        }
    }
    lines.push(Line::from(format!(
        "enlarge to 60×12 for the full view ({}×{}) · q quit",
        f.area().width,
        f.area().height
    )));
    f.render_widget(Paragraph::new(lines), f.area());
}

fn header(app: &App, theme: Theme) -> Line<'static> {
    let (state, style) = match &app.connection {
        Connection::Connecting => ("connecting".to_string(), Style::default()),
        Connection::Connected => ("connected".to_string(), theme.status("connected")),
        Connection::Lost { since_ms, .. } => (
            format!("LOST {} ago, retrying", age(app.now_ms, *since_ms)),
            theme.status("lost"),
        ),
    };
    let mut spans = vec![
        Span::styled("custos ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} · ",
            app.server
                .trim_start_matches("http://")
                .trim_start_matches("https://")
        )),
        Span::styled(state, style),
    ];
    if let Some(s) = &app.snapshot {
        let st = &s.status;
        spans.push(Span::raw(format!(
            " · {} spans/s · lag {} · flush {} · policy {}",
            app.ingest_rate.map(num).unwrap_or_else(|| "-".into()),
            num(st.memtable_rows as f64),
            st.last_flush_unix
                .map(|t| format!("{} ago", age(app.now_ms, (t as i64).saturating_mul(1000))))
                .unwrap_or_else(|| "never".into()),
            st.policy_hash
                .as_deref()
                .map(|h| clip(h, 8).trim_end_matches('…').to_string())
                .unwrap_or_else(|| "none".into()),
        )));
    }
    if app.frozen {
        spans.push(Span::styled(
            " · FROZEN",
            Style::default().add_modifier(Modifier::REVERSED),
        ));
    }
    Line::from(spans)
}

fn tabs(app: &App, _theme: Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, s) in SCREENS.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, s.title());
        if !app.stack.is_empty() && *s != app.screen {
            // Drilled in: the screen and the breadcrumbs take the line.
            continue;
        }
        if *s == app.screen {
            spans.push(Span::styled(
                format!("[{}]", label.trim()),
                Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ));
        } else {
            spans.push(Span::raw(label));
        }
    }
    if !app.stack.is_empty() {
        // Breadcrumbs: where Esc goes back to.
        let crumbs: Vec<String> = app.stack.iter().map(|l| l.crumb()).collect();
        spans.push(Span::styled(
            format!(" › {} (esc back)", crumbs.join(" › ")),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    } else {
        spans.push(Span::raw(format!("  range {}", app.range())));
    }
    if !app.filter.is_empty() {
        spans.push(Span::raw(format!("  filter /{}", app.filter)));
    }
    Line::from(spans)
}

fn footer(app: &App, theme: Theme) -> Line<'static> {
    if let Some(level) = app.stack.last()
        && level.detail.is_some()
        && let Some(e) = &level.error
        && app.mode == Mode::Normal
        && app.dialog.is_none()
    {
        // The data shown is the last good load.
        return Line::from(Span::styled(
            format!("reload failed, showing the last answer: {e}"),
            theme.status("deny"),
        ));
    }
    match app.mode {
        Mode::Filter => Line::from(format!("/{}▏  {}", app.input, app.hints())),
        Mode::Command => Line::from(format!(":{}▏  {}", app.input, app.hints())),
        _ => match &app.message {
            Some(m) => Line::from(m.clone()),
            None => Line::from(Span::styled(
                app.hints().to_string(),
                Style::default().add_modifier(Modifier::DIM),
            )),
        },
    }
}

fn block(title: &str, focused: bool) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL);
    if focused {
        b.border_type(BorderType::Double)
            .title(format!("▶ {title}"))
            .title_style(Style::default().add_modifier(Modifier::BOLD))
    } else {
        b.title(title.to_string())
    }
}

fn tile(f: &mut Frame<'_>, area: Rect, title: &str, value: String, data: &[u64], theme: Theme) {
    let b = block(title, false);
    let inner = b.inner(area);
    f.render_widget(b, area);
    if inner.height == 0 {
        return;
    }
    f.render_widget(
        Paragraph::new(value).style(Style::default().add_modifier(Modifier::BOLD)),
        Rect { height: 1, ..inner },
    );
    if inner.height > 1 {
        let spark = Rect {
            y: inner.y + 1,
            height: inner.height - 1,
            ..inner
        };
        let bars = fit(data, spark.width as usize);
        f.render_widget(
            Sparkline::default()
                .data(&bars)
                .style(theme.fg(Color::Cyan)),
            spark,
        );
    }
}

/// The whole series in `width` bars: consecutive points share a bar, which shows their highest
/// value (so a spike is never averaged away); a series narrower than `width` is drawn as is.
fn fit(data: &[u64], width: usize) -> Vec<u64> {
    if width == 0 || data.len() <= width {
        return data.to_vec();
    }
    (0..width)
        .map(|i| {
            let (from, to) = (i * data.len() / width, (i + 1) * data.len() / width);
            data[from..to.max(from + 1)]
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
        })
        .collect()
}

fn scaled(values: impl Iterator<Item = f64>, scale: f64) -> Vec<u64> {
    values
        .map(|v| (v.max(0.0) * scale).round() as u64)
        .collect()
}

fn overview(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
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
    let cells = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Ratio(1, 6); 6])
        .split(parts[0]);
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

/// A table's columns: header and width.
type Columns<'c> = &'c [(&'static str, Constraint)];

/// A table with a bold header, the selected row marked with `>` (and reversed) when focused.
fn table(
    f: &mut Frame<'_>,
    area: Rect,
    title: String,
    focused: bool,
    columns: Columns<'_>,
    rows: Vec<Row<'_>>,
    selected: usize,
) {
    let n = rows.len();
    let t = Table::new(rows, columns.iter().map(|c| c.1))
        .header(
            Row::new(columns.iter().map(|c| c.0))
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(block(&title, focused))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default();
    if focused && n > 0 {
        state.select(Some(selected.min(n - 1)));
    }
    f.render_stateful_widget(t, area, &mut state);
}

/// A drill-down's row count, `500+` when the server's answer was cut at the limit.
fn count(n: usize) -> String {
    if n >= crate::app::DRILL_LIMIT {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

/// ` · by KEY` when a list is not in its default order.
fn sorted(app: &App, list: List) -> String {
    let key = app.sort_key_of(list);
    if key == list.sort_keys()[0] {
        String::new()
    } else {
        format!(" · by {key}")
    }
}

fn slo_table(f: &mut Frame<'_>, app: &App, area: Rect, theme: Theme, focused: bool) {
    // Narrow panes drop the objective column.
    let wide = area.width >= 56;
    let rows: Vec<Row> = app
        .slo_list()
        .into_iter()
        .map(|x| {
            let mut cells = vec![
                Cell::from(clip(&x.name, 18)),
                Cell::from(pct(x.budget_left)),
                Cell::from(
                    x.burn
                        .map(|b| format!("{b:.2}x"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(x.status.clone()).style(theme.status(&x.status)),
            ];
            if wide {
                cells.insert(1, Cell::from(format!("{}%", x.objective_percent)));
            }
            Row::new(cells)
        })
        .collect();
    const WIDE: Columns = &[
        ("slo", Constraint::Min(12)),
        ("obj", Constraint::Length(6)),
        ("budget", Constraint::Length(8)),
        ("burn", Constraint::Length(7)),
        ("status", Constraint::Length(7)),
    ];
    const NARROW: Columns = &[
        ("slo", Constraint::Min(10)),
        ("budget", Constraint::Length(7)),
        ("burn", Constraint::Length(6)),
        ("status", Constraint::Length(6)),
    ];
    table(
        f,
        area,
        format!("SLOs ({}){}", rows.len(), sorted(app, List::Slos)),
        focused,
        if wide { WIDE } else { NARROW },
        rows,
        app.selection(),
    );
}

fn reviews(f: &mut Frame<'_>, app: &App, area: Rect, _theme: Theme, focused: bool, compact: bool) {
    let list = app.review_list();
    let oldest = list
        .iter()
        .map(|r| r.created_ms)
        .min()
        .map(|t| format!(", oldest {}", age(app.now_ms, t)))
        .unwrap_or_default();
    let title = format!(
        "Pending reviews ({}{oldest}){}",
        list.len(),
        sorted(app, List::Reviews)
    );
    let rows: Vec<Row> = list
        .iter()
        .map(|r| {
            let mut cells = vec![
                Cell::from(r.priority.clone()),
                Cell::from(age(app.now_ms, r.created_ms)),
                Cell::from(clip(&r.workflow, 18)),
                Cell::from(
                    r.confidence
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into()),
                ),
            ];
            if !compact {
                cells.push(Cell::from(r.queue.clone()));
                cells.push(Cell::from(r.label.clone().unwrap_or_default()));
                cells.push(Cell::from(r.id.clone()));
            }
            Row::new(cells)
        })
        .collect();
    const COMPACT: Columns = &[
        ("prio", Constraint::Length(6)),
        ("age", Constraint::Length(6)),
        ("workflow", Constraint::Min(8)),
        ("conf", Constraint::Length(5)),
    ];
    const FULL: Columns = &[
        ("prio", Constraint::Length(6)),
        ("age", Constraint::Length(6)),
        ("workflow", Constraint::Length(18)),
        ("conf", Constraint::Length(5)),
        ("queue", Constraint::Length(13)),
        ("proposal", Constraint::Length(10)),
        ("task", Constraint::Min(10)),
    ];
    table(
        f,
        area,
        title,
        focused,
        if compact { COMPACT } else { FULL },
        rows,
        app.selection(),
    );
}

fn decisions(
    f: &mut Frame<'_>,
    app: &App,
    area: Rect,
    theme: Theme,
    focused: bool,
    denials_only: bool,
) {
    let rows: Vec<Row> = app
        .decision_list(denials_only)
        .into_iter()
        .map(|d| {
            let mut cells = vec![
                Cell::from(d.seq.to_string()),
                Cell::from(d.decision.clone()).style(theme.status(&d.decision)),
                Cell::from(clip(&d.kind, 9)),
                Cell::from(d.policies.clone()),
            ];
            if !denials_only {
                cells.insert(1, Cell::from(clip(&d.time, 19)));
                cells.push(Cell::from(d.resource.clone()));
            }
            Row::new(cells)
        })
        .collect();
    let title = if denials_only {
        format!(
            "Recent denials ({}){}",
            rows.len(),
            sorted(app, List::Denials)
        )
    } else {
        format!(
            "Policy decisions ({}){}",
            rows.len(),
            sorted(app, List::Decisions)
        )
    };
    const DENIALS: Columns = &[
        ("seq", Constraint::Length(6)),
        ("dec", Constraint::Length(5)),
        ("kind", Constraint::Length(9)),
        ("policies", Constraint::Min(8)),
    ];
    const ALL: Columns = &[
        ("seq", Constraint::Length(6)),
        ("time", Constraint::Length(19)),
        ("decision", Constraint::Length(8)),
        ("kind", Constraint::Length(9)),
        ("policies", Constraint::Min(12)),
        ("resource", Constraint::Min(12)),
    ];
    table(
        f,
        area,
        title,
        focused,
        if denials_only { DENIALS } else { ALL },
        rows,
        app.selection(),
    );
}

fn runs(f: &mut Frame<'_>, app: &App, area: Rect, theme: Theme, title: String) {
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
fn waterfall(f: &mut Frame<'_>, app: &App, run: &str, area: Rect, theme: Theme) {
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
        .map(|s| {
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
        })
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

fn span_attributes(span: Option<&&SpanRow>) -> Paragraph<'static> {
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

/// What a reviewer needs to decide: input, proposal, the policy decision and its advice, trace.
fn review_context(f: &mut Frame<'_>, app: &App, t: &ReviewDetail, area: Rect, theme: Theme) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let field = |k: &str, v: String| {
        Line::from(vec![Span::styled(format!("{k:<11} "), bold), Span::raw(v)])
    };
    let mut lines = vec![
        field(
            "task",
            format!(
                "{} · {} · step {} · {}",
                t.workflow, t.queue, t.step, t.priority
            ),
        ),
        Line::from(vec![
            Span::styled(format!("{:<11} ", "status"), bold),
            Span::styled(t.status.clone(), theme.status(&t.status)),
            Span::raw(format!(
                " · waiting {} · {}",
                age(app.now_ms, t.created_ms),
                if t.due_ms == 0 {
                    "no deadline".to_string()
                } else if t.due_ms <= app.now_ms {
                    format!("overdue by {}", age(app.now_ms, t.due_ms))
                } else {
                    format!("due in {}", age(t.due_ms, app.now_ms))
                }
            )),
        ]),
    ];
    let input: Vec<String> = t.input.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    lines.push(field("input", input.join(" · ")));
    lines.push(field(
        "proposal",
        format!(
            "{}{}",
            t.label.clone().unwrap_or_else(|| clip(&t.proposal, 60)),
            t.confidence
                .map(|c| format!(" (confidence {c:.2})"))
                .unwrap_or_default()
        ),
    ));
    lines.push(field(
        "model",
        format!(
            "{} · prompt {} · step {}",
            t.model.as_deref().unwrap_or("-"),
            t.prompt_version.as_deref().unwrap_or("-"),
            t.decision_step.as_deref().unwrap_or("-")
        ),
    ));
    match &t.policy {
        Some(p) => {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<11} ", "policy"), bold),
                Span::styled(p.decision.clone(), theme.status(&p.decision)),
                Span::raw(format!(
                    " on step {} by {}{}",
                    p.step,
                    if p.policies.is_empty() {
                        "default deny (no permit applies)".to_string()
                    } else {
                        p.policies.join(", ")
                    },
                    p.audit_seq
                        .map(|s| format!(" · audit #{s}"))
                        .unwrap_or_default()
                )),
            ]));
            for a in &p.advice {
                lines.push(field("  advice", a.clone()));
            }
        }
        None => lines.push(field(
            "policy",
            "none: the workflow's own routing sent this run to review".into(),
        )),
    }
    lines.push(field(
        "trace",
        format!(
            "{} · run {} (enter: waterfall)",
            t.trace_id.as_deref().unwrap_or("-"),
            t.run_id
        ),
    ));
    lines.push(field(
        "reviewer",
        app.reviewer
            .clone()
            .unwrap_or_else(|| "none: start with --reviewer NAME to decide".into()),
    ));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block(&format!("Review {}", t.id), true)),
        area,
    );
}

/// One audit record: who asked what, the decision with its policies, advice and errors, the
/// request's context and the record's place in the hash chain.
fn audit_record(f: &mut Frame<'_>, r: &AuditRecord, scroll: usize, area: Rect, theme: Theme) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let field = |k: &str, v: String| {
        Line::from(vec![Span::styled(format!("{k:<11} "), bold), Span::raw(v)])
    };
    let mut lines = vec![
        field("time", format!("{} · kind {}", r.time, r.kind)),
        field("principal", r.principal.clone()),
        field("action", r.action.clone()),
        field("resource", r.resource.clone()),
        Line::from(vec![
            Span::styled(format!("{:<11} ", "decision"), bold),
            Span::styled(r.decision.clone(), theme.status(&r.decision)),
            Span::raw(if r.policies.is_empty() {
                " (no determining policy: default deny or errors)".to_string()
            } else {
                format!(" by {}", r.policies.join(", "))
            }),
        ]),
    ];
    lines.extend(r.advice.iter().map(|a| field("advice", a.clone())));
    lines.extend(r.errors.iter().map(|e| field("error", e.clone())));
    lines.push(field("policy set", r.policy_hash.clone()));
    lines.push(field(
        "hash",
        format!("{} (previous {})", r.hash, r.prev_hash),
    ));
    lines.push(Line::from(Span::styled("context", bold)));
    lines.extend(r.context.lines().map(|l| Line::from(l.to_string())));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block(&format!("Audit record #{}", r.seq), true))
            .scroll((scroll.min(u16::MAX as usize) as u16, 0)),
        area,
    );
}

/// The approve/reject dialog: the reason, then what will be recorded, then the answer.
fn dialog(f: &mut Frame<'_>, app: &App, d: &Dialog, area: Rect, theme: Theme) {
    let reviewer = app.reviewer.clone().unwrap_or_default();
    let verb = if d.approve { "Approve" } else { "Reject" };
    let mut lines = vec![Line::from(format!("reason: {}▏", d.reason))];
    match &d.stage {
        Stage::Reason => lines.push(Line::from("enter: review what will be recorded")),
        Stage::Confirm | Stage::Sending => {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "This will be sent and recorded:",
                Style::default().add_modifier(Modifier::BOLD),
            )));
            lines.extend(d.record(&reviewer).into_iter().map(Line::from));
            lines.push(Line::from(""));
            lines.push(Line::from(if d.stage == Stage::Sending {
                "sending…"
            } else {
                "y/enter send · n edit the reason · esc cancel"
            }));
        }
        Stage::Failed(e) => {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!("not recorded: {e}"),
                theme.status("deny"),
            )));
            lines.push(Line::from(
                "enter try again · n edit the reason · esc close",
            ));
        }
    }
    let w = 90.min(area.width);
    // Lines wrap inside the borders: count the wrapped height.
    let inner = w.saturating_sub(2).max(1) as usize;
    let wrapped: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let h = u16::try_from(wrapped)
        .unwrap_or(u16::MAX)
        .saturating_add(3)
        .min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block(
                &format!("{verb} review {} as {reviewer}", d.task.id),
                true,
            )),
        r,
    );
}

fn audit(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(3), Constraint::Min(3)])
        .split(area);
    f.render_widget(
        Paragraph::new(s.audit.clone()).block(block("Audit trail", false)),
        parts[0],
    );
    decisions(f, app, parts[1], theme, true, false);
}

fn help(f: &mut Frame<'_>, app: &App, area: Rect) {
    let lines = app.help_lines();
    let h = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_add(3)
        .min(area.height);
    let w = 76.min(area.width);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let mut text: Vec<Line> = vec![Line::from(format!("filter: {}▏", app.input))];
    text.extend(
        lines
            .iter()
            .map(|(k, d)| Line::from(format!("{k:>16}  {d}"))),
    );
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(text).block(block("Help", true)), r);
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn a_series_fits_its_width_keeping_spikes() {
        let hour: Vec<u64> = (0..60).map(|m| if m == 37 { 90 } else { 1 }).collect();
        let bars = fit(&hour, 11);
        assert_eq!(bars.len(), 11);
        assert_eq!(bars.iter().filter(|b| **b == 90).count(), 1);
        assert_eq!(fit(&[3, 4], 11), [3, 4]);
        assert_eq!(fit(&(0..120).collect::<Vec<u64>>(), 4), [29, 59, 89, 119]);
    }
}
