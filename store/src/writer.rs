//! The WAL writer thread (group commit): it gathers every queued append, writes them, syncs
//! once, makes them visible in the memtable, then answers all of them. After a failed append no
//! further append is safe until a restart truncates the log, so every later one is refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tokio::sync::oneshot;

use crate::wal::Wal;
use crate::{Error, Inner, Result, StoreStats};

/// What the store asks of the writer thread.
pub(crate) enum WalCmd {
    /// Log a batch (its encoded `payload`) and answer with its sequence number once synced.
    Append {
        payload: Vec<u8>,
        batch: RecordBatch,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Remove the segments wholly at or below `through` (flushed to the table); `done`, when
    /// given, hears when the segments are gone.
    Truncate {
        through: u64,
        done: Option<oneshot::Sender<Result<()>>>,
    },
    /// Close the active segment (after this group's appends) and answer with the last sequence
    /// number written so far: every record up to it is then in a closed segment, which a
    /// truncation through it removes whole. Erasure uses this so no erased byte stays behind in
    /// a segment that also holds newer records.
    Seal { reply: oneshot::Sender<Result<u64>> },
}

/// The commands gathered into one group commit.
#[derive(Default)]
struct Group {
    payloads: Vec<Vec<u8>>,
    pending: Vec<(RecordBatch, oneshot::Sender<Result<u64>>)>,
    truncate: Option<u64>,
    truncated: Vec<oneshot::Sender<Result<()>>>,
    seal: Vec<oneshot::Sender<Result<u64>>>,
}

/// The most payload bytes gathered into one group.
const GROUP_BYTES: usize = 64 << 20;

/// Everything queued behind `first`, up to [`GROUP_BYTES`].
fn gather(first: WalCmd, rx: &std::sync::mpsc::Receiver<WalCmd>) -> Group {
    let mut group = Group::default();
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            WalCmd::Append {
                payload,
                batch,
                reply,
            } => {
                bytes += payload.len();
                group.payloads.push(payload);
                group.pending.push((batch, reply));
            }
            WalCmd::Truncate { through, done } => {
                group.truncate = Some(group.truncate.map_or(through, |t| t.max(through)));
                group.truncated.extend(done);
            }
            WalCmd::Seal { reply } => group.seal.push(reply),
        }
        if bytes < GROUP_BYTES {
            next = rx.try_recv().ok();
        }
    }
    group
}

/// Counts one sync of `payloads` that took `took`.
fn record_sync(stats: &StoreStats, took: Duration, payloads: &[Vec<u8>]) {
    stats
        .wal_sync_micros
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    if let Some(observe) = stats.sync_observer.get() {
        observe(took.as_secs_f64());
    }
    stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
    stats
        .wal_records
        .fetch_add(payloads.len() as u64, Ordering::Relaxed);
    stats.wal_bytes.fetch_add(
        payloads.iter().map(|p| p.len() as u64 + 16).sum(),
        Ordering::Relaxed,
    );
}

/// Makes a synced group visible in the memtable (sequence numbers from `first_seq`), then
/// answers each append with its sequence number.
fn publish(
    inner: &Inner,
    first_seq: u64,
    pending: Vec<(RecordBatch, oneshot::Sender<Result<u64>>)>,
) -> std::result::Result<(), String> {
    let mut replies = Vec::with_capacity(pending.len());
    {
        let mut v = inner
            .view
            .lock()
            .map_err(|_| "view lock poisoned".to_string())?;
        let before = v.memtable.bytes();
        let v = &mut *v;
        for (i, (batch, reply)) in pending.into_iter().enumerate() {
            let seq = first_seq + i as u64;
            v.runs.push(&mut v.memtable, seq, batch, None);
            replies.push((seq, reply));
        }
        // Counted under the view lock, so a flush cannot subtract it first.
        inner
            .mem_bytes
            .fetch_add(v.memtable.bytes() - before, Ordering::AcqRel);
    }
    for (seq, reply) in replies {
        let _ = reply.send(Ok(seq));
    }
    Ok(())
}

/// The writer thread's loop, until every sender is gone.
pub(crate) fn wal_writer(inner: Arc<Inner>, mut wal: Wal, rx: std::sync::mpsc::Receiver<WalCmd>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut failed: Option<String> = None;
    // After a failed append, the log is probed every second even without exports, so readiness
    // comes back once the disk has space (a balancer that took the server out sends none).
    let mut probing = false;
    loop {
        let first = if probing {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    if wal.probe().is_ok() {
                        inner.health.wal_ok();
                        probing = false;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            }
        };
        let group = gather(first, &rx);
        if let Some(msg) = &failed {
            for (_, reply) in group.pending {
                let _ = reply.send(Err(Error::Closed(msg.clone())));
            }
            continue;
        }
        if !group.payloads.is_empty() {
            let started = Instant::now();
            match wal.append(&group.payloads) {
                Ok(first_seq) => {
                    inner.health.wal_ok();
                    probing = false;
                    record_sync(&inner.stats, started.elapsed(), &group.payloads);
                    if let Err(msg) = publish(&inner, first_seq, group.pending) {
                        failed = Some(msg);
                        continue;
                    }
                }
                Err(e) => {
                    // Nothing in this group is acknowledged. The log may now end in a partial
                    // record: cut it off, and the next group tries again (a full disk may have
                    // space by then). If even that fails, the log's end is unknown and no
                    // further append is safe until a restart truncates it.
                    let msg = format!("WAL append failed: {e}");
                    for (_, reply) in group.pending {
                        let _ = reply.send(Err(Error::Closed(msg.clone())));
                    }
                    match wal.recover() {
                        Ok(()) => {
                            tracing::error!(
                                "{msg}; nothing of it was acknowledged, the next export tries again"
                            );
                            inner.health.wal_failed(msg);
                            probing = true;
                        }
                        Err(r) => {
                            let msg =
                                format!("{msg}, and cutting off its partial record failed: {r}");
                            tracing::error!("{msg}; refusing writes until restart");
                            inner.health.wal_stopped(msg.clone());
                            failed = Some(msg);
                        }
                    }
                }
            }
        }
        finish(
            &mut wal,
            failed.as_deref(),
            group.seal,
            group.truncate,
            group.truncated,
        );
    }
}

/// Seals and truncates after a group's appends, answering whoever waits.
fn finish(
    wal: &mut Wal,
    failed: Option<&str>,
    seal: Vec<oneshot::Sender<Result<u64>>>,
    truncate: Option<u64>,
    truncated: Vec<oneshot::Sender<Result<()>>>,
) {
    let closed = |m: &str| Error::Closed(m.to_string());
    if !seal.is_empty() {
        let sealed = match failed {
            Some(m) => Err(m.to_string()),
            None => wal.seal().map_err(|e| e.to_string()),
        };
        for reply in seal {
            let _ = reply.send(sealed.clone().map_err(|m| closed(&m)));
        }
    }
    let Some(through) = truncate else { return };
    let result = match failed {
        Some(m) => Err(m.to_string()),
        None => wal.remove_through(through).map_err(|e| e.to_string()),
    };
    if let Err(e) = &result {
        tracing::warn!(error = %e, "cannot remove flushed WAL segments");
    }
    for done in truncated {
        let _ = done.send(result.clone().map_err(|m| closed(&m)));
    }
}
