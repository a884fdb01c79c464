//! What the executor keeps of a run that must go: erasure of chosen runs, and the journal's
//! retention for finished ones.
//!
//! A run's personal data is not only its input: step outputs, effects' answers, the error
//! message, the review task's context and reason, the local connectors' lines and the model cache
//! all derive from it. Forgetting a run clears all of them and keeps how the run went (status,
//! outcome, timings, trace id, who started it), marked with `erased_ms`, so reports and the
//! audit trail that name the run still resolve. Runs not finished are left alone (their input is
//! what they need to resume) and reported. The journal file is then rewritten
//! ([`Journal::rewrite`]) so no old page keeps a byte of what was cleared.

use std::collections::BTreeSet;
use std::path::Path;

use custos_redact::Mention;
use serde_json::{Value, json};

use crate::connector::Connectors;
use crate::journal::{Journal, ReviewTask, RunRecord, RunStatus, Write};
use crate::{Error, Result};

/// Which runs to forget.
#[derive(Debug, Clone, Default)]
pub struct Forget {
    /// These runs (the runs of erased spans).
    pub runs: BTreeSet<String>,
    /// And every run whose journaled data mentions this person.
    pub mention: Option<Mention>,
    /// And every run finished before this time (ms since the epoch): the journal's retention.
    pub finished_before_ms: Option<i64>,
}

/// What was forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Runs whose data was cleared.
    pub runs: Vec<String>,
    /// Selected runs not finished yet, left as they are.
    pub active: Vec<String>,
    /// Review tasks whose context and reason were cleared.
    pub reviews: usize,
    /// Local connectors' lines whose payload was cleared.
    pub connector_records: usize,
}

fn selected(what: &Forget, r: &RunRecord, reviews: &[&ReviewTask]) -> bool {
    if r.erased_ms.is_some() {
        return false;
    }
    if what.runs.contains(&r.run_id) {
        return true;
    }
    if let (Some(before), Some(done)) = (what.finished_before_ms, r.finished_ms)
        && r.status == RunStatus::Finished
        && done < before
    {
        return true;
    }
    let Some(m) = &what.mention else { return false };
    let record = serde_json::to_value(r).unwrap_or(Value::Null);
    m.in_json(&record) || reviews.iter().any(|t| m.in_json(&t.context))
}

/// The run with its data cleared.
fn cleared(mut r: RunRecord, now: i64) -> RunRecord {
    r.input = Value::Null;
    r.outputs.clear();
    for e in &mut r.effects {
        e.output = Value::Null;
    }
    if r.error.is_some() {
        r.error = Some("[erased]".into());
    }
    r.pending_decision = None;
    r.erased_ms = Some(now);
    r
}

/// Forgets the selected runs: their connector lines first (so a crash before the journal's commit
/// leaves them selected for the next call), then the journal's records and the model cache in one
/// transaction that also marks the file as owing a rewrite, then the rewrite. A rewrite a crash
/// prevented is made by the next call.
pub async fn forget(
    journal: &Journal,
    connectors: &Connectors,
    what: &Forget,
) -> Result<Forgotten> {
    let now = crate::now_ms();
    let reviews = journal.reviews()?;
    let mut out = Forgotten::default();
    let mut writes = Vec::new();
    for r in journal.runs()? {
        let own: Vec<&ReviewTask> = reviews.iter().filter(|t| t.run_id == r.run_id).collect();
        if !selected(what, &r, &own) {
            continue;
        }
        if r.status != RunStatus::Finished {
            out.active.push(r.run_id);
            continue;
        }
        for t in own {
            let mut t = t.clone();
            t.context = json!({ "erased": true });
            t.reason = t.reason.map(|_| "[erased]".to_string());
            writes.push(Write::Review(Box::new(t)));
            out.reviews += 1;
        }
        out.runs.push(r.run_id.clone());
        writes.push(Write::Run(Box::new(cleared(r, now))));
    }
    if !out.runs.is_empty() {
        let runs: BTreeSet<String> = out.runs.iter().cloned().collect();
        out.connector_records = connectors.forget(&runs).await?;
        writes.push(Write::ClearCache);
        writes.push(Write::OweRewrite);
        journal.commit(writes).await?;
    }
    if journal.rewrite_owed()? {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || journal.rewrite())
            .await
            .map_err(|e| Error::Journal(format!("the journal rewrite stopped: {e}")))??;
    }
    Ok(out)
}

/// Rewrites one connector file with the payload of `runs`' lines cleared; returns how many.
pub(crate) fn forget_lines(path: &Path, runs: &BTreeSet<String>) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut changed = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let Ok(mut v) = serde_json::from_str::<Value>(line.trim_end()) else {
            out.push_str(line);
            continue;
        };
        let hit = v
            .get("run_id")
            .and_then(Value::as_str)
            .is_some_and(|r| runs.contains(r));
        if !hit || v.get("erased").is_some() {
            out.push_str(line);
            continue;
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("payload".into(), Value::Null);
            o.insert("erased".into(), json!(true));
        }
        out.push_str(&v.to_string());
        out.push('\n');
        changed += 1;
    }
    if changed == 0 {
        return Ok(0);
    }
    let tmp = path.with_extension("jsonl.rewrite");
    std::fs::write(&tmp, out.as_bytes())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_lines_of_other_runs_stay_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.jsonl");
        let keep =
            r#"{"seq":1,"key":"r-1/open","run_id":"r-1","payload":{"to":"ana@example.com"}}"#;
        let gone =
            r#"{"seq":2,"key":"r-2/open","run_id":"r-2","payload":{"to":"ben@example.com"}}"#;
        std::fs::write(&path, format!("{keep}\n{gone}\n")).unwrap();
        let runs = BTreeSet::from(["r-2".to_string()]);
        assert_eq!(forget_lines(&path, &runs).unwrap(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{keep}\n")));
        assert!(!text.contains("ben@example.com"));
        assert!(text.contains(r#""erased":true"#) && text.contains(r#""key":"r-2/open""#));
        assert_eq!(forget_lines(&path, &runs).unwrap(), 0, "once is enough");
    }
}
