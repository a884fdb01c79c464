//! Moving acknowledged spans from the memtable into the table (flushes, in commits keyed by
//! the WAL sequence number) and keeping the table healthy (retention, compaction, vacuum), with
//! the background loops that do both.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::rollup::Change;
use crate::{Error, Result, SpanTable, Store, WalCmd};

impl Store {
    /// Writes every memtable entry to the table, in commits of at most `flush_bytes` (so one
    /// commit never builds arrays too large to write). Returns the number of rows flushed.
    pub async fn flush(&self) -> Result<usize> {
        // Flush what is there now; spans arriving meanwhile wait for the next flush.
        let target = self
            .inner
            .view
            .lock()
            .map_err(|_| Error::Closed("view lock poisoned".into()))?
            .memtable
            .last_seq();
        let Some(target) = target else { return Ok(0) };
        let mut total = 0;
        loop {
            let (rows, watermark) = self.flush_some().await?;
            total += rows;
            if rows == 0 || watermark >= target {
                return Ok(total);
            }
        }
    }

    /// One commit of the oldest memtable entries the table does not hold yet; returns the rows
    /// written and the table's watermark after it.
    async fn flush_some(&self) -> Result<(usize, u64)> {
        let mut guard = self.inner.table.lock().await;
        let Some(table) = guard.as_mut() else {
            return Ok((0, 0));
        };
        let view_watermark = self
            .inner
            .view
            .lock()
            .map_err(|_| Error::Closed("view lock poisoned".into()))?
            .watermark;
        if table.watermark() > view_watermark {
            // An earlier commit landed but readers were not switched to it (its follow-up failed):
            // switch now, so its entries are neither shown twice nor written twice.
            self.show(table).await?;
        }
        let (batches, last, run_ids) = {
            let mut v = self
                .inner
                .view
                .lock()
                .map_err(|_| Error::Closed("view lock poisoned".into()))?;
            let (batches, last) = v.memtable.oldest_after(
                table.watermark(),
                self.inner.options.flush_bytes.max(1 << 20),
            );
            let run_ids = v.runs.flushing(&batches)?;
            (batches, last, run_ids)
        };
        let Some(last) = last else {
            return Ok((0, table.watermark()));
        };
        // Which runs still wait for their root must be durable before the spans that need it.
        if let Some(bytes) = run_ids {
            let dir = self.inner.options.data_dir.clone();
            tokio::task::spawn_blocking(move || crate::runs::write(&dir, &bytes))
                .await
                .map_err(|e| Error::Closed(format!("run-identity write task failed: {e}")))??;
        }
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let started = Instant::now();
        let flushed = batches.clone();
        if let Err(e) = table.append(batches, last).await {
            self.inner
                .stats
                .flush_errors
                .fetch_add(1, Ordering::Relaxed);
            // The commit may have landed before the error: the watermark tells.
            table.reload().await?;
            if table.watermark() < last {
                return Err(e);
            }
        }
        self.roll_flush(table, &flushed).await;
        self.show(table).await?;
        let watermark = table.watermark();
        let micros = started.elapsed().as_micros() as u64;
        let stats = &self.inner.stats;
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats.flush_micros.fetch_add(micros, Ordering::Relaxed);
        stats.last_flush_micros.store(micros, Ordering::Relaxed);
        stats.last_flush_unix.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Ordering::Relaxed,
        );
        if let Ok(tx) = self.inner.wal_tx.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send(WalCmd::Truncate {
                through: watermark,
                done: None,
            });
        }
        Ok((rows, watermark))
    }

    /// Applies retention, compacts small files and vacuums unreferenced ones, once.
    pub async fn maintain(&self) -> Result<()> {
        let mut guard = self.inner.table.lock().await;
        let Some(table) = guard.as_mut() else {
            return Ok(());
        };
        let o = &self.inner.options;
        if let Some(days) = o.retention_days
            && let Some(before) = table.apply_retention(days).await?
        {
            self.roll_change(table, Change::Before(before)).await;
        }
        self.fold_run_ids(table).await?;
        if table
            .compact(o.compact_min_files, o.target_file_bytes)
            .await?
        {
            self.inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
        }
        // Files replaced by compaction or removed by retention stay on disk until vacuumed.
        // Kept at least an hour for readers in flight, and as long as an erasure's grace.
        let keep = o.erase_grace.max(Duration::from_secs(3600));
        table.vacuum(keep).await?;
        self.maintain_rollups(keep).await?;
        self.purge_due_locked(table, None).await?;
        self.show(table).await
    }

    /// Folds the run-id aliases into the files ([`crate::runs`]): rewrites the rows they apply
    /// to, then retires them.
    pub(crate) async fn fold_run_ids(&self, table: &mut SpanTable) -> Result<()> {
        let (aliases, dates) = self
            .inner
            .view
            .lock()
            .map_err(|_| Error::Closed("view lock poisoned".into()))?
            .runs
            .to_fold();
        if aliases.is_empty() {
            return Ok(());
        }
        let rows = crate::runs::fold(table, aliases.clone(), &dates).await?;
        tracing::info!(rows, runs = aliases.len(), "folded run ids into the table");
        self.roll_change(table, Change::Dates(dates.clone())).await;
        // Readers switch to the rewritten files before the aliases go.
        self.show(table).await?;
        let bytes = {
            let mut v = self
                .inner
                .view
                .lock()
                .map_err(|_| Error::Closed("view lock poisoned".into()))?;
            v.runs.folded(&aliases, &dates);
            v.runs.persisted()?
        };
        if let Some(bytes) = bytes {
            let dir = self.inner.options.data_dir.clone();
            tokio::task::spawn_blocking(move || crate::runs::write(&dir, &bytes))
                .await
                .map_err(|e| Error::Closed(format!("run-identity write task failed: {e}")))??;
        }
        Ok(())
    }

    /// Points readers at the table's loaded version and, in the same critical section, drops the
    /// memtable entries that version holds (none after compaction or retention, which change files
    /// but not the watermark).
    pub(crate) async fn show(&self, table: &SpanTable) -> Result<()> {
        let provider = table.provider().await?;
        let rollups = self.rollup_views().await?;
        let watermark = table.watermark();
        let mut v = self
            .inner
            .view
            .lock()
            .map_err(|_| Error::Closed("view lock poisoned".into()))?;
        v.table = provider;
        v.watermark = watermark;
        v.rollups = rollups;
        let released = v.memtable.remove_through(watermark);
        self.inner.mem_bytes.fetch_sub(released, Ordering::AcqRel);
        Ok(())
    }

    /// Compacts every partition holding at least `min_files` files, now.
    pub async fn compact_now(&self, min_files: usize) -> Result<bool> {
        let mut guard = self.inner.table.lock().await;
        let Some(table) = guard.as_mut() else {
            return Ok(false);
        };
        let did = table
            .compact(min_files, self.inner.options.target_file_bytes)
            .await?;
        if did {
            self.inner.stats.compactions.fetch_add(1, Ordering::Relaxed);
            self.show(table).await?;
        }
        Ok(did)
    }

    pub(crate) async fn flush_loop(&self) {
        loop {
            let interval = self.inner.options.flush_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.inner.flush_wanted.notified() => {}
                _ = self.inner.closing.notified() => return,
            }
            if !self.is_writable() {
                return;
            }
            match self.flush().await {
                Ok(_) => self.inner.health.flush_ok(),
                Err(e) => {
                    tracing::error!(error = %e, "flush failed; the spans stay in the WAL and memtable and will be retried");
                    self.inner.health.flush_failed(e.to_string());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    pub(crate) async fn maintenance_loop(&self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.options.maintenance_interval) => {}
                _ = self.inner.closing.notified() => return,
            }
            if !self.is_writable() {
                return;
            }
            if let Err(e) = self.maintain().await {
                tracing::error!(error = %e, "table maintenance failed");
            }
        }
    }
}
