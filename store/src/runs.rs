//! Run identity across the spans of a trace.
//!
//! A span names its run with `automation.run_id`; the normalizer gives a span without one its
//! trace id, so a plain OpenTelemetry trace is one run. Instrumentation often sets the run id on
//! the root span only: then the children must take the root's id, or one run reads as two (the
//! root's and the trace id's). A span that carries its own run id keeps it (a run may span
//! traces). The rule, applied here, for every reader:
//!
//! > a span whose run id is its trace id (it carried none) and whose trace has a root span with a
//! > run id of its own belongs to that run; such a span that names no workflow takes its root's.
//!
//! Roots usually end, and so arrive, last. Resolution happens where the spans are:
//!
//! - **in the memtable**, eagerly: a batch's children are rewritten when their root is in the same
//!   batch or was seen lately; when a root arrives after its children, the memtable entries that
//!   hold them are rewritten in place (the WAL keeps what arrived; replay resolves again).
//! - **in the table**, through an alias: children flushed before their root arrived keep the trace
//!   id on disk; the root's arrival records `trace → run` with the partitions that hold them.
//!   Readers apply the aliases as they scan ([`crate::SpansProvider`]), and maintenance folds them
//!   into the files (a Delta update of exactly those rows), after which the alias retires.
//!
//! Which traces are open (children flushed, root not seen) and the aliases not yet folded survive
//! restarts in `DATA/run-ids.json`, written before the flush commit that needs it. Memory is
//! bounded: at most [`MAX_OPEN`] open traces and [`MAX_ROOTS`] recent roots are remembered (the
//! oldest are forgotten first: a root arriving after its children were forgotten, or a child
//! arriving after its root was, starts a run of its own, counted in [`RunIds::forgotten`]).

mod fold;
mod udf;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use custos_schema::col;
use serde::{Deserialize, Serialize};

pub(crate) use fold::fold;
pub use udf::RunOf;

use crate::memtable::Memtable;
use crate::{Error, Result};

/// The most traces remembered as open (children seen, root not yet).
pub const MAX_OPEN: usize = 500_000;
/// The most recent roots remembered for children that arrive after them.
pub const MAX_ROOTS: usize = 200_000;
/// The file that keeps open traces and unfolded aliases across restarts.
pub(crate) const FILE: &str = "run-ids.json";

/// What a trace's children take from its root: its run id (when they carry none) and its
/// workflow (when they name none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The root's run id (its trace id when it carried none).
    pub run: Arc<str>,
    /// The root's workflow.
    pub workflow: Option<Arc<str>>,
}

/// `trace → identity` for the table's spans that carried no run id, as readers apply them.
pub type Aliases = Arc<HashMap<u128, Ident>>;

/// A trace whose children arrived without a run id and whose root has not.
#[derive(Debug, Default, Clone)]
struct Open {
    /// Unix seconds when first seen.
    seen: u64,
    /// Memtable entries (WAL sequence numbers) that hold its children.
    entries: Vec<u64>,
    /// `date` partitions its children were flushed to.
    flushed: BTreeSet<String>,
}

/// A root with a run id or a workflow, for children arriving after it.
#[derive(Debug, Clone)]
struct Root {
    ident: Ident,
    seen: u64,
}

/// The run-identity state of a store (kept under the store's view lock).
#[derive(Debug, Default)]
pub struct RunIds {
    open: HashMap<u128, Open>,
    roots: HashMap<u128, Root>,
    /// Aliases not yet folded into the files, with the partitions that hold their children.
    pending: HashMap<u128, (Ident, BTreeSet<String>)>,
    /// `pending` as readers take it, until it changes.
    published: Option<Aliases>,
    dirty: bool,
    forgotten: u64,
}

/// What one batch's observation asks of the memtable.
pub(crate) struct Observed {
    /// The batch with its children resolved, when any were.
    pub batch: Option<RecordBatch>,
    /// Earlier memtable entries holding children of traces whose root just arrived, with the
    /// runs they belong to.
    pub earlier: Vec<(u64, HashMap<u128, Ident>)>,
}

/// The persisted form of [`RunIds`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// Format version (1).
    version: u32,
    /// Open traces with children in the table: trace id, first seen (unix s), partitions.
    open: Vec<(String, u64, BTreeSet<String>)>,
    /// Aliases not yet folded: trace id, run id, workflow, partitions.
    aliases: Vec<(String, String, Option<String>, BTreeSet<String>)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A trace id's key: its 32 hex digits as a number (`None` for anything else).
