//! The Decisions and Audit screens and their drill-down: policy decisions (or only denials),
//! the audit trail's verification, and one whole audit record.
use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row};

use super::Theme;
use super::widgets::{Columns, block, clip, sorted, table};
use crate::app::{App, List};
use custos_api::AuditRecord;

use crate::data::Snapshot;

pub(super) fn decisions(
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

pub(super) fn audit(f: &mut Frame<'_>, app: &App, s: &Snapshot, area: Rect, theme: Theme) {
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

/// One audit record: who asked what, the decision with its policies, advice and errors, the
/// request's context and the record's place in the hash chain.
pub(super) fn audit_record(
    f: &mut Frame<'_>,
    r: &AuditRecord,
    scroll: usize,
    area: Rect,
    theme: Theme,
) {
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
    let context = crate::data::context_text(r);
    lines.extend(context.lines().map(|l| Line::from(l.to_string())));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block(&format!("Audit record #{}", r.seq), true))
            .scroll((scroll.min(u16::MAX as usize) as u16, 0)),
        area,
    );
}
