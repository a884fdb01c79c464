//! Connectors: the side effects a workflow has on other systems.
//!
//! Every call carries an idempotency key derived from the run and the step (`RUN/STEP`), the same
//! on every retry and after a resume, so each effect happens once:
//!
//! - `http`: `POST url` with a JSON body `{"operation", "run_id", "step", "payload"}` and the
//!   `Idempotency-Key` header. 2xx answers are the step's output (JSON, or `{"body": text}`); 429
//!   is `rate_limited` and 5xx `unavailable` (both retryable); other statuses are `invalid_input`.
//! - `ledger` (local): `post` appends an entry and **refuses a repeated key** (`duplicate_key`,
//!   naming the entry the key already posted); `reverse` appends a reversal of a posted entry.
//! - `tickets` and `outbox` (local): `create`/`send` append a ticket or an email; a repeated key
//!   answers with the record it made the first time.
//!
//! Local connectors keep one JSON line per effect in `DATA/connectors/NAME.jsonl`, appended and
//! fdatasync'ed before the call returns, so tests and people can count effects. A torn last line
//! (a crash mid-append) is no effect and is dropped on the next load.
//!
//! Each connector has a token-bucket rate limit (`rate_per_second`) and a circuit breaker
//! (`breaker_failures` consecutive failures open it for `breaker_cooldown`; calls while it is open
//! fail with the retryable `circuit_open` without reaching the system).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custos_analytics::duration::parse as parse_duration;
use custos_synth::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::StepError;
use crate::appender::Appender;
use crate::model::sha256_u64;
use crate::workflow::ConnectorFile;

/// A call to a connector.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The connector's name.
    pub name: &'a str,
    /// Its definition.
    pub config: &'a ConnectorFile,
    /// The operation.
    pub operation: &'a str,
    /// The idempotency key.
    pub key: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The step.
    pub step: &'a str,
    /// The attempt (1-based).
    pub attempt: u32,
    /// What to send.
    pub payload: &'a Value,
}

#[derive(Debug, Default)]
struct Local {
    loaded: bool,
    /// The file's group-committing writer, started at the first effect.
    appender: Option<Appender>,
    by_key: HashMap<String, Value>,
    next_seq: u64,
}

#[derive(Debug)]
struct Guard {
    tokens: f64,
    refilled: Instant,
    failures: u32,
    open_until: Option<Instant>,
}

/// The connectors of one executor.
#[derive(Debug, Clone)]
pub struct Connectors {
    dir: PathBuf,
    http: reqwest::Client,
    local: Arc<Mutex<HashMap<String, Local>>>,
    guards: Arc<std::sync::Mutex<HashMap<String, Guard>>>,
}

impl Connectors {
    /// Connectors whose local effects live under `dir`.
    pub fn new(dir: &Path, http: reqwest::Client) -> Self {
        Self {
            dir: dir.to_path_buf(),
            http,
            local: Arc::default(),
            guards: Arc::default(),
        }
    }

