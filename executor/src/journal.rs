//! The run journal: every run's progress, kept in an embedded ACID store (redb).
//!
//! # Layout
//! One redb database file, `DATA/executor/journal.redb`, with five tables. Values are JSON.
//!
//! | table | key | value |
//! |---|---|---|
//! | `runs` | run id | [`RunRecord`]: the run's whole state (cursor, outputs, pending intent, effects) |
//! | `keys` | idempotency key of a start request | run id |
//! | `definitions` | SHA-256 of a workflow definition's text | the text |
//! | `reviews` | review task id | [`ReviewTask`] |
//! | `cache` | model, prompt version and input hash | the model's answer |
//!
//! # Invariants
//! - A run's record is replaced whole in one transaction: a reader (or a resumed executor) sees
//!   the state before or after a step, never half of one.
//! - Before a side-effecting call the record holds the call's *intent* (step, attempt and
//!   idempotency key) durably; the result replaces the intent in the same transaction that moves
//!   the cursor. A resumed run with an intent repeats the call with the same key, so the external
//!   system sees one effect.
//! - Commits are `Durability::Immediate` (fsync'ed before `commit` returns). Concurrent runs'
//!   writes are grouped: one writer thread drains every pending batch into one transaction (group
//!   commit), and each caller is answered only after that transaction is durable.
//! - One process opens a journal at a time (redb locks the file); a second gets
//!   [`Error::Journal`] naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

mod rewrite;

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
const DEFINITIONS: TableDefinition<&str, &str> = TableDefinition::new("definitions");
const REVIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("reviews");
const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
/// Flags about the file itself; never copied by [`Journal::rewrite`].
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Set in the transaction that clears records: the file still holds their old pages until a
/// rewrite, which a crash may have prevented.
const REWRITE_OWED: &str = "rewrite_owed";

/// Where a run is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are being run.
    Running,
    /// Waiting for a human review.
    Waiting,
    /// Undoing completed effects after a failure.
    Compensating,
    /// Done; `outcome` says how.
    Finished,
}

/// A side-effecting call about to be made (journaled before the call).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    /// The step's index.
    pub step: usize,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The idempotency key sent with the call.
    pub key: String,
    /// When the attempt started (ms since the epoch).
    pub started_ms: i64,
}

/// A completed effect that has a compensation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Effect {
    /// The step that made it.
    pub step: usize,
    /// Its idempotency key.
    pub key: String,
    /// What the connector answered.
    pub output: Value,
    /// Compensated already.
    #[serde(default)]
    pub compensated: bool,
}

/// A span to emit, kept in the journal until it is sent (a decision span waits for its review).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpanRecord {
    /// Span name.
    pub name: String,
    /// Span id (16 hex digits), derived from run, step and attempt.
    pub span_id: String,
    /// Start (ms since the epoch).
    pub start_ms: i64,
    /// End (ms since the epoch).
    pub end_ms: i64,
    /// Attributes (string, number or boolean values).
    pub attributes: BTreeMap<String, Value>,
    /// Error message, when the span failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run's durable state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Workflow definition version.
    pub workflow_version: String,
    /// SHA-256 of the definition text the run started with (table `definitions`).
    pub definition: String,
    /// The input.
    pub input: Value,
    /// Who started it (`Custos::User` id for reviews' four-eyes rule).
    pub started_by: String,
    /// The start request's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Status.
    pub status: RunStatus,
    /// `success`, `failure`, `escalated` or `compensated` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Start (ms since the epoch).
    pub started_ms: i64,
    /// End (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// Index of the next step to run.
    pub cursor: usize,
    /// Attempt of the cursor step (1-based), and when the step's first attempt started.
    pub attempt: u32,
    /// A side-effecting call in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// Step outputs by step id.
    pub outputs: BTreeMap<String, Value>,
    /// Completed effects in order.
    pub effects: Vec<Effect>,
    /// A person approved the run's decision.
    pub human_approved: bool,
    /// Where to go after a review a policy denial asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<usize>,
    /// The review the run waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// Trace id (32 hex digits).
    pub trace_id: String,
    /// A decision span held until its review (or the next side effect) completes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_decision: Option<SpanRecord>,
    /// Step spans emitted (retries included).
    pub steps_run: u32,
    /// Retries made.
    pub retries: u32,
    /// Why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Runs assigned to a canary version, by step.
    #[serde(default)]
    pub canary: BTreeMap<String, bool>,
    /// When the run's data (input, outputs, effects' answers, error) was erased, by an erasure
    /// or the journal's retention (ms since the epoch); what remains is how the run went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_ms: Option<i64>,
}

/// A review task's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for a reviewer.
    Pending,
    /// Approved: the automation's proposal stands.
    Approved,
    /// Rejected: a person overrode the proposal.
    Rejected,
    /// Nobody decided in time.
    TimedOut,
}

