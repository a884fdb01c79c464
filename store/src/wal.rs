//! The write-ahead log: where an export becomes durable before it is acknowledged.
//!
//! One file on purpose (~700 lines): the format, the group-committing writer and the replay reader
//! share the record layout and its invariants, and are read together when one of them changes.
//!
//! # On-disk format
//!
//! The WAL is a directory of segment files named `{first_seq:020}.wal`, where `first_seq` is the
//! sequence number of the segment's first record. Each segment starts with an 8-byte magic,
//! `CUSTWAL1`, followed by records:
//!
//! ```text
//! +----------------+----------------+----------------+---------------------+
//! | len: u32 LE    | crc: u32 LE    | seq: u64 LE    | payload: len bytes  |
//! +----------------+----------------+----------------+---------------------+
//! ```
//!
//! - The top bit of `len` marks the first record of a group commit ([`GROUP_START`]); the
//!   length is the other 31 bits.
//! - `crc` is CRC-32 (IEEE) over the 8 bytes of `seq` followed by the payload, with a `1` byte
//!   first when the record starts a group.
//! - `payload` is opaque to the WAL; the store writes one Arrow IPC stream holding one batch of
//!   normalized spans.
//!
//! # Invariants
//!
//! 1. Sequence numbers increase by exactly one from record to record, across segments.
//! 2. A record is acknowledged to its writer only after the bytes are written and the file is
//!    `fdatasync`'d. Records written together share one sync (group commit).
//! 3. Only the newest segment is ever appended to. A record that fails its length or checksum
//!    check at the end of the newest segment is a torn write from a crash: on open for writing, the
//!    segment is truncated to the last good record, unless a readable record that *starts a later
//!    group* follows it: a group is written only after the previous one's sync returned, so the
//!    bad record was acknowledged, this is damage, not a crash, and opening refuses ([`salvage`]
//!    says what to do). Readable records of the bad record's own group were never acknowledged
//!    (a power cut may keep a later page of a write and lose an earlier one). Readers stop at it.
//!    A bad record in an older segment, or a break in the sequence, is corruption and is reported
//!    as an error, never skipped.
//! 4. A segment is deleted only when every record in it is at or below the sequence number that a
//!    durable table commit records as flushed ([`Wal::remove_through`]).
//! 5. Payloads larger than [`MAX_RECORD_BYTES`] are refused at append time, so a corrupt length
//!    field can never make a reader allocate more than that.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"CUSTWAL1";
/// Bytes of a record header: length, checksum, sequence number.
pub const HEADER_BYTES: usize = 16;
/// The largest payload a record may carry (256 MiB).
pub const MAX_RECORD_BYTES: usize = 256 << 20;
/// The top bit of `len`: the record is the first of a group commit (written after every
/// earlier group's sync returned). Checksummed: a flagged record's CRC covers a `1` byte first.
pub const GROUP_START: u32 = 1 << 31;

/// The checksum of a record.
fn checksum(group_start: bool, seq: &[u8; 8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if group_start {
        hasher.update(&[1]);
    }
    hasher.update(seq);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, group_start: bool, seq: u64, payload: &[u8]) {
    let seq = seq.to_le_bytes();
    let flag = if group_start { GROUP_START } else { 0 };
    buf.extend_from_slice(&(payload.len() as u32 | flag).to_le_bytes());
    buf.extend_from_slice(&checksum(group_start, &seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq);
    buf.extend_from_slice(payload);
}

/// A record header's fields: payload length, group start, checksum, sequence number.
pub(crate) fn parse_header(header: &[u8; HEADER_BYTES]) -> (usize, bool, u32, [u8; 8]) {
    let raw = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[8..16]);
    (
        (raw & !GROUP_START) as usize,
        raw & GROUP_START != 0,
        crc,
        seq,
    )
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// The record's sequence number.
    pub seq: u64,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
}

/// Options for opening a WAL for writing.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment once the current one exceeds this many bytes.
    pub segment_bytes: u64,
    /// Whether appends are synced to disk before they return. Off only in benchmarks that measure
    /// what durability costs.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            sync: true,
        }
    }
}

