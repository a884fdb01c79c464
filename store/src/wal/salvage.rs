//! A damaged WAL: telling a torn tail from corruption, and keeping what can be read.
//!
//! A crash mid-append leaves a partial record at the end of the newest segment, with nothing
//! valid after it; opening truncates it (it was never acknowledged). Damage in the middle (a
//! flipped bit, a bad sector) is followed by valid, acknowledged records: truncating there would
//! drop them silently, so [`Wal::open`](super::Wal::open) refuses to start, naming the segment and
//! the bytes, and points to `custos wal check` ([`check`]: what is damaged, what would be kept)
//! and `custos wal salvage` ([`salvage`]: keep every readable record, set the damaged files
//! aside).

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    HEADER_BYTES, MAGIC, MAX_RECORD_BYTES, checksum, encode_record, list_segments, parse_header,
    segment_path, sync_dir,
};
use crate::{Error, Result};

/// A valid record found at `at` in a segment's bytes.
struct Found {
    seq: u64,
    group_start: bool,
    payload: std::ops::Range<usize>,
    next: usize,
}

/// The record at `at`, if its header and checksum are valid.
fn record_at(buf: &[u8], at: usize) -> Option<Found> {
    let header: &[u8; HEADER_BYTES] = buf
        .get(at..at.checked_add(HEADER_BYTES)?)?
        .try_into()
        .ok()?;
    let (len, group_start, crc, seq_bytes) = parse_header(header);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let start = at + HEADER_BYTES;
    let payload = buf.get(start..start.checked_add(len)?)?;
    (checksum(group_start, &seq_bytes, payload) == crc).then(|| Found {
        seq: u64::from_le_bytes(seq_bytes),
        group_start,
        payload: start..start + len,
        next: start + len,
    })
}

/// The first valid record after `from` whose sequence number could follow `after` (a record a
/// damaged stretch hides is at most 2^32 numbers further on), and that starts a group when
/// `group_start`.
fn resync(buf: &[u8], from: usize, after: u64, group_start: bool) -> Option<(usize, Found)> {
    let end = buf.len().checked_sub(HEADER_BYTES)?;
    (from..=end).find_map(|at| {
        let seq = u64::from_le_bytes(buf[at + 8..at + 16].try_into().ok()?);
        if seq <= after || seq - after > 1 << 32 {
            return None;
        }
        record_at(buf, at)
            .filter(|f| f.group_start || !group_start)
            .map(|f| (at, f))
    })
}

/// Where a readable record that starts a later group follows a bad one at byte `bad` of the
/// segment at `path` (whose last good record before it has sequence number `last`):
/// `Some((byte, seq))` means the bad record was acknowledged, so the damage is corruption, not a
/// torn tail.
pub(crate) fn valid_after(path: &Path, bad: u64, last: u64) -> Result<Option<(u64, u64)>> {
    let buf = fs::read(path)
        .map_err(|e| Error::io(format!("cannot read WAL segment `{}`", path.display()), e))?;
    let from = usize::try_from(bad).unwrap_or(usize::MAX).saturating_add(1);
    Ok(resync(&buf, from, last, true).map(|(at, f)| (at as u64, f.seq)))
}

/// A stretch of a segment that holds no readable record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// Byte where it starts.
    pub from_byte: u64,
    /// Byte where readable records resume; `None` when none follow (at the end of the newest
    /// segment, a torn tail from a crash: nothing there was acknowledged).
    pub to_byte: Option<u64>,
    /// The sequence numbers lost in it (first, last), when records resume after it.
    pub lost: Option<(u64, u64)>,
}

/// One segment as read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Readable records.
    pub records: u64,
    /// Their first and last sequence numbers.
    pub seqs: Option<(u64, u64)>,
    /// Damaged stretches, in order.
    pub damage: Vec<Damage>,
}

/// What `custos wal check` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Every segment, oldest first.
    pub segments: Vec<SegmentReport>,
}

impl Report {
    /// Whether the log opens as it is: no damage, except a torn tail of the newest segment.
    pub fn is_clean(&self) -> bool {
        let n = self.segments.len();
        self.segments.iter().enumerate().all(|(i, s)| {
            s.damage.is_empty()
                || (i + 1 == n && s.damage.len() == 1 && s.damage[0].to_byte.is_none())
        })
    }

    /// Sequence numbers lost to damage.
    pub fn lost(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| &s.damage)
            .filter_map(|d| d.lost)
            .map(|(a, b)| b.saturating_sub(a) + 1)
            .sum()
    }
}

