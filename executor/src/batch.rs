//! Running many inputs at once (`custos run --input FILE.jsonl`) and resuming after a crash
//! (`custos run --resume`).
//!
//! Each input line starts one run with the idempotency key `WORKFLOW:LINE:HASH` (the line number
//! and a hash of the line), so running the same command again after a crash starts only the
//! inputs that never started; `--resume` then completes those that did.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::journal::{RunRecord, RunStatus};
use crate::model::sha256_u64;
use crate::{Error, Executor, Result};

/// One input: its idempotency key and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The start request's idempotency key.
    pub key: String,
    /// The input object.
    pub value: Value,
}

/// Reads a JSON Lines file of inputs (blank lines skipped); a bad line is an error naming it.
pub fn read_inputs(path: &Path, workflow: &str) -> Result<Vec<Input>> {
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
        path: path.display().to_string(),
        cause,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| Error::Input {
            workflow: workflow.to_string(),
            problems: format!(
                "`{}` line {}: not a JSON object: {e}",
                path.display(),
                i + 1
            ),
        })?;
        out.push(Input {
            key: format!("{workflow}:{}:{:016x}", i + 1, sha256_u64(&[line])),
            value,
        });
    }
    Ok(out)
}

/// What a batch did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The runs, in start order.
    pub runs: Vec<RunRecord>,
    /// Inputs whose key had started a run before.
    pub existing: usize,
}

impl Summary {
    /// Runs by outcome (`waiting` for runs parked at a review).
    pub fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.runs {
            let k = match r.status {
                RunStatus::Finished => r.outcome.clone().unwrap_or_default(),
                RunStatus::Waiting => "waiting".into(),
                _ => "unfinished".into(),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

/// Starts and drives one run per input, `concurrency` at a time.
pub async fn run_inputs(
    ex: &Arc<Executor>,
    text: &str,
    file: &str,
    inputs: Vec<Input>,
    started_by: &str,
    concurrency: usize,
) -> Result<Summary> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, input) in inputs.into_iter().enumerate() {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Journal(e.to_string()))?;
        let (ex, text, file, by) = (
            ex.clone(),
            text.to_string(),
            file.to_string(),
            started_by.to_string(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let s = ex
                .start(&text, &file, input.value, Some(input.key), &by)
                .await?;
            let r = ex.drive(&s.run_id).await?;
            Ok::<_, Error>((i, s.existing, r))
        });
    }
    let mut done = Vec::new();
    let mut existing = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, was, r) =
            joined.map_err(|e| Error::Journal(format!("a run task failed: {e}")))??;
        existing += usize::from(was);
        done.push((i, r));
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(Summary {
        runs: done.into_iter().map(|(_, r)| r).collect(),
        existing,
    })
}

/// Completes every unfinished run of the journal (after a crash), `concurrency` at a time, and
/// times out overdue reviews.
pub async fn resume(ex: &Arc<Executor>, concurrency: usize) -> Result<Summary> {
    let moved = ex.expire_reviews(crate::now_ms()).await?;
    let mut ids: Vec<String> = ex
        .journal()
        .runs()?
        .into_iter()
        .filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Compensating))
        .map(|r| r.run_id)
        .collect();
    for m in moved {
        if !ids.contains(&m) {
            ids.push(m);
        }
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Journal(e.to_string()))?;
        let ex = ex.clone();
        tasks.spawn(async move {
            let _permit = permit;
            Ok::<_, Error>((i, ex.drive(&id).await?))
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.map_err(|e| Error::Journal(format!("a run task failed: {e}")))??);
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(Summary {
        runs: done.into_iter().map(|(_, r)| r).collect(),
        existing: 0,
    })
}
