//! Rewriting the journal file so that no byte of a cleared record survives in it: redb reuses
//! freed pages but never clears them (erasure and retention, `crate::erase`).

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{CACHE, DEFINITIONS, Journal, KEYS, META, REVIEWS, REWRITE_OWED, RUNS, jerr};
use crate::Result;

impl Journal {
    /// Whether records were cleared since the file was last rewritten.
    pub fn rewrite_owed(&self) -> Result<bool> {
        self.read(|t| Ok(t.open_table(META)?.get(REWRITE_OWED)?.is_some()))
    }

    /// Copies every table into a new file and puts it in place of the old one, so that no byte of
    /// a replaced or deleted record survives in the file (redb reuses freed pages but never clears
    /// them). Readers and writers wait while it runs; the journal stays open throughout.
    pub fn rewrite(&self) -> Result<()> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let tmp = self.path.with_extension("redb.rewrite");
        let _ = std::fs::remove_file(&tmp);
        let fresh = Database::create(&tmp).map_err(|e| jerr(&tmp, e))?;
        copy_tables(&db, &fresh).map_err(|e| jerr(&self.path, e))?;
        // The new file's tables exist before anyone reads it (`meta` starts empty: nothing owed).
        let txn = fresh.begin_write().map_err(|e| jerr(&tmp, e))?;
        txn.open_table(META).map_err(|e| jerr(&tmp, e))?;
        txn.commit().map_err(|e| jerr(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| jerr(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| jerr(dir, e))?;
        }
        *db = fresh;
        Ok(())
    }
}

/// Copies the five record tables of `from` into `to` in one durable transaction.
fn copy_tables(from: &Database, to: &Database) -> std::result::Result<(), redb::Error> {
    let read = from.begin_read()?;
    let write = to.begin_write()?;
    for table in [RUNS, REVIEWS, CACHE] {
        let mut out = write.open_table(table)?;
        for row in read.open_table(table)?.iter()? {
            let (k, v) = row?;
            out.insert(k.value(), v.value())?;
        }
    }
    for table in [KEYS, DEFINITIONS] {
        let mut out = write.open_table(table)?;
        for row in read.open_table(table)?.iter()? {
            let (k, v) = row?;
            out.insert(k.value(), v.value())?;
        }
    }
    write.commit()?;
    Ok(())
}
