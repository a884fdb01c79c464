//! Screens and drill-down levels: switching screens, Enter pushing a level, Esc popping it (the
//! filter of the level below comes back), and the drill-downs and decisions that arrive for them.

use super::{App, Detail, Effect, Level, List, Request, Screen, Stage};
use crate::data::Decided;

impl App {
    /// A drill-down arrived (or failed); it lands on the level that asked for it.
    pub fn loaded(&mut self, request: &Request, result: Result<Detail, String>) {
        let Some(level) = self.stack.iter_mut().rev().find(|l| &l.request == request) else {
            return;
        };
        match result {
            Ok(d) => {
                level.detail = Some(d);
                level.error = None;
            }
            Err(e) => level.error = Some(e),
        }
        self.clamp();
    }

    /// The server answered a review decision. On success the dialog closes, the review level
    /// pops and the data refreshes; on failure the dialog shows why.
    pub fn decided(&mut self, result: Result<Decided, String>) -> Effect {
        match result {
            Ok(d) => {
                self.dialog = None;
                if matches!(self.list(), List::ReviewContext) {
                    self.back();
                }
                self.message = Some(format!(
                    "{} `{}` as `{}`: audit record {}; the run goes on",
                    d.decision,
                    d.id,
                    d.reviewer,
                    d.audit_seq
                        .map(|s| format!("#{s}"))
                        .unwrap_or_else(|| "?".into())
                ));
                Effect::Refresh
            }
            Err(e) => {
                if let Some(dialog) = &mut self.dialog {
                    dialog.stage = Stage::Failed(e);
                }
                Effect::None
            }
        }
    }

    /// The request of the innermost drill-down, to reload on refresh.
    pub fn open_request(&self) -> Option<Request> {
        self.stack.last().map(|l| l.request.clone())
    }

    pub(super) fn goto(&mut self, screen: Screen) {
        self.screen = screen;
        self.expanded = false;
        // Leaving every level: the screen's own filter comes back.
        if let Some(base) = self.stack.first() {
            self.filter = base.saved_filter.clone();
        }
        self.stack.clear();
        self.clamp();
    }

    fn push(&mut self, request: Request) -> Effect {
        self.stack.push(Level {
            request: request.clone(),
            detail: None,
            error: None,
            selected: 0,
            sort: 0,
            saved_filter: std::mem::take(&mut self.filter),
        });
        self.expanded = false;
        Effect::Load(request)
    }

    pub(super) fn back(&mut self) {
        if let Some(level) = self.stack.pop() {
            self.filter = level.saved_filter;
        }
        self.clamp();
    }

    /// Enter: drill into the selected row.
    pub(super) fn enter(&mut self) -> Effect {
        let i = self.selection();
        let target = match self.list() {
            List::Slos => self
                .slo_list()
                .get(i)
                .map(|s| Request::SloRuns(s.name.clone())),
            List::Reviews => self
                .review_list()
                .get(i)
                .map(|r| Request::Review(r.id.clone())),
            List::Runs | List::BurnRuns => self
                .run_list()
                .get(i)
                .map(|r| Request::Trace(r.run_id.clone())),
            List::ReviewContext => self
                .review_detail()
                .map(|t| Request::Trace(t.run_id.clone())),
            List::Spans => {
                self.expanded = !self.expanded;
                return Effect::None;
            }
            List::Denials | List::Decisions => {
                let denials = self.list() == List::Denials;
                self.decision_list(denials)
                    .get(i)
                    .map(|d| Request::Record(d.seq))
            }
            List::Record => return Effect::None,
        };
        match target {
            Some(r) => self.push(r),
            None => Effect::None,
        }
    }
}
