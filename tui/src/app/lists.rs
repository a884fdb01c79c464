//! What the focused list shows: which list has focus, its sort order, the filter (rows whose
//! text contains it) and the rows of every list after filter and sort.

use super::{App, Detail, Level, List, Pane, Request, Screen};
use crate::data::{DecisionRow, ReviewDetail, ReviewRow, RunRow, Searchable, SloRow, SpanRow};

impl App {
    /// The list in focus.
    pub fn list(&self) -> List {
        if let Some(level) = self.stack.last() {
            return match level.request {
                Request::SloRuns(_) => List::BurnRuns,
                Request::Trace(_) => List::Spans,
                Request::Review(_) => List::ReviewContext,
                Request::Record(_) => List::Record,
            };
        }
        match (self.screen, self.pane) {
            (Screen::Overview, Pane::Slos) | (Screen::Slos, _) => List::Slos,
            (Screen::Overview, Pane::Reviews) | (Screen::Reviews, _) => List::Reviews,
            (Screen::Overview, Pane::Denials) => List::Denials,
            (Screen::Decisions, _) | (Screen::Audit, _) => List::Decisions,
            (Screen::Runs, _) => List::Runs,
        }
    }

    /// The sort key of the focused list.
    pub fn sort_key(&self) -> &'static str {
        let keys = self.list().sort_keys();
        let i = match self.stack.last() {
            Some(level) => level.sort,
            None => self.sort[self.slot()],
        };
        keys[i % keys.len()]
    }

    /// The sort key a list is drawn in (its own, focused or not).
    pub fn sort_key_of(&self, list: List) -> &'static str {
        if self.list() == list {
            return self.sort_key();
        }
        // A pane drawn without focus (the Overview's others) keeps its own key.
        let slot = match list {
            List::Slos => 6,
            List::Reviews => 7,
            List::Denials => 8,
            _ => return list.sort_keys()[0],
        };
        let slot = if self.screen == Screen::Overview {
            slot
        } else {
            self.slot()
        };
        let keys = list.sort_keys();
        keys[self.sort[slot] % keys.len()]
    }

    /// Whether a row's text passes the filter.
    pub fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// The rows of `list` passing the filter; the filter applies to the focused list only.
    fn kept<'a, T: Searchable>(&self, rows: &'a [T], list: List) -> Vec<&'a T> {
        if list != self.list() {
            return rows.iter().collect();
        }
        rows.iter().filter(|x| self.matches(&x.text())).collect()
    }

    /// SLOs after the filter, in the sort order.
    pub fn slo_list(&self) -> Vec<&SloRow> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut v = self.kept(&s.slos, List::Slos);
        match self.sort_key_of(List::Slos) {
            "burn" => v.sort_by(|a, b| desc(a.burn, b.burn)),
            "budget" => v.sort_by(|a, b| asc(a.budget_left, b.budget_left)),
            "name" => v.sort_by(|a, b| a.name.cmp(&b.name)),
            _ => {}
        }
        v
    }

    /// Pending reviews after the filter, in the sort order.
    pub fn review_list(&self) -> Vec<&ReviewRow> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut v = self.kept(&s.reviews, List::Reviews);
        match self.sort_key_of(List::Reviews) {
            "oldest" => v.sort_by_key(|r| r.created_ms),
            "confidence" => v.sort_by(|a, b| asc(a.confidence, b.confidence)),
            _ => {}
        }
        v
    }

    /// Policy decisions (or only denials) after the filter, in the sort order.
    pub fn decision_list(&self, denials: bool) -> Vec<&DecisionRow> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let list = if denials {
            List::Denials
        } else {
            List::Decisions
        };
        let mut v: Vec<&DecisionRow> = self
            .kept(&s.decisions, list)
            .into_iter()
            .filter(|d| !denials || d.decision == "deny")
            .collect();
        match self.sort_key_of(list) {
            "oldest" => v.sort_by_key(|d| d.seq),
            "kind" => v.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.seq.cmp(&a.seq))),
            _ => {}
        }
        v
    }

    /// Runs (the Runs screen's, or the open SLO drill-down's) after the filter, sorted.
    pub fn run_list(&self) -> Vec<&RunRow> {
        let (rows, list) = match self.stack.last() {
            Some(Level {
                detail: Some(Detail::Runs(r)),
                ..
            }) => (r.as_slice(), List::BurnRuns),
            Some(_) => return Vec::new(),
            None => match &self.snapshot {
                Some(s) => (s.runs.as_slice(), List::Runs),
                None => return Vec::new(),
            },
        };
        let mut v = self.kept(rows, list);
        match self.sort_key_of(list) {
            "slowest" => v.sort_by(|a, b| desc(a.duration_ms, b.duration_ms)),
            "newest" => v.sort_by(|a, b| b.start_time.cmp(&a.start_time)),
            "cost" => v.sort_by(|a, b| desc(a.cost_usd, b.cost_usd)),
            _ => {}
        }
        v
    }

    /// The open trace's spans, in waterfall order (the filter keeps matching spans).
    pub fn span_list(&self) -> Vec<&SpanRow> {
        match self.stack.last() {
            Some(Level {
                detail: Some(Detail::Spans(s)),
                ..
            }) => self.kept(s, List::Spans),
            _ => Vec::new(),
        }
    }

    /// The open review, once loaded.
    pub fn review_detail(&self) -> Option<&ReviewDetail> {
        match self.stack.last() {
            Some(Level {
                detail: Some(Detail::Review(t)),
                ..
            }) => Some(t),
            _ => None,
        }
    }

    /// Rows of the focused list (after the filter).
    pub fn rows(&self) -> usize {
        match self.list() {
            List::Slos => self.slo_list().len(),
            List::Reviews => self.review_list().len(),
            List::Denials => self.decision_list(true).len(),
            List::Decisions => self.decision_list(false).len(),
            List::Runs | List::BurnRuns => self.run_list().len(),
            List::Spans => self.span_list().len(),
            // The record scrolls: one "row" per line of text.
            List::Record => match self.stack.last() {
                Some(Level {
                    detail: Some(Detail::Record(r)),
                    ..
                }) => {
                    // Lines wrap on screen: count each as if 40 columns wide (an upper bound on
                    // 80-column terminals), so the end can always be scrolled to.
                    let wrapped = |t: &str| t.chars().count() / 40 + 1;
                    [&r.principal, &r.resource, &r.hash, &r.prev_hash]
                        .iter()
                        .map(|t| wrapped(t))
                        .chain(r.advice.iter().chain(&r.errors).map(|t| wrapped(t)))
                        .chain(crate::data::context_text(r).lines().map(wrapped))
                        .sum::<usize>()
                        + 6
                }
                _ => 0,
            },
            List::ReviewContext => 0,
        }
    }
}

/// Descending by an optional number, missing values last.
fn desc(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// Ascending by an optional number, missing values last.
fn asc(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => desc(a, b),
    }
}
