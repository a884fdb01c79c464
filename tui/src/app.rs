//! The dashboard's state and its key handling, as pure functions: a key and the state give the
//! next state and what the loop must do ([`Effect`]). Nothing here draws or does I/O.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::data::Snapshot;

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

/// The time range of the metrics (`t` cycles).
pub const RANGES: [&str; 3] = ["1h", "24h", "7d"];

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Poll now.
    Refresh,
    /// Leave.
    Quit,
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
}

/// Help lines: key and what it does.
pub const HELP: &[(&str, &str)] = &[
    (
        "1-6",
        "switch screen: overview, slos, runs, reviews, decisions, audit",
    ),
    ("tab / shift-tab", "next / previous pane (overview)"),
    ("j k ↑ ↓", "move the selection"),
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
    ("esc", "close, clear the filter, back"),
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
        }
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
        self.selected[self.slot()]
    }

    /// Rows of the focused list (after the filter).
    pub fn rows(&self) -> usize {
        let Some(s) = &self.snapshot else { return 0 };
        let keep = |t: String| self.matches(&t);
        match (self.screen, self.pane) {
            (Screen::Overview, Pane::Slos) | (Screen::Slos, _) => {
                s.slos.iter().filter(|x| keep(format!("{x:?}"))).count()
            }
            (Screen::Overview, Pane::Reviews) | (Screen::Reviews, _) => {
                s.reviews.iter().filter(|x| keep(format!("{x:?}"))).count()
            }
            (Screen::Overview, Pane::Denials) => s
                .decisions
                .iter()
                .filter(|x| x.decision == "deny" && keep(format!("{x:?}")))
                .count(),
            (Screen::Decisions, _) | (Screen::Audit, _) => s
                .decisions
                .iter()
                .filter(|x| keep(format!("{x:?}")))
                .count(),
            (Screen::Runs, _) => s.runs.iter().filter(|x| keep(format!("{x:?}"))).count(),
        }
    }

    /// Whether a row's text passes the filter.
    pub fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    fn clamp(&mut self) {
        let n = self.rows();
        let slot = self.slot();
        self.selected[slot] = self.selected[slot].min(n.saturating_sub(1));
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

    fn goto(&mut self, screen: Screen) {
        self.screen = screen;
        self.expanded = false;
        self.clamp();
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
            KeyCode::Tab if self.screen == Screen::Overview => {
                let i = PANES.iter().position(|p| *p == self.pane).unwrap_or(0);
                self.pane = PANES[(i + 1) % PANES.len()];
                self.clamp();
            }
            KeyCode::BackTab if self.screen == Screen::Overview => {
                let i = PANES.iter().position(|p| *p == self.pane).unwrap_or(0);
                self.pane = PANES[(i + PANES.len() - 1) % PANES.len()];
                self.clamp();
            }
            KeyCode::Tab => self.goto(SCREENS[(self.screen.index() + 1) % SCREENS.len()]),
            KeyCode::BackTab => {
                self.goto(SCREENS[(self.screen.index() + SCREENS.len() - 1) % SCREENS.len()])
            }
            KeyCode::Char('j') | KeyCode::Down => {
                let slot = self.slot();
                self.selected[slot] = self.selected[slot].saturating_add(1);
                self.clamp();
            }
            KeyCode::Char('k') | KeyCode::Up => {
                let slot = self.slot();
                self.selected[slot] = self.selected[slot].saturating_sub(1);
            }
            KeyCode::Char('g') | KeyCode::Home => {
                let slot = self.slot();
                self.selected[slot] = 0;
            }
            KeyCode::Char('G') | KeyCode::End => {
                let slot = self.slot();
                self.selected[slot] = usize::MAX;
                self.clamp();
            }
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
        match self.mode {
            Mode::Filter => "type to filter · enter keep · esc clear",
            Mode::Command => {
                "overview slos runs reviews decisions audit refresh quit · enter run · esc cancel"
            }
            Mode::Help => "type to filter the help · esc close",
            Mode::Normal => match (self.screen, self.pane) {
                (Screen::Overview, _) => {
                    "1-6 screens · tab pane · j/k move · e expand · / filter · t range · f freeze · ? help · q quit"
                }
                (Screen::Reviews, _) => "j/k move · / filter · esc back · ? help · q quit",
                _ => "j/k move · g/G ends · / filter · esc back · ? help · q quit",
            },
        }
    }
}
