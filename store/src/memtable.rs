//! The memtable: acknowledged spans that are durable in the WAL but not yet in the table.
//!
//! Each entry is one WAL record's batch, tagged with its sequence number. Entries arrive in sequence
//! order. A flush takes every entry up to some sequence number, commits them to the table, and then
//! removes them here; a reader pairs a table snapshot with the entries above that snapshot's flush
//! watermark, so it sees each span exactly once (see [`crate::Store`]).

use std::collections::VecDeque;

use arrow::record_batch::RecordBatch;

/// One WAL record's worth of spans.
#[derive(Debug, Clone)]
pub struct MemEntry {
    /// The WAL sequence number of the record.
    pub seq: u64,
    /// The normalized spans.
    pub batch: RecordBatch,
    /// Memory charged to the budget for this entry.
    pub bytes: usize,
}

/// Batches in sequence order.
#[derive(Debug, Default)]
pub struct Memtable {
    entries: VecDeque<MemEntry>,
    rows: usize,
    bytes: usize,
}

impl Memtable {
    /// Appends a batch; `seq` must be above every sequence number already held.
    pub fn push(&mut self, seq: u64, batch: RecordBatch) {
        let bytes = batch.get_array_memory_size();
        self.push_sized(seq, batch, bytes);
    }

    /// Appends a batch decoded from a WAL payload of `payload_bytes`. Its columns slice the one
    /// buffer the IPC message was read into, which `get_array_memory_size` would count once per
    /// column (about 30 times the memory held); the payload's length is what it holds.
    pub fn push_decoded(&mut self, seq: u64, batch: RecordBatch, payload_bytes: usize) {
        let bytes = batch.get_array_memory_size().min(payload_bytes);
        self.push_sized(seq, batch, bytes);
    }

    fn push_sized(&mut self, seq: u64, batch: RecordBatch, bytes: usize) {
        self.rows += batch.num_rows();
        self.bytes += bytes;
        self.entries.push_back(MemEntry { seq, batch, bytes });
    }

    /// Replaces the batch of entry `seq` (when still held) by `f` of it; returns the bytes it
    /// added to the entry's charge (the rewritten column; the rest is shared).
    pub fn map_entry<E>(
        &mut self,
        seq: u64,
        f: impl FnOnce(&RecordBatch) -> Result<RecordBatch, E>,
    ) -> Result<usize, E> {
        let Ok(at) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(0);
        };
        let Some(e) = self.entries.get_mut(at) else {
            return Ok(0);
        };
        let new = f(&e.batch)?;
        let added = new
            .get_array_memory_size()
            .saturating_sub(e.batch.get_array_memory_size());
        e.batch = new;
        e.bytes += added;
        self.bytes += added;
        Ok(added)
    }

    /// Batches with a sequence number above `after`, oldest first.
    pub fn batches_after(&self, after: u64) -> Vec<RecordBatch> {
        self.entries
            .iter()
            .filter(|e| e.seq > after)
            .map(|e| e.batch.clone())
            .collect()
    }

    /// The oldest entries above `after`, as many as fit in `max_bytes` (at least one), and the
    /// highest sequence number among them.
    pub fn oldest_after(&self, after: u64, max_bytes: usize) -> (Vec<RecordBatch>, Option<u64>) {
        let mut out = Vec::new();
        let mut last = None;
        let mut bytes = 0usize;
        for e in self.entries.iter().filter(|e| e.seq > after) {
            if !out.is_empty() && bytes + e.bytes > max_bytes {
                break;
            }
            bytes += e.bytes;
            out.push(e.batch.clone());
            last = Some(e.seq);
        }
        (out, last)
    }

    /// Removes entries up to and including `through`; returns the bytes released.
    pub fn remove_through(&mut self, through: u64) -> usize {
        let mut released = 0;
        while let Some(e) = self.entries.front() {
            if e.seq > through {
                break;
            }
            if let Some(e) = self.entries.pop_front() {
                self.rows -= e.batch.num_rows();
                self.bytes -= e.bytes;
                released += e.bytes;
            }
        }
        released
    }

    /// The highest sequence number held.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes held (Arrow buffer memory).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
