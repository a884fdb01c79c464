//! The SLOs screen (and the Overview's SLO pane): budget, burn and status per SLO.
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row};

use super::Theme;
use super::widgets::{Columns, clip, pct, sorted, table};
use crate::app::{App, List};

pub(super) fn slo_table(f: &mut Frame<'_>, app: &App, area: Rect, theme: Theme, focused: bool) {
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