/// Reads one segment, skipping damage; calls `keep` with each readable record.
fn read_segment(
    path: &Path,
    mut last: u64,
    mut keep: impl FnMut(u64, &[u8]),
) -> Result<SegmentReport> {
    let buf = fs::read(path)
        .map_err(|e| Error::io(format!("cannot read WAL segment `{}`", path.display()), e))?;
    let mut report = SegmentReport {
        path: path.to_path_buf(),
        records: 0,
        seqs: None,
        damage: Vec::new(),
    };
    let mut at = if buf.starts_with(MAGIC) {
        MAGIC.len()
    } else {
        report.damage.push(Damage {
            from_byte: 0,
            to_byte: None,
            lost: None,
        });
        0
    };
    while at < buf.len() {
        let found = match record_at(&buf, at) {
            Some(f) if f.seq > last => Some((at, f)),
            _ => {
                let resumed = resync(&buf, at + 1, last, false);
                let (from, to) = (at as u64, resumed.as_ref().map(|(p, _)| *p as u64));
                let lost = resumed
                    .as_ref()
                    .and_then(|(_, f)| (f.seq > last + 1).then(|| (last + 1, f.seq - 1)));
                match report.damage.last_mut() {
                    Some(d) if d.to_byte.is_none() && d.from_byte == 0 && from == 0 => {
                        d.to_byte = to;
                        d.lost = lost;
                    }
                    _ => report.damage.push(Damage {
                        from_byte: from,
                        to_byte: to,
                        lost,
                    }),
                }
                resumed
            }
        };
        let Some((_, f)) = found else { break };
        keep(f.seq, &buf[f.payload.clone()]);
        report.records += 1;
        let first = report.seqs.map_or(f.seq, |(a, _)| a);
        report.seqs = Some((first, f.seq));
        last = f.seq;
        at = f.next;
    }
    Ok(report)
}

/// Reads every segment of the WAL in `dir`, skipping damage (`custos wal check`).
pub fn check(dir: &Path) -> Result<Report> {
    read(dir, |_, _| {})
}

fn read(dir: &Path, mut keep: impl FnMut(u64, &[u8])) -> Result<Report> {
    let mut report = Report::default();
    let mut last = 0u64;
    for seg in list_segments(dir)? {
        let s = read_segment(
            &seg.path,
            last.max(seg.first_seq.saturating_sub(1)),
            &mut keep,
        )?;
        if let Some((_, l)) = s.seqs {
            last = l;
        }
        report.segments.push(s);
    }
    Ok(report)
}

/// What [`salvage`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Salvaged {
    /// What the damaged log held.
    pub report: Report,
    /// Records kept (those above the table's watermark), renumbered from `after + 1`.
    pub kept: u64,
    /// Where the damaged segments were moved.
    pub damaged: PathBuf,
}

/// The directory a salvage builds the new log in, beside `dir`.
pub(crate) fn staging(dir: &Path) -> PathBuf {
    dir.with_extension("salvaged")
}

/// Finishes or undoes a salvage a crash interrupted (called when the WAL is opened): with both
/// the old log and the new one present, the swap had not begun, so the new one goes (the salvage
/// can be run again); with only the new one, the swap was half done and is finished.
pub(crate) fn settle(dir: &Path) -> Result<()> {
    let new = staging(dir);
    if !new.exists() {
        return Ok(());
    }
    let io = |what: &str, e| Error::io(format!("{what} `{}`", new.display()), e);
    if dir.exists() {
        fs::remove_dir_all(&new).map_err(|e| io("cannot remove an unfinished salvage", e))?;
    } else {
        fs::rename(&new, dir).map_err(|e| io("cannot finish the salvage", e))?;
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Keeps every readable record of the WAL in `dir` above `after` (the table's watermark),
/// renumbered from `after + 1` in order, in a new log; the old segments move to
/// `DIR.damaged-UNIX` beside it. The caller holds the data directory's lock.
pub fn salvage(dir: &Path, after: u64) -> Result<Salvaged> {
    settle(dir)?;
    let mut payloads = Vec::new();
    let report = read(dir, |seq, p| {
        if seq > after {
            payloads.push(p.to_vec());
        }
    })?;
    let new = staging(dir);
    fs::create_dir_all(&new)
        .map_err(|e| Error::io(format!("cannot create `{}`", new.display()), e))?;
    let path = segment_path(&new, after + 1);
    let mut bytes = MAGIC.to_vec();
    for (i, p) in payloads.iter().enumerate() {
        // All synced below, before the log is used: each may count as its own group, so damage
        // to any of them later is told from a torn write.
        encode_record(&mut bytes, true, after + 1 + i as u64, p);
    }
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} `{}`", p.display()), e);
    {
        use std::io::Write as _;
        let mut f = fs::File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        f.write_all(&bytes)
            .map_err(|e| io("cannot write", &path, e))?;
        f.sync_all().map_err(|e| io("cannot sync", &path, e))?;
    }
    sync_dir(&new)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let damaged = dir.with_extension(format!("damaged-{secs}"));
    fs::rename(dir, &damaged).map_err(|e| io("cannot move aside", dir, e))?;
    fs::rename(&new, dir).map_err(|e| io("cannot put in place", &new, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(Salvaged {
        report,
        kept: payloads.len() as u64,
        damaged,
    })
}
