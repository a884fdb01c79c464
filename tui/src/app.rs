//! The dashboard's state and its key handling, as pure functions: a key and the state give the
//! next state and what the loop must do ([`Effect`]). Nothing here draws or does I/O.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::data::{
    AuditRecord, Decided, DecisionRow, ReviewDetail, ReviewRow, RunRow, Searchable, SloRow,
    Snapshot, SpanRow,
};

/// The screens, reachable by number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Tiles, SLOs, pending reviews, recent denials.
    Overview,
    /// Every SLO with budget and burn.
    Slos,
    /// Recent runs.
    Runs,
    /// Pending reviews.
    Reviews,
    /// Policy decisions.
    Decisions,
    /// The audit trail.
    Audit,
}

/// All screens in key order (`1`…`6`).
pub const SCREENS: [Screen; 6] = [
    Screen::Overview,
    Screen::Slos,
    Screen::Runs,
    Screen::Reviews,
    Screen::Decisions,
    Screen::Audit,
];

impl Screen {
    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Slos => "SLOs",
            Screen::Runs => "Runs",
            Screen::Reviews => "Reviews",
            Screen::Decisions => "Decisions",
            Screen::Audit => "Audit",
        }
    }
    fn index(self) -> usize {
        SCREENS.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// The panes of the Overview, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The SLO table.
    Slos,
    /// Pending reviews.
    Reviews,
    /// Recent denials.
    Denials,
}

const PANES: [Pane; 3] = [Pane::Slos, Pane::Reviews, Pane::Denials];

/// Where the connection to the server is.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    /// The last poll succeeded.
    Connected,
    /// The last poll failed; retrying.
    Lost {
        /// Since when (ms since the epoch).
        since_ms: i64,
        /// Why.
        error: String,
    },
}

/// What the typed line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys act.
    Normal,
    /// Typing a filter (`/`).
    Filter,
    /// Typing a command (`:`).
    Command,
    /// The help overlay (`?`), with its own filter.
    Help,
}

/// At most this many rows in a drill-down (runs of an SLO, spans of a run); a list this long says
/// `500+`.
pub const DRILL_LIMIT: usize = 500;

/// The time range of the metrics (`t` cycles).
pub const RANGES: [&str; 3] = ["1h", "24h", "7d"];

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Poll now (and reload the open drill-down).
    Refresh,
    /// Leave.
    Quit,
    /// Load a drill-down; the answer goes to [`App::loaded`].
    Load(Request),
    /// Send a review decision; the answer goes to [`App::decided`].
    Decide(Decide),
}

/// A drill-down to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The runs that burned an SLO's budget (by SLO name).
    SloRuns(String),
    /// The span waterfall of one run (by run id).
    Trace(String),
    /// A review task with its context (by task id).
    Review(String),
    /// One audit record, whole (by sequence number).
    Record(i64),
}

/// A review decision to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decide {
    /// Task id.
    pub id: String,
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Who decides.
    pub reviewer: String,
    /// Why.
    pub reason: String,
}

/// A loaded drill-down.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// Runs, slowest first.
    Runs(Vec<RunRow>),
    /// Spans in waterfall order.
    Spans(Vec<SpanRow>),
    /// A review task.
    Review(Box<ReviewDetail>),
    /// An audit record.
    Record(Box<AuditRecord>),
}

/// One drill-down level on top of a screen (Enter pushes, Esc pops).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// What it shows.
    pub request: Request,
    /// The data, once loaded.
    pub detail: Option<Detail>,
    /// Why loading failed.
    pub error: Option<String>,
    /// Selected row.
    pub selected: usize,
    /// Index into the level's sort keys.
    pub sort: usize,
    /// The filter of the level below, restored on the way back.
    pub saved_filter: String,
}

impl Level {
    /// Breadcrumb text.
    pub fn crumb(&self) -> String {
        match &self.request {
            Request::SloRuns(name) => format!("SLO {name}: runs"),
            Request::Trace(run) => format!("run {run}"),
            Request::Review(id) => format!("review {id}"),
            Request::Record(seq) => format!("record #{seq}"),
        }
    }
}

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