    /// Connectors for working on the local connectors' files only (erasure by the CLI).
    pub fn for_files(dir: &Path) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| crate::Error::Telemetry(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self::new(dir, http))
    }

    /// The file of a local connector's effects.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jsonl"))
    }

    /// Clears the payload of `runs`' lines in every local connector's file (see
    /// [`crate::erase`]); calls wait meanwhile, and each connector re-reads its file on its next
    /// call. Returns the number of lines cleared.
    pub async fn forget(&self, runs: &std::collections::BTreeSet<String>) -> crate::Result<usize> {
        let mut all = self.local.lock().await;
        // Effects queued before the lock was taken are written before any file is rewritten.
        for state in all.values() {
            if let Some(appender) = &state.appender {
                let _ = appender.submit(Vec::new()).await;
            }
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(crate::Error::Journal(format!(
                    "cannot list `{}`: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut total = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
            else {
                continue;
            };
            total += crate::erase::forget_lines(&path, runs).map_err(|e| {
                crate::Error::Journal(format!("cannot rewrite `{}`: {e}", path.display()))
            })?;
            all.remove(name);
        }
        Ok(total)
    }

    /// Makes a call: rate limit, breaker, then the connector.
    pub async fn call(&self, c: &Call<'_>) -> Result<Value, StepError> {
        self.admit(c).await?;
        if let Some(ms) = c.config.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let result = match c.config.kind.as_str() {
            "http" => self.http(c).await,
            _ => self.local(c).await,
        };
        self.record(c, &result);
        result
    }

    async fn admit(&self, c: &Call<'_>) -> Result<(), StepError> {
        loop {
            let wait = {
                let mut guards = self
                    .guards
                    .lock()
                    .map_err(|_| StepError::fatal("internal", "connector state is poisoned"))?;
                let rate = c.config.rate_per_second;
                let g = guards.entry(c.name.to_string()).or_insert_with(|| Guard {
                    tokens: rate.unwrap_or(1.0).max(1.0),
                    refilled: Instant::now(),
                    failures: 0,
                    open_until: None,
                });
                let now = Instant::now();
                if let Some(until) = g.open_until {
                    if now < until {
                        return Err(StepError::retryable(
                            "circuit_open",
                            format!(
                                "connector `{}`: circuit breaker open for {} ms more after {} consecutive failures",
                                c.name,
                                (until - now).as_millis(),
                                g.failures
                            ),
                        ));
                    }
                    g.open_until = None;
                }
                let Some(rate) = rate else { return Ok(()) };
                let burst = rate.max(1.0);
                g.tokens =
                    (g.tokens + now.duration_since(g.refilled).as_secs_f64() * rate).min(burst);
                g.refilled = now;
                if g.tokens >= 1.0 {
                    g.tokens -= 1.0;
                    return Ok(());
                }
                Duration::from_secs_f64((1.0 - g.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn record(&self, c: &Call<'_>, result: &Result<Value, StepError>) {
        let Some(threshold) = c.config.breaker_failures else {
            return;
        };
        let Ok(mut guards) = self.guards.lock() else {
            return;
        };
        let Some(g) = guards.get_mut(c.name) else {
            return;
        };
        match result {
            Err(e) if e.retryable => {
                g.failures += 1;
                if g.failures >= threshold {
                    let cooldown = c
                        .config
                        .breaker_cooldown
                        .as_deref()
                        .and_then(|d| parse_duration(d).ok())
                        .unwrap_or(Duration::from_secs(30));
                    g.open_until = Some(Instant::now() + cooldown);
                }
            }
            _ => {
                g.failures = 0;
            }
        }
    }

    async fn http(&self, c: &Call<'_>) -> Result<Value, StepError> {
        let url = c.config.url.as_deref().unwrap_or_default();
        let resp = self
            .http
            .post(url)
            .header("Idempotency-Key", c.key)
            .json(&json!({
                "operation": c.operation, "run_id": c.run_id, "step": c.step, "payload": c.payload,
            }))
            .send()
            .await
            .map_err(|e| {
                StepError::retryable(
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "unavailable"
                    },
                    format!("connector `{}`: cannot reach `{url}`: {e}", c.name),
                )
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let clipped: String = text.chars().take(200).collect();
        if status.as_u16() == 429 {
            return Err(StepError::retryable(
                "rate_limited",
                format!("connector `{}`: `{url}` answered 429: {clipped}", c.name),
            ));
        }
        if status.is_server_error() {
            return Err(StepError::retryable(
                "unavailable",
                format!(
                    "connector `{}`: `{url}` answered {status}: {clipped}",
                    c.name
                ),
            ));
        }
        if !status.is_success() {
            return Err(StepError::fatal(
                "invalid_input",
                format!(
                    "connector `{}`: `{url}` answered {status}: {clipped}",
                    c.name
                ),
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or_else(|_| json!({ "body": text })))
    }

    async fn local(&self, c: &Call<'_>) -> Result<Value, StepError> {
        if let Some(rate) = c.config.failure_rate {
            let mut rng = Rng::new(sha256_u64(&[c.key, &c.attempt.to_string()]));
            if rng.unit() < rate {
                return Err(StepError::retryable(
                    "unavailable",
                    format!(
                        "connector `{}`: 503 service unavailable (simulated)",
                        c.name
                    ),
                ));
            }
        }
        let mut all = self.local.lock().await;
        let state = all.entry(c.name.to_string()).or_default();
        let path = self.file(c.name);
        if !state.loaded {
            load(&path, state).map_err(|e| {
                StepError::retryable("unavailable", format!("connector `{}`: {e}", c.name))
            })?;
        }
        if let Some(existing) = state.by_key.get(c.key) {
            if c.config.kind == "ledger" {
                return Err(StepError::fatal(
                    "duplicate_key",
                    format!(
                        "connector `{}`: idempotency key `{}` was already used by entry {}",
                        c.name,
                        c.key,
                        existing.get("seq").and_then(Value::as_u64).unwrap_or(0)
                    ),
                )
                .with_existing(existing.clone()));
            }
            return Ok(existing.clone());
        }
        let allowed: &[&str] = match c.config.kind.as_str() {
            "ledger" => &["post", "reverse"],
            "tickets" => &["create"],
            _ => &["send"],
        };
        if !allowed.contains(&c.operation) {
            return Err(StepError::fatal(
                "invalid_input",
                format!(
                    "connector `{}` ({}) has no operation `{}`; it has {}",
                    c.name,
                    c.config.kind,
                    c.operation,
                    allowed.join(", ")
                ),
            ));
        }
        state.next_seq += 1;
        let record = json!({
            "seq": state.next_seq,
            "key": c.key,
            "operation": c.operation,
            "run_id": c.run_id,
            "step": c.step,
            "payload": c.payload,
            "at_ms": crate::now_ms(),
        });
        let line = format!("{record}\n");
        let appender = match &state.appender {
            Some(a) => a,
            None => state
                .appender
                .insert(Appender::start(path.clone()).map_err(|e| {
                    StepError::retryable(
                        "unavailable",
                        format!("connector `{}`: cannot start its writer: {e}", c.name),
                    )
                })?),
        };
        // Queued under the lock, so lines reach the file in `seq` order; the sync is awaited
        // without it, so calls in flight share it.
        let written = appender.submit(line.into_bytes());
        state.by_key.insert(c.key.to_string(), record.clone());
        drop(all);
        let failed = match written.await {
            Ok(Ok(())) => return Ok(record),
            Ok(Err(e)) => e,
            Err(_) => "the file's writer has stopped".to_string(),
        };
        // Not durable: forget it, so a retry writes it again.
        let mut all = self.local.lock().await;
        if let Some(state) = all.get_mut(c.name)
            && state.by_key.get(c.key) == Some(&record)
        {
            state.by_key.remove(c.key);
        }
        Err(StepError::retryable(
            "unavailable",
            format!(
                "connector `{}`: cannot write `{}`: {failed}",
                c.name,
                path.display()
            ),
        ))
    }
}

fn load(path: &Path, state: &mut Local) -> Result<(), String> {
    state.loaded = true;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
    };
    let mut good = 0usize;
    let mut corrupt = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            // The last line without its newline: a torn tail, cut off below.
            break;
        }
        good += line.len();
        let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) else {
            // A damaged line with effects after it: skip it and say so, keep the rest.
            corrupt.push(n + 1);
            continue;
        };
        if let Some(k) = v.get("key").and_then(Value::as_str) {
            state.next_seq = state
                .next_seq
                .max(v.get("seq").and_then(Value::as_u64).unwrap_or(0));
            state.by_key.insert(k.to_string(), v);
        }
    }
    if !corrupt.is_empty() {
        tracing::warn!(
            file = %path.display(),
            lines = ?corrupt,
            "connector file has damaged lines; they were skipped and the rest loaded (an effect \
             on a damaged line may be made again when its run resumes)"
        );
    }
    if good < text.len() {
        // A torn tail: the call that wrote it never returned.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot repair `{}`: {e}", path.display()))?;
        f.set_len(good as u64)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot repair `{}`: {e}", path.display()))?;
    }
    Ok(())
}

/// Reads a local connector's effects (one JSON object per effect).
pub fn effects(path: &Path) -> std::io::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_damaged_line_is_skipped_the_rest_loaded_and_only_a_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.jsonl");
        let text = concat!(
            "{\"seq\":1,\"key\":\"a\"}\n",
            "{\"seq\":2,\"ke\u{0}garbage\n",
            "{\"seq\":3,\"key\":\"c\"}\n",
            "{\"seq\":4,\"key\":\"d\"",
        );
        std::fs::write(&path, text).unwrap();
        let mut state = Local::default();
        load(&path, &mut state).unwrap();
        let mut keys: Vec<&String> = state.by_key.keys().collect();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(state.next_seq, 3);
        // The damaged line stays for inspection; the torn tail (never acknowledged) is gone.
        let left = std::fs::read_to_string(&path).unwrap();
        assert!(left.ends_with("{\"seq\":3,\"key\":\"c\"}\n"), "{left}");
        assert!(left.contains("garbage"));
    }
}
