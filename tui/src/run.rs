//! The terminal loop: data polled off the UI thread, redraw when something changed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the poll re-verifies the audit chain without being asked to.
const VERIFY_EVERY: Duration = Duration::from_secs(60);

use crossterm::event::{self, Event, KeyEventKind};

use crate::app::{App, Decide, Detail, Effect, Request};
use crate::ui::{Theme, draw};
use custos_api::Connection;

use crate::{Error, Result};

enum Msg {
    Data(Box<crate::data::Snapshot>),
    Failed(String),
    Loaded(Request, Result<Detail, String>),
    Decided(Result<crate::data::Decided, String>),
}

/// Work for the drill-down thread.
enum Job {
    Load(Request),
    Decide(Decide),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The API client of `server`, with a 10 s timeout per request. Each client thread builds its
/// own: a connection pool belongs to the runtime that opened its connections.
fn api_client(server: &str, connection: &Connection) -> Result<custos_api::Client> {
    let connection = Connection {
        timeout: Some(Duration::from_secs(10)),
        ..connection.clone()
    };
    custos_api::Client::connect(server, &connection).map_err(|e| Error::Api(e.to_string()))
}

/// Who the token says the operator is (`GET /api/whoami`): the reviewer of decisions sent from
/// this dashboard, when it is a person.
fn reviewer_of(client: &custos_api::Client) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let me = rt.block_on(client.whoami()).ok()?;
    let quoted = me.principal.strip_prefix("Custos::User::")?;
    serde_json::from_str::<String>(quoted).ok()
}

/// Starts a thread with its own single-threaded runtime and its own API client of `server`.
fn spawn_client_thread(
    name: &str,
    server: String,
    connection: Connection,
    body: impl FnOnce(&tokio::runtime::Runtime, custos_api::Client) + Send + 'static,
) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let Ok(client) = api_client(&server, &connection) else {
                return;
            };
            body(&rt, client);
        })
        .map(|_| ())
        .map_err(|e| Error::Terminal(e.to_string()))
}

/// Loads drill-downs and sends review decisions, one at a time, off the UI thread (so a slow
/// poll never delays them).
fn spawn_worker(
    server: String,
    connection: Connection,
    tx: mpsc::Sender<Msg>,
) -> Result<mpsc::Sender<Job>> {
    let (jobs, rx) = mpsc::channel::<Job>();
    spawn_client_thread("custos-top-load", server, connection, move |rt, client| {
        while let Ok(job) = rx.recv() {
            let msg = match job {
                Job::Load(r) => {
                    let result = rt.block_on(crate::client::load(&client, &r));
                    Msg::Loaded(r, result.map_err(|e| e.to_string()))
                }
                Job::Decide(d) => Msg::Decided(
                    rt.block_on(crate::client::decide(&client, &d))
                        .map_err(|e| e.to_string()),
                ),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    })?;
    Ok(jobs)
}

/// Starts the thread that polls the server every `interval` (or when poked with a new range)
/// and sends each snapshot or failure to `tx`.
fn spawn_poller(
    server: String,
    connection: Connection,
    interval: Duration,
    tx: mpsc::Sender<Msg>,
    poke_rx: mpsc::Receiver<String>,
) -> Result<()> {
    spawn_client_thread("custos-top-poll", server, connection, move |rt, client| {
        let mut range = "1h".to_string();
        // The audit chain is verified at start, on a refresh and at most every minute:
        // verification reads the whole log.
        let mut verified: Option<Instant> = None;
        let mut poked = true;
        let mut refused = crate::client::Refused::default();
        loop {
            let verify = poked || verified.is_none_or(|t| t.elapsed() >= VERIFY_EVERY);
            let started = Instant::now();
            let msg = match rt.block_on(crate::client::fetch(&client, &range, verify, &mut refused))
            {
                Ok(s) => {
                    if verify {
                        verified = Some(Instant::now());
                    }
                    Msg::Data(Box::new(s))
                }
                Err(e) => Msg::Failed(e.to_string()),
            };
            if tx.send(msg).is_err() {
                return;
            }
            // Wait for the interval (at least four times as long as the poll took, so one
            // dashboard never takes more than a fifth of the server's time) or a poke
            // (refresh, new range).
            poked = false;
            match poke_rx.recv_timeout(interval.max(started.elapsed() * 4)) {
                Ok(r) => {
                    range = r;
                    poked = true;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    })
}

/// Runs the dashboard against `server`, reached as `connection` says (its token, its TLS),
/// until the user quits; polls every `interval`; review decisions are the token's person's.
pub fn run(server: &str, interval: Duration, connection: &Connection) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Msg>();
    // An unusable URL is refused here, before the terminal is taken over.
    let reviewer = reviewer_of(&api_client(server, connection)?);
    let jobs = spawn_worker(server.to_string(), connection.clone(), tx.clone())?;
    let (poke_tx, poke_rx) = mpsc::channel::<String>();
    spawn_poller(
        server.to_string(),
        connection.clone(),
        interval,
        tx,
        poke_rx,
    )?;

    let theme = Theme::from_env();
    let mut terminal = ratatui::try_init().map_err(|e| Error::Terminal(e.to_string()))?;
    let mut app = App::new(server, now_ms()).with_reviewer(reviewer);
    let result = (|| -> Result<()> {
        let mut dirty = true;
        loop {
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Data(s) => app.update(*s, now_ms()),
                    Msg::Failed(e) => app.lost(e, now_ms()),
                    Msg::Loaded(r, result) => app.loaded(&r, result),
                    Msg::Decided(result) => {
                        if app.decided(result) == Effect::Refresh {
                            let _ = poke_tx.send(app.range().to_string());
                        }
                    }
                }
                dirty = true;
            }
            if dirty {
                app.now_ms = now_ms();
                terminal
                    .draw(|f| draw(f, &app, theme))
                    .map_err(|e| Error::Terminal(e.to_string()))?;
                dirty = false;
            }
            if event::poll(Duration::from_millis(100))
                .map_err(|e| Error::Terminal(e.to_string()))?
            {
                match event::read().map_err(|e| Error::Terminal(e.to_string()))? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => {
                        dirty = true;
                        match app.key(k) {
                            Effect::Quit => return Ok(()),
                            Effect::Refresh => {
                                let _ = poke_tx.send(app.range().to_string());
                                if let Some(r) = app.open_request() {
                                    let _ = jobs.send(Job::Load(r));
                                }
                            }
                            Effect::Load(r) => {
                                let _ = jobs.send(Job::Load(r));
                            }
                            Effect::Decide(d) => {
                                let _ = jobs.send(Job::Decide(d));
                            }
                            Effect::None => {}
                        }
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}