/// The dashboard's state.
#[derive(Debug, Clone)]
pub struct App {
    /// The server's API URL.
    pub server: String,
    /// The current screen.
    pub screen: Screen,
    /// Focused pane of the Overview.
    pub pane: Pane,
    /// The latest data.
    pub snapshot: Option<Snapshot>,
    /// Connection state.
    pub connection: Connection,
    /// Selected row per screen (and per Overview pane).
    pub selected: [usize; 9],
    /// Data updates are held (`f`).
    pub frozen: bool,
    /// Typing mode.
    pub mode: Mode,
    /// The line being typed (filter, command, help filter).
    pub input: String,
    /// The applied filter (rows containing it, case-insensitive).
    pub filter: String,
    /// Index into [`RANGES`].
    pub range: usize,
    /// The Overview's pane fills the screen (`e`).
    pub expanded: bool,
    /// The clock (ms since the epoch), set by the loop (or a test).
    pub now_ms: i64,
    /// Spans per second, from the last two polls.
    pub ingest_rate: Option<f64>,
    /// The previous poll's accepted spans and time.
    pub last_count: Option<(u64, i64)>,
    /// Last message for the footer (command results, errors).
    pub message: Option<String>,
    /// Drill-down levels over the current screen, innermost last.
    pub stack: Vec<Level>,
    /// The review dialog, when open.
    pub dialog: Option<Dialog>,
    /// Who decides reviews from this dashboard (`--reviewer`).
    pub reviewer: Option<String>,
    /// Sort key index per screen (and per Overview pane).
    pub sort: [usize; 9],
}

/// Help lines: key and what it does.
pub const HELP: &[(&str, &str)] = &[
    (
        "1-6",
        "switch screen: overview, slos, runs, reviews, decisions, audit",
    ),
    ("tab / shift-tab", "next / previous pane (overview)"),
    ("j k ↑ ↓", "move the selection"),
    (
        "enter",
        "drill in: slo → runs → waterfall; review → context; decision → record",
    ),
    (
        "esc",
        "back a level (see the breadcrumbs), close, clear filter",
    ),
    ("s", "sort the focused list by its next key"),
    (
        "a x",
        "approve / reject the open review (reason, then confirm)",
    ),
    ("g G", "first / last row"),
    ("/", "filter the rows of the focused list"),
    (
        ":",
        "command palette (overview, slos, runs, reviews, decisions, audit, refresh, quit)",
    ),
    ("t", "time range: 1h, 24h, 7d"),
    ("f", "freeze: hold the data while reading"),
    ("e", "expand the focused pane"),
    ("r", "refresh now"),
    ("?", "this help (type to filter it)"),
    ("q", "quit"),
];

impl App {
    /// A dashboard of `server`, not connected yet.
    pub fn new(server: &str, now_ms: i64) -> Self {
        Self {
            server: server.to_string(),
            screen: Screen::Overview,
            pane: Pane::Slos,
            snapshot: None,
            connection: Connection::Connecting,
            selected: [0; 9],
            frozen: false,
            mode: Mode::Normal,
            input: String::new(),
            filter: String::new(),
            range: 0,
            expanded: false,
            now_ms,
            ingest_rate: None,
            last_count: None,
            message: None,
            stack: Vec::new(),
            dialog: None,
            reviewer: None,
            sort: [0; 9],
        }
    }

    /// Sets who decides reviews.
    pub fn with_reviewer(mut self, reviewer: Option<String>) -> Self {
        self.reviewer = reviewer.filter(|r| !r.trim().is_empty());
        self
    }

