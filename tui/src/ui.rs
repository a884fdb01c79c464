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

use crate::app::{App, Connection, Mode, Pane, SCREENS, Screen};
use crate::data::Snapshot;

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
    let s = ((now_ms - then_ms).max(0) / 1000) as u64;
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
        Some(s) => match app.screen {
            Screen::Overview => overview(f, app, s, rows[2], theme),
            Screen::Slos => slo_table(f, app, s, rows[2], theme, true),
            Screen::Runs => runs(f, app, s, rows[2], theme),
            Screen::Reviews => reviews(f, app, s, rows[2], theme, true, false),
            Screen::Decisions => decisions(f, app, s, rows[2], theme, true, false),
            Screen::Audit => audit(f, app, s, rows[2], theme),
        },
    }
    f.render_widget(footer(app, theme), rows[3]);
    if app.mode == Mode::Help {
        help(f, app, area);
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
                .map(|t| format!("{} ago", age(app.now_ms, t as i64 * 1000)))
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
        if *s == app.screen {
            spans.push(Span::styled(
                format!("[{}]", label.trim()),
                Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ));
        } else {
            spans.push(Span::raw(label));
        }
    }
    spans.push(Span::raw(format!("  range {}", app.range())));
    if !app.filter.is_empty() {
        spans.push(Span::raw(format!("  filter /{}", app.filter)));
    }
    Line::from(spans)
}

fn footer(app: &App, _theme: Theme) -> Line<'static> {
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
        let tail = &data[data.len().saturating_sub(spark.width as usize)..];
        f.render_widget(
            Sparkline::default().data(tail).style(theme.fg(Color::Cyan)),
            spark,
        );
    }
}

fn scaled(values: impl Iterator<Item = f64>, scale: f64) -> Vec<u64> {
    values
        .map(|v| (v.max(0.0) * scale).round() as u64)
        .collect()
}

fn overview(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
    if app.expanded {
        return match app.pane {
            Pane::Slos => slo_table(f, app, s, area, theme, true),
            Pane::Reviews => reviews(f, app, s, area, theme, true, false),
            Pane::Denials => decisions(f, app, s, area, theme, true, true),
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
    slo_table(f, app, s, lower[0], theme, app.pane == Pane::Slos);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(lower[1]);
    reviews(f, app, s, right[0], theme, app.pane == Pane::Reviews, true);
    decisions(f, app, s, right[1], theme, app.pane == Pane::Denials, true);
}

#[allow(clippy::too_many_arguments)]
fn table<'a>(
    f: &mut Frame<'_>,
    area: Rect,
    title: String,
    focused: bool,
    header: Vec<&'static str>,
    rows: Vec<Row<'a>>,
    widths: Vec<Constraint>,
    selected: usize,
) {
    let n = rows.len();
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block(&title, focused))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default();
    if focused && n > 0 {
        state.select(Some(selected.min(n - 1)));
    }
    f.render_stateful_widget(t, area, &mut state);
}

fn slo_table(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme, focused: bool) {
    // Narrow panes drop the objective column.
    let wide = area.width >= 56;
    let rows: Vec<Row> = s
        .slos
        .iter()
        .filter(|x| app.matches(&format!("{x:?}")))
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
    let (header, widths) = if wide {
        (
            vec!["slo", "obj", "budget", "burn", "status"],
            vec![
                Constraint::Min(12),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(7),
            ],
        )
    } else {
        (
            vec!["slo", "budget", "burn", "status"],
            vec![
                Constraint::Min(10),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(6),
            ],
        )
    };
    table(
        f,
        area,
        format!("SLOs ({})", rows.len()),
        focused,
        header,
        rows,
        widths,
        app.selection(),
    );
}

fn reviews(
    f: &mut Frame<'_>,
    app: &App,
    s: &Snapshot,
    area: Rect,
    _theme: Theme,
    focused: bool,
    compact: bool,
) {
    let list: Vec<_> = s
        .reviews
        .iter()
        .filter(|x| app.matches(&format!("{x:?}")))
        .collect();
    let oldest = list
        .iter()
        .map(|r| r.created_ms)
        .min()
        .map(|t| format!(", oldest {}", age(app.now_ms, t)))
        .unwrap_or_default();
    let title = format!("Pending reviews ({}{oldest})", list.len());
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
    let (header, widths) = if compact {
        (
            vec!["prio", "age", "workflow", "conf"],
            vec![
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Min(8),
                Constraint::Length(5),
            ],
        )
    } else {
        (
            vec![
                "prio", "age", "workflow", "conf", "queue", "proposal", "task",
            ],
            vec![
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(18),
                Constraint::Length(5),
                Constraint::Length(13),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
    };
    table(
        f,
        area,
        title,
        focused,
        header,
        rows,
        widths,
        app.selection(),
    );
}

fn decisions(
    f: &mut Frame<'_>,
    app: &App,
    s: &Snapshot,
    area: Rect,
    theme: Theme,
    focused: bool,
    denials_only: bool,
) {
    let rows: Vec<Row> = s
        .decisions
        .iter()
        .filter(|d| (!denials_only || d.decision == "deny") && app.matches(&format!("{d:?}")))
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
        format!("Recent denials ({})", rows.len())
    } else {
        format!("Policy decisions ({})", rows.len())
    };
    let (header, widths) = if denials_only {
        (
            vec!["seq", "dec", "kind", "policies"],
            vec![
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Min(8),
            ],
        )
    } else {
        (
            vec!["seq", "time", "decision", "kind", "policies", "resource"],
            vec![
                Constraint::Length(6),
                Constraint::Length(19),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Min(12),
                Constraint::Min(12),
            ],
        )
    };
    table(
        f,
        area,
        title,
        focused,
        header,
        rows,
        widths,
        app.selection(),
    );
}

fn runs(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
    let rows: Vec<Row> = s
        .runs
        .iter()
        .filter(|r| app.matches(&format!("{r:?}")))
        .map(|r| {
            Row::new(vec![
                Cell::from(clip(&r.start_time, 19)),
                Cell::from(clip(&r.workflow, 18)),
                Cell::from(r.outcome.clone()).style(theme.status(&r.outcome)),
                Cell::from(
                    r.duration_ms
                        .map(|d| format!("{} ms", num(d)))
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(r.run_id.clone()),
            ])
        })
        .collect();
    table(
        f,
        area,
        format!("Recent runs ({})", rows.len()),
        true,
        vec!["start", "workflow", "outcome", "duration", "run"],
        rows,
        vec![
            Constraint::Length(19),
            Constraint::Length(18),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
        app.selection(),
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
    decisions(f, app, s, parts[1], theme, true, false);
}

fn help(f: &mut Frame<'_>, app: &App, area: Rect) {
    let lines = app.help_lines();
    let h = (lines.len() as u16 + 3).min(area.height);
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