pub(crate) fn trace_key(hex: &str) -> Option<u128> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// A string column as `Utf8` (memtable batches are; older WAL records may not be).
fn utf8(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Codec(format!("a span batch has no `{name}` column")))?;
    if c.data_type() == &DataType::Utf8 {
        return Ok(Arc::clone(c));
    }
    cast(c, &DataType::Utf8).map_err(|e| Error::Codec(format!("column `{name}`: {e}")))
}

/// The columns the rule reads, as `Utf8`.
struct Cols {
    trace: ArrayRef,
    run: ArrayRef,
    parent: ArrayRef,
    workflow: ArrayRef,
}

impl Cols {
    fn of(batch: &RecordBatch) -> Result<Self> {
        Ok(Self {
            trace: utf8(batch, col::TRACE_ID)?,
            run: utf8(batch, col::RUN_ID)?,
            parent: utf8(batch, col::PARENT_SPAN_ID)?,
            workflow: utf8(batch, col::WORKFLOW)?,
        })
    }

    fn rows(&self) -> Vec<Row<'_>> {
        let (trace, run) = (self.trace.as_string::<i32>(), self.run.as_string::<i32>());
        let (parent, wf) = (
            self.parent.as_string::<i32>(),
            self.workflow.as_string::<i32>(),
        );
        (0..trace.len())
            .map(|i| {
                let t = (!trace.is_null(i)).then(|| trace.value(i));
                let r = (!run.is_null(i)).then(|| run.value(i));
                Row {
                    trace: t.and_then(trace_key),
                    run: r,
                    workflow: (!wf.is_null(i)).then(|| wf.value(i)),
                    root: parent.is_null(i) || parent.value(i).is_empty(),
                    defaulted: matches!((t, r), (Some(t), Some(r)) if t == r),
                }
            })
            .collect()
    }
}

/// One row's identity.
struct Row<'a> {
    trace: Option<u128>,
    run: Option<&'a str>,
    workflow: Option<&'a str>,
    root: bool,
    /// It carried no run id (its run id is its trace id).
    defaulted: bool,
}

impl Row<'_> {
    /// Whether taking `ident` changes this (defaulted) row.
    fn takes(&self, ident: &Ident) -> bool {
        self.run != Some(&*ident.run) || (self.workflow.is_none() && ident.workflow.is_some())
    }
}

/// `column` of `batch` with row `i` replaced by `new[i]` where given.
fn replace(
    batch: &RecordBatch,
    column: &str,
    new: impl Fn(usize) -> Option<Arc<str>>,
) -> Result<Option<(usize, ArrayRef)>> {
    let schema = batch.schema();
    let Some((idx, field)) = schema.column_with_name(column) else {
        return Ok(None);
    };
    let want = field.data_type().clone();
    let old = utf8(batch, column)?;
    let old = old.as_string::<i32>();
    let mut b = StringBuilder::with_capacity(old.len(), old.value_data().len());
    for i in 0..old.len() {
        match new(i) {
            Some(v) => b.append_value(v),
            None if old.is_null(i) => b.append_null(),
            None => b.append_value(old.value(i)),
        }
    }
    let mut out: ArrayRef = Arc::new(b.finish());
    if want != DataType::Utf8 {
        out = cast(&out, &want).map_err(|e| Error::Codec(format!("column `{column}`: {e}")))?;
    }
    Ok(Some((idx, out)))
}

/// `batch` with row `i` taking `idents[i]` where given: its run id, and its workflow when it
/// names none.
fn rewrite(batch: &RecordBatch, rows: &[Row<'_>], idents: &[Option<Ident>]) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    let run = replace(batch, col::RUN_ID, |i| {
        idents[i].as_ref().map(|d| Arc::clone(&d.run))
    })?;
    let workflow = replace(batch, col::WORKFLOW, |i| {
        match (&idents[i], rows[i].workflow) {
            (Some(d), None) => d.workflow.clone(),
            _ => None,
        }
    })?;
    for (idx, array) in [run, workflow].into_iter().flatten() {
        columns[idx] = array;
    }
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| Error::Codec(e.to_string()))
}