    /// The metrics range (`1h`, `24h`, `7d`).
    pub fn range(&self) -> &'static str {
        RANGES[self.range % RANGES.len()]
    }

    fn slot(&self) -> usize {
        match (self.screen, self.pane) {
            (Screen::Overview, Pane::Slos) => 6,
            (Screen::Overview, Pane::Reviews) => 7,
            (Screen::Overview, Pane::Denials) => 8,
            (s, _) => s.index(),
        }
    }

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

    /// The selected row of the focused list.
    pub fn selection(&self) -> usize {
        match self.stack.last() {
            Some(level) => level.selected,
            None => self.selected[self.slot()],
        }
    }

    fn selection_mut(&mut self) -> &mut usize {
        let slot = self.slot();
        match self.stack.last_mut() {
            Some(level) => &mut level.selected,
            None => &mut self.selected[slot],
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
                        .chain(r.context.lines().map(wrapped))
                        .sum::<usize>()
                        + 6
                }
                _ => 0,
            },
            List::ReviewContext => 0,
        }
    }

    fn clamp(&mut self) {
        let n = self.rows();
        let sel = self.selection_mut();
        *sel = (*sel).min(n.saturating_sub(1));
    }

    /// New data arrived (ignored while frozen, except the connection state). Selection and
    /// scroll stay where they were, clamped to the new row count.
    pub fn update(&mut self, snapshot: Snapshot, now_ms: i64) {
        self.now_ms = now_ms;
        self.connection = Connection::Connected;
        let count = snapshot.status.spans_accepted;
        if let Some((before, at)) = self.last_count
            && now_ms > at
            && count >= before
        {
            self.ingest_rate = Some((count - before) as f64 * 1000.0 / (now_ms - at) as f64);
        }
        self.last_count = Some((count, now_ms));
        if self.frozen && self.snapshot.is_some() {
            return;
        }
        let mut snapshot = snapshot;
        if snapshot.audit.is_empty()
            && let Some(old) = &self.snapshot
        {
            // Not re-verified this poll: keep the last verification.
            snapshot.audit = old.audit.clone();
        }
        self.snapshot = Some(snapshot);
        self.clamp();
    }

    /// A poll failed: keep the last data, say so.
    pub fn lost(&mut self, error: String, now_ms: i64) {
        self.now_ms = now_ms;
        let since_ms = match &self.connection {
            Connection::Lost { since_ms, .. } => *since_ms,
            _ => now_ms,
        };
        self.connection = Connection::Lost { since_ms, error };
    }

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

    fn goto(&mut self, screen: Screen) {
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

    fn back(&mut self) {
        if let Some(level) = self.stack.pop() {
            self.filter = level.saved_filter;
        }
        self.clamp();
    }

    /// Enter: drill into the selected row.
    fn enter(&mut self) -> Effect {
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

    fn open_dialog(&mut self, approve: bool) {
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
                "no reviewer: start with `custos top --reviewer NAME` (or set CUSTOS_REVIEWER)"
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

    fn dialog_key(&mut self, k: KeyEvent) -> Effect {
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

    fn run_command(&mut self, cmd: &str) -> Effect {
        let cmd = cmd.trim().to_lowercase();
        if let Some(s) = SCREENS.iter().find(|s| s.title().to_lowercase() == cmd) {
            self.goto(*s);
            return Effect::None;
        }
        match cmd.as_str() {
            "q" | "quit" => Effect::Quit,
            "r" | "refresh" => Effect::Refresh,
            "" => Effect::None,
            other => {
                self.message = Some(format!(
                    "unknown command `{other}`: overview, slos, runs, reviews, decisions, audit, refresh, quit"
                ));
                Effect::None
            }
        }
    }

    /// Handles one key.
    pub fn key(&mut self, k: KeyEvent) -> Effect {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        if self.dialog.is_some() {
            return self.dialog_key(k);
        }
        match self.mode {
            Mode::Filter | Mode::Command | Mode::Help => return self.typing(k),
            Mode::Normal => {}
        }
        self.message = None;
        match k.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char(c @ '1'..='6') => {
                let i = c as usize - '1' as usize;
                self.goto(SCREENS[i]);
            }
            KeyCode::Tab if self.screen == Screen::Overview && self.stack.is_empty() => {
                let i = PANES.iter().position(|p| *p == self.pane).unwrap_or(0);
                self.pane = PANES[(i + 1) % PANES.len()];
                self.clamp();
            }
            KeyCode::BackTab if self.screen == Screen::Overview && self.stack.is_empty() => {
                let i = PANES.iter().position(|p| *p == self.pane).unwrap_or(0);
                self.pane = PANES[(i + PANES.len() - 1) % PANES.len()];
                self.clamp();
            }
            KeyCode::Tab => self.goto(SCREENS[(self.screen.index() + 1) % SCREENS.len()]),
            KeyCode::BackTab => {
                self.goto(SCREENS[(self.screen.index() + SCREENS.len() - 1) % SCREENS.len()])
            }
            KeyCode::Char('j') | KeyCode::Down => {
                let sel = self.selection_mut();
                *sel = sel.saturating_add(1);
                self.clamp();
            }
            KeyCode::Char('k') | KeyCode::Up => {
                let sel = self.selection_mut();
                *sel = sel.saturating_sub(1);
            }
            KeyCode::Char('g') | KeyCode::Home => *self.selection_mut() = 0,
            KeyCode::Char('G') | KeyCode::End => {
                *self.selection_mut() = usize::MAX;
                self.clamp();
            }
            KeyCode::Enter => return self.enter(),
            KeyCode::Char('s') => {
                let keys = self.list().sort_keys();
                if keys.len() < 2 {
                    self.message = Some("this list has one order only".into());
                } else {
                    let slot = self.slot();
                    let i = match self.stack.last_mut() {
                        Some(level) => &mut level.sort,
                        None => &mut self.sort[slot],
                    };
                    *i = (*i + 1) % keys.len();
                    self.message = Some(format!("sorted by {}", self.sort_key()));
                }
            }
            KeyCode::Char('a') if self.list() == List::ReviewContext => self.open_dialog(true),
            KeyCode::Char('x') if self.list() == List::ReviewContext => self.open_dialog(false),
            KeyCode::Char('/') => {
                self.mode = Mode::Filter;
                self.input = self.filter.clone();
            }
            KeyCode::Char(':') => {
                self.mode = Mode::Command;
                self.input.clear();
            }
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                self.input.clear();
            }
            KeyCode::Char('f') => {
                self.frozen = !self.frozen;
            }
            KeyCode::Char('e') => {
                self.expanded = !self.expanded;
            }
            KeyCode::Char('t') => {
                self.range = (self.range + 1) % RANGES.len();
                return Effect::Refresh;
            }
            KeyCode::Char('r') => return Effect::Refresh,
            KeyCode::Esc => {
                if self.expanded {
                    self.expanded = false;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.clamp();
                } else if !self.stack.is_empty() {
                    self.back();
                } else if self.screen != Screen::Overview {
                    self.goto(Screen::Overview);
                }
            }
            _ => {}
        }
        Effect::None
    }

    fn typing(&mut self, k: KeyEvent) -> Effect {
        match k.code {
            KeyCode::Esc => {
                if self.mode == Mode::Filter {
                    self.filter.clear();
                }
                self.mode = Mode::Normal;
                self.input.clear();
            }
            KeyCode::Enter => {
                let mode = self.mode;
                self.mode = Mode::Normal;
                let line = std::mem::take(&mut self.input);
                match mode {
                    Mode::Filter => {
                        self.filter = line;
                        self.clamp();
                    }
                    Mode::Command => return self.run_command(&line),
                    _ => {}
                }
            }
            KeyCode::Backspace => {
                self.input.pop();
                if self.mode == Mode::Filter {
                    self.filter = self.input.clone();
                    self.clamp();
                }
            }
            KeyCode::Char(c) => {
                if self.mode == Mode::Help && self.input.is_empty() && (c == '?' || c == 'q') {
                    self.mode = Mode::Normal;
                    return Effect::None;
                }
                self.input.push(c);
                if self.mode == Mode::Filter {
                    self.filter = self.input.clone();
                    self.clamp();
                }
            }
            _ => {}
        }
        Effect::None
    }

    /// Help lines passing the help filter.
    pub fn help_lines(&self) -> Vec<(&'static str, &'static str)> {
        let q = self.input.to_lowercase();
        HELP.iter()
            .filter(|(k, d)| q.is_empty() || k.contains(&q) || d.to_lowercase().contains(&q))
            .copied()
            .collect()
    }

    /// Key hints for the footer, for the focused pane and mode.
    pub fn hints(&self) -> &'static str {
        if let Some(d) = &self.dialog {
            return match d.stage {
                Stage::Reason => {
                    "type the reason · enter review what will be recorded · esc cancel"
                }
                Stage::Confirm => "y/enter send · n edit the reason · esc cancel",
                Stage::Sending => "sending…",
                Stage::Failed(_) => "enter try again · n edit the reason · esc close",
            };
        }
        match self.mode {
            Mode::Filter => "type to filter · enter keep · esc clear",
            Mode::Command => {
                "overview slos runs reviews decisions audit refresh quit · enter run · esc cancel"
            }
            Mode::Help => "type to filter the help · esc close",
            Mode::Normal => match self.list() {
                List::ReviewContext => {
                    "a approve · x reject · enter trace · esc back · r reload · ? help · q quit"
                }
                List::Spans => "j/k span · enter expand attributes · / filter · esc back · q quit",
                List::Record => "j/k scroll · esc back · r reload · ? help · q quit",
                List::BurnRuns => {
                    "enter waterfall · j/k move · s sort · / filter · esc back · q quit"
                }
                List::Denials | List::Decisions => {
                    if self.screen == Screen::Overview {
                        "1-6 · tab pane · enter record · s sort · e expand · / filter · ? help · q quit"
                    } else {
                        "enter record · j/k move · s sort · / filter · esc back · ? help · q quit"
                    }
                }
                _ => {
                    if self.screen == Screen::Overview {
                        "1-6 · tab pane · enter drill · s sort · e expand · / filter · ? help · q quit"
                    } else {
                        "enter drill in · j/k move · s sort · / filter · esc back · ? help · q quit"
                    }
                }
            },
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

/// The lists a key can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// SLOs (Overview pane, SLOs screen).
    Slos,
    /// Pending reviews (Overview pane, Reviews screen).
    Reviews,
    /// Recent denials (Overview pane).
    Denials,
    /// Policy decisions (Decisions and Audit screens).
    Decisions,
    /// Recent runs (Runs screen).
    Runs,
    /// Runs that burned an SLO's budget (drill-down).
    BurnRuns,
    /// A run's spans (drill-down).
    Spans,
    /// A review's context (drill-down).
    ReviewContext,
    /// One audit record (drill-down).
    Record,
}

impl List {
    /// The orders `s` cycles through; the first is the default.
    pub fn sort_keys(self) -> &'static [&'static str] {
        match self {
            List::Slos => &["file", "burn", "budget", "name"],
            List::Reviews => &["urgency", "oldest", "confidence"],
            List::Denials | List::Decisions => &["newest", "oldest", "kind"],
            List::Runs => &["newest", "slowest", "cost"],
            List::BurnRuns => &["slowest", "newest", "cost"],
            List::Spans => &["start"],
            List::ReviewContext | List::Record => &["-"],
        }
    }
}
