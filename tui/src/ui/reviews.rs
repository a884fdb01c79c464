//! The Reviews screen and its drill-downs: pending reviews, a review's context, and the
//! approve/reject dialog.
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Clear, Paragraph, Row};

use super::Theme;
use super::widgets::{Columns, age, block, clip, sorted, table};
use crate::app::{App, Dialog, List, Stage};
use crate::data::ReviewDetail;

pub(super) fn reviews(
    f: &mut Frame<'_>,
    app: &App,
    area: Rect,
    _theme: Theme,
    focused: bool,
    compact: bool,
) {
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

/// What a reviewer needs to decide: input, proposal, the policy decision and its advice, trace.
pub(super) fn review_context(
    f: &mut Frame<'_>,
    app: &App,
    t: &ReviewDetail,
    area: Rect,
    theme: Theme,
) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
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
    policy_lines(&mut lines, t, theme);
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
            .unwrap_or_else(|| "none: start with a reviewer's --token to decide".into()),
    ));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block(&format!("Review {}", t.id), true)),
        area,
    );
}

/// A label and its value, the label bold and padded.
fn field(k: &str, v: String) -> Line<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Line::from(vec![Span::styled(format!("{k:<11} "), bold), Span::raw(v)])
}

/// The policy decision that sent the run to review, with its advice (or that none did).
fn policy_lines(lines: &mut Vec<Line<'static>>, t: &ReviewDetail, theme: Theme) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
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
}

/// The approve/reject dialog: the reason, then what will be recorded, then the answer.
pub(super) fn dialog(f: &mut Frame<'_>, app: &App, d: &Dialog, area: Rect, theme: Theme) {
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