/// A human review task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReviewTask {
    /// Task id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// The human step's id.
    pub step: String,
    /// Queue (`accounts-payable`, `support`).
    pub queue: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Times out at (ms since the epoch).
    pub due_ms: i64,
    /// Status.
    pub status: ReviewStatus,
    /// What the reviewer needs: input summary, model and prompt version, confidence, the
    /// proposal, the policy decision that asked for review and its advice, the trace id.
    pub context: Value,
    /// Who decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// Their reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Decided (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<i64>,
    /// Sequence number of the audit record of the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replace a run's record.
    Run(Box<RunRecord>),
    /// Map a start request's idempotency key to its run.
    Key {
        /// The key.
        key: String,
        /// The run.
        run_id: String,
    },
    /// Store a definition text under its hash.
    Definition {
        /// SHA-256 hex.
        hash: String,
        /// The text.
        text: String,
    },
    /// Replace a review task.
    Review(Box<ReviewTask>),
    /// Cache a model answer.
    Cache {
        /// The cache key.
        key: String,
        /// The answer.
        value: Value,
    },
    /// Forget every cached model answer (they derive from runs' inputs).
    ClearCache,
    /// Records were cleared: the file owes a [`Journal::rewrite`].
    OweRewrite,
    /// A condition, not a write: the review task must still be pending when this transaction
    /// applies, else none of the caller's writes apply and the caller gets [`Error::Conflict`]
    /// (a compare-and-set: of two decisions racing for one task, one wins).
    ExpectPending {
        /// The review task.
        review: String,
    },
}

/// Why a caller's writes did not apply.
#[derive(Debug, Clone)]
enum Failure {
    /// A condition ([`Write::ExpectPending`]) did not hold; nothing of the caller's was written.
    Conflict(String),
    /// The transaction failed; nothing of anyone's was written.
    Failed(String),
}

type Reply = tokio::sync::oneshot::Sender<std::result::Result<(), Failure>>;

/// The journal: reads go straight to the database, writes through the group-commit writer.
#[derive(Clone)]
pub struct Journal {
    /// Behind a lock only so that [`Journal::rewrite`] can put a fresh file in its place.
    db: Arc<RwLock<Database>>,
    path: PathBuf,
    tx: mpsc::Sender<(Vec<Write>, Reply)>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn jerr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Journal(format!("`{}`: {e}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| jerr(path, e))?;
        }
        // The previous holder in this process may still be closing (its writer thread ends when
        // the last handle is dropped): wait a little before calling the file busy.
        let mut tries = 0;
        let db = loop {
            match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other,
            }
        };
        let db = db.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Journal(format!(
                "`{}` is open in another process (a running `custos serve` or `custos run`); send runs to the server with `--server URL`, or stop it",
                path.display()
            )),
            other => jerr(path, other),
        })?;
        // Create the tables so that readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| jerr(path, e))?;
        {
            txn.open_table(RUNS).map_err(|e| jerr(path, e))?;
            txn.open_table(KEYS).map_err(|e| jerr(path, e))?;
            txn.open_table(DEFINITIONS).map_err(|e| jerr(path, e))?;
            txn.open_table(REVIEWS).map_err(|e| jerr(path, e))?;
            txn.open_table(CACHE).map_err(|e| jerr(path, e))?;
            txn.open_table(META).map_err(|e| jerr(path, e))?;
        }
        txn.commit().map_err(|e| jerr(path, e))?;
        let db = Arc::new(RwLock::new(db));
        let (tx, rx) = mpsc::channel::<(Vec<Write>, Reply)>();
        let writer_db = db.clone();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("custos-journal".into())
            .spawn(move || writer(&writer_db, &writer_path, &rx))
            .map_err(|e| jerr(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            tx,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits `writes` in one durable transaction (grouped with other callers' writes).
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.tx
            .send((writes, reply))
            .map_err(|_| Error::Journal("the journal writer has stopped".into()))?;
        done.await
            .map_err(|_| Error::Journal("the journal writer has stopped".into()))?
            .map_err(|f| match f {
                Failure::Conflict(m) => Error::Conflict(m),
                Failure::Failed(m) => Error::Journal(m),
            })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let txn = db.begin_read().map_err(|e| jerr(&self.path, e))?;
        f(&txn).map_err(|e| jerr(&self.path, e))
    }

    fn one<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let raw = self.read(|t| Ok(t.open_table(table)?.get(key)?.map(|v| v.value().to_vec())))?;
        raw.map(|b| decode(&self.path, &b)).transpose()
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>> {
        let raws = self.read(|t| {
            let mut out = Vec::new();
            for row in t.open_table(table)?.iter()? {
                out.push(row?.1.value().to_vec());
            }
            Ok(out)
        })?;
        raws.iter().map(|b| decode(&self.path, b)).collect()
    }

    /// A run's record.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.one(RUNS, run_id)
    }

    /// Every run's record, in run id order.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        self.all(RUNS)
    }

    /// The run a start request's idempotency key started.
    pub fn run_for_key(&self, key: &str) -> Result<Option<String>> {
        self.read(|t| Ok(t.open_table(KEYS)?.get(key)?.map(|v| v.value().to_string())))
    }

    /// A definition text by hash.
    pub fn definition(&self, hash: &str) -> Result<Option<String>> {
        self.read(|t| {
            Ok(t.open_table(DEFINITIONS)?
                .get(hash)?
                .map(|v| v.value().to_string()))
        })
    }

    /// A review task.
    pub fn review(&self, id: &str) -> Result<Option<ReviewTask>> {
        self.one(REVIEWS, id)
    }

    /// Every review task, in id order.
    pub fn reviews(&self) -> Result<Vec<ReviewTask>> {
        self.all(REVIEWS)
    }

    /// A cached model answer.
    pub fn cached(&self, key: &str) -> Result<Option<Value>> {
        self.one(CACHE, key)
    }
}

