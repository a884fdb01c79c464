//! The approve/reject dialog of a review: opening it, typing the reason, confirming what will
//! be recorded, and sending.

use crossterm::event::{KeyCode, KeyEvent};

use super::{App, Decide, Effect};
use crate::data::ReviewDetail;

/// Where the review dialog is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Typing the reason.
    Reason,
    /// Showing what will be recorded; `y` sends.
    Confirm,
    /// Sent; waiting for the server.
    Sending,
    /// The server refused or could not be reached.
    Failed(String),
}

/// The approve/reject dialog of a review.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    /// The task.
    pub task: ReviewDetail,
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// The reason typed so far.
    pub reason: String,
    /// Stage.
    pub stage: Stage,
}

impl Dialog {
    /// What the server will be asked and what it records: the lines the confirmation shows.
    pub fn record(&self, reviewer: &str) -> Vec<String> {
        let t = &self.task;
        let verb = if self.approve { "approve" } else { "reject" };
        let mut lines = vec![
            format!("POST /api/reviews/{}/{verb}", t.id),
            format!("  reviewer `{reviewer}`, reason `{}`", self.reason.trim()),
            format!(
                "policy request: Custos::User::\"{reviewer}\" approve_review \
                 Custos::ReviewTask::\"{}\" (override: {})",
                t.id, !self.approve
            ),
            format!(
                "  decided by the policy set: team `{}`, four eyes (not `{}`)",
                t.queue,
                t.started_by.as_deref().unwrap_or("the requester")
            ),
            "audit: one hash-chained record of kind `review`, allowed or denied".into(),
        ];
        if self.approve {
            lines.push(format!(
                "if allowed: task approved; run {} continues with human approval",
                t.run_id
            ));
        } else {
            lines.push(format!(
                "if allowed: task rejected (an override); run {} is escalated",
                t.run_id
            ));
        }
        lines.push(format!(
            "  the decision span gets human.reviewer `{reviewer}`, human.override {}",
            !self.approve
        ));
        lines.push("if denied: nothing changes; the reason is shown here".into());
        lines
    }
}

impl App {
    pub(super) fn open_dialog(&mut self, approve: bool) {
        let Some(task) = self.review_detail().cloned() else {
            self.message = Some("open a review first (enter on a pending review)".into());
            return;
        };
        if task.status != "pending" {
            self.message = Some(format!("review `{}` is {} already", task.id, task.status));
            return;
        }
        if self.reviewer.is_none() {
            self.message = Some(
                "no reviewer: this dashboard's token is not a person's; start `custos top --token` with a reviewer's token"
                    .into(),
            );
            return;
        }
        self.dialog = Some(Dialog {
            task,
            approve,
            reason: String::new(),
            stage: Stage::Reason,
        });
    }

    pub(super) fn dialog_key(&mut self, k: KeyEvent) -> Effect {
        let reviewer = self.reviewer.clone().unwrap_or_default();
        let Some(d) = &mut self.dialog else {
            return Effect::None;
        };
        match (&d.stage, k.code) {
            (_, KeyCode::Esc) if d.stage != Stage::Sending => self.dialog = None,
            (Stage::Reason, KeyCode::Enter) if !d.reason.trim().is_empty() => {
                d.stage = Stage::Confirm
            }
            (Stage::Reason, KeyCode::Backspace) => {
                d.reason.pop();
            }
            (Stage::Reason, KeyCode::Char(c)) => d.reason.push(c),
            (Stage::Confirm, KeyCode::Char('y') | KeyCode::Enter) => {
                d.stage = Stage::Sending;
                return Effect::Decide(Decide {
                    id: d.task.id.clone(),
                    approve: d.approve,
                    reviewer,
                    reason: d.reason.trim().to_string(),
                });
            }
            (Stage::Confirm | Stage::Failed(_), KeyCode::Char('n') | KeyCode::Backspace) => {
                d.stage = Stage::Reason
            }
            (Stage::Failed(_), KeyCode::Enter) => d.stage = Stage::Confirm,
            _ => {}
        }
        Effect::None
    }
}
