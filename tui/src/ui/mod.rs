//! Drawing: a pure function of the [`App`] onto a ratatui frame.
//!
//! Focus and selection never rely on colour alone: the focused pane has a double border and a
//! `▶` in its title, the selected row a `>` marker. With `NO_COLOR` no colour is used at all.
//!
//! This module draws the frame (header, tabs, footer, overlays) and picks the screen or
//! drill-down; each screen has its own module (`overview`, `slos`, `runs`, `reviews`,
//! `decisions`, each with its drill-downs) and `widgets` holds what they share.

mod decisions;
mod overview;
mod reviews;
mod runs;
mod slos;
mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::app::{App, Connection, Detail, Mode, SCREENS, Screen};

use decisions::{audit, audit_record, decisions};
use overview::overview;
use reviews::{dialog, review_context, reviews};
use runs::{runs, waterfall};
use slos::slo_table;
use widgets::{age, block, clip, num};

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
        if let Some(n) = st.redactions {
            spans.push(Span::raw(format!(" · redactions {}", num(n as f64))));
        }
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