/// The writable log. One process owns it at a time; the store takes a lock file for that.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Closed segments, oldest first, with the last sequence number each holds.
    closed: Vec<(Segment, u64)>,
    active: Segment,
    file: File,
    active_bytes: u64,
    /// The sequence number the next record gets.
    next_seq: u64,
    /// A fault the next append reports (tests).
    #[cfg(test)]
    fail_next: Option<std::io::ErrorKind>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => {
            return Err(Error::io(
                format!("cannot list WAL directory `{}`", dir.display()),
                e,
            ));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot list `{}`", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let Ok(first_seq) = stem.parse::<u64>() else {
            continue;
        };
        segments.push(Segment {
            path: entry.path(),
            first_seq,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// The outcome of scanning one segment.
struct Scan {
    /// Offset just past the last good record.
    good_len: u64,
    /// Whether the scan stopped at a bad or partial record before the end of the file.
    torn: bool,
    /// Sequence number of the last good record.
    last_seq: Option<u64>,
}

/// Reads a segment, passing each good record to `f`. Stops at the first bad record.
fn scan_segment(seg: &Segment, mut f: impl FnMut(u64, Vec<u8>) -> Result<()>) -> Result<Scan> {
    let file = File::open(&seg.path).map_err(|e| {
        Error::io(
            format!("cannot open WAL segment `{}`", seg.path.display()),
            e,
        )
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat `{}`", seg.path.display()), e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if file_len < MAGIC.len() as u64 {
        return Ok(Scan {
            good_len: 0,
            // Even an empty file is torn: its magic never made it to disk.
            torn: true,
            last_seq: None,
        });
    }
    reader
        .read_exact(&mut magic)
        .map_err(|e| Error::io(format!("cannot read `{}`", seg.path.display()), e))?;
    if &magic != MAGIC {
        return Err(Error::Corrupt(format!(
            "WAL segment `{}` does not start with the magic `CUSTWAL1`",
            seg.path.display()
        )));
    }
    let mut offset = MAGIC.len() as u64;
    let mut last_seq = None;
    let mut expected = seg.first_seq;
    loop {
        if offset == file_len {
            return Ok(Scan {
                good_len: offset,
                torn: false,
                last_seq,
            });
        }
        let torn = Scan {
            good_len: offset,
            torn: true,
            last_seq,
        };
        if file_len - offset < HEADER_BYTES as u64 {
            return Ok(torn);
        }
        let mut header = [0u8; HEADER_BYTES];
        reader
            .read_exact(&mut header)
            .map_err(|e| Error::io(format!("cannot read `{}`", seg.path.display()), e))?;
        let (len, group_start, crc, seq_bytes) = parse_header(&header);
        let seq = u64::from_le_bytes(seq_bytes);
        if len > MAX_RECORD_BYTES || (file_len - offset - HEADER_BYTES as u64) < len as u64 {
            return Ok(torn);
        }
        let mut payload = vec![0u8; len];
        reader
            .read_exact(&mut payload)
            .map_err(|e| Error::io(format!("cannot read `{}`", seg.path.display()), e))?;
        if checksum(group_start, &seq_bytes, &payload) != crc {
            return Ok(torn);
        }
        if seq != expected {
            return Err(Error::Corrupt(format!(
                "WAL segment `{}` holds sequence number {seq} where {expected} was expected",
                seg.path.display()
            )));
        }
        f(seq, payload)?;
        last_seq = Some(seq);
        expected += 1;
        offset += (HEADER_BYTES + len) as u64;
    }
}

/// Invariant 1 across segments: a segment with records starts right after the previous one ends,
/// and the first one kept starts at or below `after + 1` (nothing above the watermark is missing).
fn check_continuity(seg: &Segment, prev_last: Option<u64>, after: u64) -> Result<()> {
    let expected_max = match prev_last {
        Some(p) if seg.first_seq != p + 1 => {
            return Err(Error::Corrupt(format!(
                "WAL segment `{}` starts at sequence number {} but the previous segment ends at {p}; a segment is missing",
                seg.path.display(),
                seg.first_seq
            )));
        }
        Some(_) => return Ok(()),
        None => after + 1,
    };
    if seg.first_seq > expected_max {
        return Err(Error::Corrupt(format!(
            "WAL segment `{}` starts at sequence number {} but the table holds only up to {after}; records in between are missing",
            seg.path.display(),
            seg.first_seq
        )));
    }
    Ok(())
}

/// Reads every record with a sequence number above `after` without modifying anything, for readers
/// that must not disturb a running writer. A torn tail in the newest segment ends the read.
pub fn read_after(dir: &Path, after: u64) -> Result<Vec<WalRecord>> {
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    let mut prev_last: Option<u64> = None;
    let n = segments.len();
    for (i, seg) in segments.iter().enumerate() {
        // Skip segments entirely at or below `after`: the next segment starts at or below after+1.
        if let Some(next) = segments.get(i + 1)
            && next.first_seq <= after + 1
        {
            continue;
        }
        let scan = scan_segment(seg, |seq, payload| {
            if seq > after {
                out.push(WalRecord { seq, payload });
            }
            Ok(())
        })?;
        if let Some(last) = scan.last_seq {
            check_continuity(seg, prev_last, after)?;
            prev_last = Some(last);
        }
        if scan.torn && i + 1 != n {
            return Err(Error::Corrupt(format!(
                "WAL segment `{}` has a damaged record at byte {} but is not the newest segment",
                seg.path.display(),
                scan.good_len
            )));
        }
    }
    Ok(out)
}

/// Cuts a torn record off the end of the newest segment (a crash mid-append: never
/// acknowledged); a torn record in an older segment is corruption and refused.
fn truncate_torn_tail(seg: &Segment, good_len: u64, is_last: bool) -> Result<()> {
    if !is_last {
        return Err(Error::Corrupt(format!(
            "WAL segment `{}` has a damaged record at byte {} but is not the newest segment; \
             move it aside to start without it",
            seg.path.display(),
            good_len
        )));
    }
    tracing::warn!(
        segment = %seg.path.display(),
        at = good_len,
        "truncating torn tail of the WAL"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .map_err(|e| Error::io(format!("cannot open `{}`", seg.path.display()), e))?;
    let len = good_len.max(MAGIC.len() as u64);
    if good_len < MAGIC.len() as u64 {
        // Even the magic was torn: rewrite it.
        f.set_len(0)
            .map_err(|e| Error::io(format!("cannot truncate `{}`", seg.path.display()), e))?;
        (&f).write_all(MAGIC)
            .map_err(|e| Error::io(format!("cannot write `{}`", seg.path.display()), e))?;
    }
    f.set_len(len)
        .map_err(|e| Error::io(format!("cannot truncate `{}`", seg.path.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("cannot sync `{}`", seg.path.display()), e))
}

/// A bad record in the newest segment followed by readable ones is damage, not a torn tail:
/// truncating would drop acknowledged records, so opening stops with what to do.
fn refuse_corruption(dir: &Path, seg: &Segment, scan: &Scan) -> Result<()> {
    let last = scan.last_seq.unwrap_or(seg.first_seq.saturating_sub(1));
    let Some((at, seq)) = salvage::valid_after(&seg.path, scan.good_len, last)? else {
        return Ok(());
    };
    let data = dir.parent().unwrap_or(dir).display().to_string();
    Err(Error::Corrupt(format!(
        "WAL segment `{}` is damaged at byte {}, and readable records follow it (sequence \
         number {seq} at byte {at}): they were acknowledged, so the store will not start by \
         dropping them; run `custos wal check --data {data}` to see the damage, then `custos \
         wal salvage --data {data}` to keep every readable record (the damaged files are kept \
         aside)",
        seg.path.display(),
        scan.good_len
    )))
}

/// Opens the newest segment for appending at its end (`len` bytes), or creates one starting at
/// `next_seq` when there is none.
fn open_active(
    dir: &Path,
    active: Option<(Segment, u64)>,
    next_seq: u64,
) -> Result<(Segment, File, u64)> {
    match active {
        Some((seg, len)) => {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(|e| Error::io(format!("cannot open `{}`", seg.path.display()), e))?;
            file.seek(SeekFrom::End(0))
                .map_err(|e| Error::io(format!("cannot seek `{}`", seg.path.display()), e))?;
            Ok((seg, file, len))
        }
        None => {
            let (seg, file) = create_segment(dir, next_seq)?;
            Ok((seg, file, MAGIC.len() as u64))
        }
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` for writing, truncating a torn tail, and returns every
    /// record with a sequence number above `after` for replay.
    ///
    /// `after` is the highest sequence number already durable elsewhere (the table's flush
    /// watermark). Segments wholly at or below it are deleted.
    pub fn open(dir: &Path, after: u64, options: WalOptions) -> Result<(Self, Vec<WalRecord>)> {
        salvage::settle(dir)?;
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| {
            Error::io(
                format!("cannot create WAL directory `{}`", dir.display()),
                e,
            )
        })?;
        if created && let Some(parent) = dir.parent() {
            // The directory's own entry must be durable before the first acknowledgment.
            sync_dir(parent)?;
        }
        let segments = list_segments(dir)?;
        let n = segments.len();
        let mut replay = Vec::new();
        let mut closed = Vec::new();
        let mut next_seq = after + 1;
        let mut active: Option<(Segment, u64)> = None;
        let mut prev_last: Option<u64> = None;
        for (i, seg) in segments.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let scan = scan_segment(&seg, |seq, payload| {
                if seq > after {
                    replay.push(WalRecord { seq, payload });
                }
                Ok(())
            })?;
            if let Some(last) = scan.last_seq {
                check_continuity(&seg, prev_last, after)?;
                prev_last = Some(last);
            }
            if scan.torn {
                if is_last {
                    refuse_corruption(dir, &seg, &scan)?;
                }
                truncate_torn_tail(&seg, scan.good_len, is_last)?;
            }
            if let Some(last) = scan.last_seq {
                if last + 1 > next_seq {
                    next_seq = last + 1;
                }
            } else if seg.first_seq > next_seq {
                next_seq = seg.first_seq;
            }
            let last = scan.last_seq.unwrap_or(seg.first_seq.saturating_sub(1));
            if is_last {
                active = Some((seg, scan.good_len.max(MAGIC.len() as u64)));
            } else {
                closed.push((seg, last));
            }
        }
        // An empty newest segment whose name disagrees with the next sequence number (the table
        // is ahead of the log) is replaced, so invariant 1 holds inside it.
        if let Some((seg, len)) = &active
            && *len == MAGIC.len() as u64
            && seg.first_seq != next_seq
        {
            fs::remove_file(&seg.path)
                .map_err(|e| Error::io(format!("cannot remove `{}`", seg.path.display()), e))?;
            active = None;
        }
        let (active, file, active_bytes) = open_active(dir, active, next_seq)?;
        let mut wal = Self {
            dir: dir.to_path_buf(),
            options,
            closed,
            active,
            file,
            active_bytes,
            next_seq,
            #[cfg(test)]
            fail_next: None,
        };
        wal.remove_through(after)?;
        Ok((wal, replay))
    }

    /// The sequence number the next appended record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends the payloads as consecutive records and syncs once. Returns the first sequence
    /// number; the payloads get `first..first + payloads.len()`.
    ///
    /// On error nothing is acknowledged; the segment may hold a partial record, which
    /// [`Wal::recover`] (or the next open) cuts off. Append again only after `recover` succeeds.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<u64> {
        #[cfg(test)]
        if let Some(kind) = self.fail_next.take() {
            // A fault as a full disk makes it: part of the group written, then the error.
            let _ = self.file.write_all(b"partial");
            return Err(Error::io(
                "cannot write WAL segment (injected)".to_string(),
                std::io::Error::from(kind),
            ));
        }
        let first = self.next_seq;
        if self.active_bytes >= self.options.segment_bytes {
            self.rotate()?;
        }
        let total: usize = payloads
            .iter()
            .map(|p| HEADER_BYTES + p.as_ref().len())
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut seq = first;
        for p in payloads {
            let p = p.as_ref();
            if p.len() > MAX_RECORD_BYTES {
                return Err(Error::TooLarge(format!(
                    "a WAL record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes",
                    p.len()
                )));
            }
            encode_record(&mut buf, seq == first, seq, p);
            seq += 1;
        }
        self.file.write_all(&buf).map_err(|e| {
            Error::io(
                format!("cannot write WAL segment `{}`", self.active.path.display()),
                e,
            )
        })?;
        if self.options.sync {
            self.file.sync_data().map_err(|e| {
                Error::io(
                    format!("cannot sync WAL segment `{}`", self.active.path.display()),
                    e,
                )
            })?;
        }
        self.active_bytes += buf.len() as u64;
        self.next_seq = seq;
        Ok(first)
    }

    /// After a failed append: cuts whatever it left past the last good record and syncs, so the
    /// log can be appended to again (a disk that was full has space again). Nothing of the failed
    /// append was acknowledged. An error here means the log's end is unknown: stop writing.
    pub fn recover(&mut self) -> Result<()> {
        let path = self.active.path.display().to_string();
        self.file
            .set_len(self.active_bytes)
            .map_err(|e| Error::io(format!("cannot truncate WAL segment `{path}`"), e))?;
        self.file
            .seek(SeekFrom::Start(self.active_bytes))
            .map_err(|e| Error::io(format!("cannot seek WAL segment `{path}`"), e))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io(format!("cannot sync WAL segment `{path}`"), e))
    }

    /// Whether the log can be written again after a failure: a byte is written past the end,
    /// synced and cut off again. Nothing is appended.
    pub fn probe(&mut self) -> Result<()> {
        #[cfg(test)]
        if self.fail_next.is_some() {
            return Err(Error::io(
                "cannot write WAL segment (injected)".to_string(),
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        let written = self
            .file
            .write_all(&[0])
            .and_then(|()| self.file.sync_data());
        let cut = self.recover();
        written.map_err(|e| {
            Error::io(
                format!("cannot write WAL segment `{}`", self.active.path.display()),
                e,
            )
        })?;
        cut
    }

    /// The next append fails with `kind` after writing part of its bytes (tests of the writer).
    #[cfg(test)]
    pub(crate) fn fail_next_append(&mut self, kind: std::io::ErrorKind) {
        self.fail_next = Some(kind);
    }

    fn rotate(&mut self) -> Result<()> {
        let (seg, file) = create_segment(&self.dir, self.next_seq)?;
        let old = std::mem::replace(&mut self.active, seg);
        self.file = file;
        self.active_bytes = MAGIC.len() as u64;
        self.closed.push((old, self.next_seq.saturating_sub(1)));
        Ok(())
    }

    /// Closes the active segment when it holds records and returns the last sequence number
    /// written (0 when none): every record up to it is then in a closed segment.
    pub fn seal(&mut self) -> Result<u64> {
        if self.next_seq > self.active.first_seq {
            self.rotate()?;
        }
        Ok(self.next_seq.saturating_sub(1))
    }

    /// Deletes every segment whose records are all at or below `seq`. When the active segment is
    /// wholly covered and not empty, a new segment is started so the old one can go.
    pub fn remove_through(&mut self, seq: u64) -> Result<()> {
        if self.next_seq > self.active.first_seq && self.next_seq - 1 <= seq {
            self.rotate()?;
        }
        let mut removed_any = false;
        while let Some((_, last)) = self.closed.first() {
            if *last > seq {
                break;
            }
            let (seg, _) = self.closed.remove(0);
            fs::remove_file(&seg.path).map_err(|e| {
                Error::io(
                    format!("cannot remove WAL segment `{}`", seg.path.display()),
                    e,
                )
            })?;
            removed_any = true;
        }
        if removed_any {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(Segment, File)> {
    let path = segment_path(dir, first_seq);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot create WAL segment `{}`", path.display()), e))?;
    file.write_all(MAGIC)
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("cannot sync `{}`", path.display()), e))?;
    sync_dir(dir)?;
    Ok((Segment { path, first_seq }, file))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync directory `{}`", dir.display()), e))
}

pub mod salvage;
#[cfg(test)]
mod tests;
