//! Whether the store can take writes right now, and if not which part fails and why: the WAL
//! (an append failed: a full disk, an I/O error) or the flush (commits to the table keep
//! failing). The server's `/readyz` reports it and the receivers answer 503 while the WAL fails.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A part of the store that is failing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failing {
    /// Unix seconds of the first failure in this run of failures.
    pub since_unix: u64,
    /// Failures in a row.
    pub count: u64,
    /// The latest error.
    pub error: String,
}

/// What is failing now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Appends to the WAL fail: exports are refused (503) until one succeeds again.
    pub wal: Option<Failing>,
    /// The WAL cannot be written at all until a restart (its end is unknown after an error).
    pub wal_stopped: Option<String>,
    /// Flushes fail; the spans stay in the WAL and the memtable and are retried.
    pub flush: Option<Failing>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The health record the writer and the flush loop update.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    state: Mutex<Health>,
}

fn fail(slot: &mut Option<Failing>, error: String) {
    match slot {
        Some(f) => {
            f.count += 1;
            f.error = error;
        }
        None => {
            *slot = Some(Failing {
                since_unix: now_unix(),
                count: 1,
                error,
            });
        }
    }
}

impl Tracker {
    pub(crate) fn wal_failed(&self, error: String) {
        if let Ok(mut s) = self.state.lock() {
            fail(&mut s.wal, error);
        }
    }

    pub(crate) fn wal_stopped(&self, error: String) {
        if let Ok(mut s) = self.state.lock() {
            fail(&mut s.wal, error.clone());
            s.wal_stopped = Some(error);
        }
    }

    pub(crate) fn wal_ok(&self) {
        if let Ok(mut s) = self.state.lock()
            && s.wal.is_some()
            && s.wal_stopped.is_none()
        {
            tracing::info!("WAL appends succeed again");
            s.wal = None;
        }
    }

    pub(crate) fn flush_failed(&self, error: String) {
        if let Ok(mut s) = self.state.lock() {
            fail(&mut s.flush, error);
        }
    }

    pub(crate) fn flush_ok(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.flush = None;
        }
    }

    pub(crate) fn get(&self) -> Health {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Health {
    /// Why the store is not ready, if it is not: the WAL fails, or flushes have failed for
    /// longer than `flush_grace` (a single failed flush is retried and does not count).
    pub fn not_ready(&self, flush_grace: Duration) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(w) = &self.wal_stopped {
            out.push(format!(
                "wal: writes stopped until a restart after an error: {w}"
            ));
        } else if let Some(w) = &self.wal {
            out.push(format!(
                "wal: {} append(s) in a row failed, the latest: {}",
                w.count, w.error
            ));
        }
        if let Some(f) = &self.flush
            && now_unix().saturating_sub(f.since_unix) >= flush_grace.as_secs()
        {
            out.push(format!(
                "flush: failing for {} s ({} attempts), the latest: {}",
                now_unix().saturating_sub(f.since_unix),
                f.count,
                f.error
            ));
        }
        out
    }
}