impl RunIds {
    /// The state persisted in `data_dir`, or a fresh one.
    pub(crate) fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()), e)),
        };
        let p: Persisted = serde_json::from_str(&text).map_err(|e| {
            Error::Corrupt(format!(
                "`{}` is not a run-identity file ({e}); restore it from a backup, or delete it \
                 to forget which runs are still waiting for their root span",
                path.display()
            ))
        })?;
        let mut me = Self::default();
        for (t, seen, flushed) in p.open {
            if let Some(k) = trace_key(&t) {
                me.open.insert(
                    k,
                    Open {
                        seen,
                        entries: Vec::new(),
                        flushed,
                    },
                );
            }
        }
        for (t, run, workflow, dates) in p.aliases {
            if let Some(k) = trace_key(&t) {
                let ident = Ident {
                    run: Arc::from(run.as_str()),
                    workflow: workflow.map(|w| Arc::from(w.as_str())),
                };
                me.pending.insert(k, (ident, dates));
            }
        }
        Ok(me)
    }

    /// The aliases readers apply to the table's spans now; `None` when there are none.
    pub(crate) fn aliases(&mut self) -> Option<Aliases> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = &self.pending;
        let a = self.published.get_or_insert_with(|| {
            Arc::new(pending.iter().map(|(k, (d, _))| (*k, d.clone())).collect())
        });
        Some(Arc::clone(a))
    }

    /// Spans that started a run of their own because their trace was forgotten (see the module
    /// docs).
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Traces remembered as open now.
    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    /// Takes in one memtable entry (`seq`): learns its roots, resolves its children, and says
    /// which earlier entries hold children of the roots it brought.
    pub(crate) fn observe(&mut self, seq: u64, batch: &RecordBatch) -> Result<Observed> {
        let cols = Cols::of(batch)?;
        let rows = cols.rows();
        let now = now_secs();
        // Roots first: a batch usually holds a whole trace, root included.
        let mut local: HashMap<u128, Ident> = HashMap::new();
        let mut earlier: HashMap<u64, HashMap<u128, Ident>> = HashMap::new();
        for row in rows.iter().filter(|r| r.root) {
            let Some(t) = row.trace else { continue };
            let open = self.open.remove(&t);
            let (Some(run), workflow) = (row.run, row.workflow.map(Arc::<str>::from)) else {
                continue;
            };
            if row.defaulted && workflow.is_none() {
                continue; // nothing to give: the run is the trace, and it names no workflow
            }
            let ident = Ident {
                run: Arc::from(run),
                workflow,
            };
            if let Some(open) = open {
                for e in open.entries.iter().filter(|e| **e != seq) {
                    earlier.entry(*e).or_default().insert(t, ident.clone());
                }
                if !open.flushed.is_empty() {
                    self.pending.insert(t, (ident.clone(), open.flushed));
                    self.published = None;
                }
                self.dirty = true;
            }
            self.roots.insert(
                t,
                Root {
                    ident: ident.clone(),
                    seen: now,
                },
            );
            local.insert(t, ident);
        }
        let mut idents: Vec<Option<Ident>> = vec![None; rows.len()];
        let mut changed = false;
        for (i, row) in rows.iter().enumerate() {
            let (Some(t), true, false) = (row.trace, row.defaulted, row.root) else {
                continue;
            };
            if let Some(d) = local
                .get(&t)
                .or_else(|| self.roots.get(&t).map(|x| &x.ident))
            {
                if row.takes(d) {
                    idents[i] = Some(d.clone());
                    changed = true;
                }
            } else {
                let o = self.open.entry(t).or_insert_with(|| Open {
                    seen: now,
                    ..Open::default()
                });
                if o.entries.last() != Some(&seq) {
                    o.entries.push(seq);
                }
            }
        }
        self.bound();
        Ok(Observed {
            batch: if changed {
                Some(rewrite(batch, &rows, &idents)?)
            } else {
                None
            },
            earlier: earlier.into_iter().collect(),
        })
    }

    /// Pushes entry `seq` into `memtable` with its children resolved (`payload` is the WAL
    /// payload's length for a replayed entry), and resolves the earlier entries its roots
    /// complete. Returns the bytes the earlier entries' rewrites added. A batch this pass cannot
    /// read (the normalizer builds every batch, so none should be) is stored as it came, its
    /// spans keeping the run ids they carry.
    pub(crate) fn push(
        &mut self,
        memtable: &mut Memtable,
        seq: u64,
        batch: RecordBatch,
        payload: Option<usize>,
    ) -> usize {
        let (batch, earlier) = match self.observe(seq, &batch) {
            Ok(seen) => (seen.batch.unwrap_or(batch), seen.earlier),
            Err(e) => {
                tracing::error!(error = %e, seq, "cannot resolve the run ids of a batch");
                (batch, Vec::new())
            }
        };
        match payload {
            Some(len) => memtable.push_decoded(seq, batch, len),
            None => memtable.push(seq, batch),
        }
        let mut added = 0;
        for (at, traces) in earlier {
            match memtable.map_entry(at, |b| Self::resolve_entry(b, &traces)) {
                Ok(n) => added += n,
                Err(e) => tracing::error!(error = %e, seq = at, "cannot resolve run ids"),
            }
        }
        added
    }

    /// Rewrites an earlier entry's children of the given traces.
    pub(crate) fn resolve_entry(
        batch: &RecordBatch,
        traces: &HashMap<u128, Ident>,
    ) -> Result<RecordBatch> {
        let cols = Cols::of(batch)?;
        let rows = cols.rows();
        let idents: Vec<Option<Ident>> = rows
            .iter()
            .map(|row| match (row.trace, row.defaulted, row.root) {
                (Some(t), true, false) => traces.get(&t).filter(|d| row.takes(d)).cloned(),
                _ => None,
            })
            .collect();
        rewrite(batch, &rows, &idents)
    }

    /// Notes the partitions that the children of open traces in `batches` are about to be
    /// flushed to; returns the state to persist first, when it changed.
    pub(crate) fn flushing(&mut self, batches: &[RecordBatch]) -> Result<Option<Vec<u8>>> {
        for batch in batches {
            let (cols, date) = (Cols::of(batch)?, utf8(batch, col::DATE)?);
            let date = date.as_string::<i32>();
            let rows = cols.rows();
            for (i, row) in rows.iter().enumerate() {
                let (Some(t), true) = (row.trace, row.defaulted) else {
                    continue;
                };
                if let Some(o) = self.open.get_mut(&t)
                    && !date.is_null(i)
                    && o.flushed.insert(date.value(i).to_string())
                {
                    self.dirty = true;
                }
            }
        }
        self.persisted()
    }

    /// The state to persist, when it changed since the last call.
    pub(crate) fn persisted(&mut self) -> Result<Option<Vec<u8>>> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(None);
        }
        let hex = |k: &u128| format!("{k:032x}");
        let p = Persisted {
            version: 1,
            open: self
                .open
                .iter()
                .filter(|(_, o)| !o.flushed.is_empty())
                .map(|(k, o)| (hex(k), o.seen, o.flushed.clone()))
                .collect(),
            aliases: self
                .pending
                .iter()
                .map(|(k, (id, d))| {
                    let wf = id.workflow.as_ref().map(|w| w.to_string());
                    (hex(k), id.run.to_string(), wf, d.clone())
                })
                .collect(),
        };
        serde_json::to_vec(&p)
            .map(Some)
            .map_err(|e| Error::Codec(format!("cannot encode the run-identity state: {e}")))
    }

    /// The aliases waiting to be folded into the files, and the partitions they touch.
    pub(crate) fn to_fold(&self) -> (HashMap<u128, Ident>, BTreeSet<String>) {
        let mut dates = BTreeSet::new();
        let aliases = self
            .pending
            .iter()
            .map(|(k, (id, d))| {
                dates.extend(d.iter().cloned());
                (*k, id.clone())
            })
            .collect();
        (aliases, dates)
    }

    /// Retires the aliases folded into the files of `dates` (those `folded` held).
    pub(crate) fn folded(&mut self, folded: &HashMap<u128, Ident>, dates: &BTreeSet<String>) {
        for k in folded.keys() {
            if let Some((_, d)) = self.pending.get_mut(k) {
                d.retain(|x| !dates.contains(x));
                if d.is_empty() {
                    self.pending.remove(k);
                }
                self.dirty = true;
            }
        }
        self.published = None;
    }

    /// Forgets the oldest open traces and roots beyond their bounds.
    fn bound(&mut self) {
        if self.open.len() > MAX_OPEN {
            for k in oldest_half(self.open.iter().map(|(k, o)| (*k, o.seen))) {
                self.open.remove(&k);
                self.forgotten += 1;
            }
            self.dirty = true;
        }
        if self.roots.len() > MAX_ROOTS {
            for k in oldest_half(self.roots.iter().map(|(k, r)| (*k, r.seen))) {
                self.roots.remove(&k);
            }
        }
    }
}

/// The keys of the older half of `entries` (by when they were seen). Called once the map has
/// doubled past half its bound, so the sort costs O(log n) per insertion.
fn oldest_half(entries: impl Iterator<Item = (u128, u64)>) -> Vec<u128> {
    let mut v: Vec<(u64, u128)> = entries.map(|(k, seen)| (seen, k)).collect();
    v.sort_unstable();
    v.truncate(v.len() / 2);
    v.into_iter().map(|(_, k)| k).collect()
}

/// Writes the persisted state (`bytes`) to `DATA/run-ids.json` durably.
pub(crate) fn write(data_dir: &Path, bytes: &[u8]) -> Result<()> {
    let path: PathBuf = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let io = |what: &str, e| Error::io(format!("cannot {what} `{}`", path.display()), e);
    std::fs::write(&tmp, bytes).map_err(|e| io("write", e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("replace", e))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))
}

#[cfg(test)]
mod tests;
