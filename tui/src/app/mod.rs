//! The dashboard's state and its key handling, as pure functions: a key and the state give the
//! next state and what the loop must do ([`Effect`]). Nothing here draws or does I/O.
//!
//! This module holds the state's types and what they share; each part of the key handling has
//! its own module: `lists` (what the focused list shows: filter, search and sort), `keys` (keys,
//! typed lines, commands, help and hints), `drill` (screens, drill-down levels and what arrives
//! for them) and `dialog` (the approve/reject dialog of a review).

mod dialog;
mod drill;
mod keys;
mod lists;

use custos_api::AuditRecord;

use crate::data::{ReviewDetail, RunRow, Snapshot, SpanRow};

pub use dialog::{Dialog, Stage};
pub use keys::HELP;

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