fn decode<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| jerr(path, format!("unreadable record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> std::result::Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| format!("cannot encode a record: {e}"))
}

/// The group-commit writer: one transaction for everything pending.
fn writer(db: &RwLock<Database>, path: &Path, rx: &mpsc::Receiver<(Vec<Write>, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let db = db.read().unwrap_or_else(|p| p.into_inner());
        match apply(&db, &batch) {
            Ok(outcomes) => {
                for ((_, reply), conflict) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(conflict.map_or(Ok(()), |m| Err(Failure::Conflict(m))));
                }
            }
            Err(e) => {
                let msg = format!("`{}`: {e}", path.display());
                for (_, reply) in batch {
                    let _ = reply.send(Err(Failure::Failed(msg.clone())));
                }
            }
        }
    }
}

/// The condition of `writes` that does not hold now, if any.
fn unmet(
    writes: &[Write],
    reviews: &redb::Table<'_, &str, &[u8]>,
) -> std::result::Result<Option<String>, String> {
    for w in writes {
        let Write::ExpectPending { review } = w else {
            continue;
        };
        let status = reviews
            .get(review.as_str())
            .map_err(|e| e.to_string())?
            .and_then(|v| serde_json::from_slice::<ReviewTask>(v.value()).ok())
            .map(|t| t.status);
        match status {
            Some(ReviewStatus::Pending) => {}
            Some(other) => {
                return Ok(Some(format!(
                    "review task `{review}` was decided meanwhile ({other:?})"
                )));
            }
            None => return Ok(Some(format!("no review task `{review}`"))),
        }
    }
    Ok(None)
}

/// Applies every caller's writes in one transaction, skipping (and naming) the callers whose
/// conditions do not hold.
fn apply(
    db: &Database,
    batch: &[(Vec<Write>, Reply)],
) -> std::result::Result<Vec<Option<String>>, String> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut runs = txn.open_table(RUNS).map_err(|e| e.to_string())?;
        let mut keys = txn.open_table(KEYS).map_err(|e| e.to_string())?;
        let mut defs = txn.open_table(DEFINITIONS).map_err(|e| e.to_string())?;
        let mut reviews = txn.open_table(REVIEWS).map_err(|e| e.to_string())?;
        let mut cache = txn.open_table(CACHE).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        for (writes, _) in batch {
            // Decided per caller, before any of its writes, seeing earlier callers' writes.
            if let Some(conflict) = unmet(writes, &reviews)? {
                outcomes.push(Some(conflict));
                continue;
            }
            outcomes.push(None);
            for w in writes {
                let r = match w {
                    Write::Run(r) => runs
                        .insert(r.run_id.as_str(), encode(r)?.as_slice())
                        .map(drop),
                    Write::Key { key, run_id } => {
                        keys.insert(key.as_str(), run_id.as_str()).map(drop)
                    }
                    Write::Definition { hash, text } => {
                        defs.insert(hash.as_str(), text.as_str()).map(drop)
                    }
                    Write::Review(r) => reviews
                        .insert(r.id.as_str(), encode(r)?.as_slice())
                        .map(drop),
                    Write::Cache { key, value } => cache
                        .insert(key.as_str(), encode(value)?.as_slice())
                        .map(drop),
                    Write::ClearCache => cache.retain(|_, _| false),
                    Write::OweRewrite => meta.insert(REWRITE_OWED, "yes").map(drop),
                    Write::ExpectPending { .. } => Ok(()),
                };
                r.map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(outcomes)
}
