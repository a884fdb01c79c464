//! Keys: what each key does in normal mode, typing a filter, a command or a help filter, and
//! the help and the footer's hints.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Effect, List, Mode, PANES, RANGES, SCREENS, Screen, Stage};

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
                self.cycle_pane(1)
            }
            KeyCode::BackTab if self.screen == Screen::Overview && self.stack.is_empty() => {
                self.cycle_pane(PANES.len() - 1)
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
            KeyCode::Char('s') => self.next_sort(),
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
            KeyCode::Esc => self.escape(),
            _ => {}
        }
        Effect::None
    }

    /// Tab (`step` 1) or shift-Tab (`step` panes − 1) on the Overview: the next or previous pane.
    fn cycle_pane(&mut self, step: usize) {
        let i = PANES.iter().position(|p| *p == self.pane).unwrap_or(0);
        self.pane = PANES[(i + step) % PANES.len()];
        self.clamp();
    }

    /// `s`: the focused list's next sort key.
    fn next_sort(&mut self) {
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

    /// Esc: unexpand, else clear the filter, else back a level, else back to the Overview.
    fn escape(&mut self) {
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
