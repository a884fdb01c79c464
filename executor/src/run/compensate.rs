//! Failing a run and its saga: a step that fails for good fails the run, which then runs the
//! compensations of its completed effects in reverse order: outcome `compensated`, or `failure`
//! when there was nothing to undo. Steps named only as another step's `compensate` never run in
//! the normal flow.

use serde_json::{Value, json};

use super::Executor;
use super::connector::Target;
use crate::connector::Call;
use crate::journal::{RunRecord, RunStatus, SpanRecord};
use crate::telemetry::span_id;
use crate::workflow::{StepFile, Workflow};
use crate::{Result, StepError, now_ms};

/// One compensation that ran: its step, the step it undoes, its last attempt and its start.
struct Undo<'a> {
    comp: &'a StepFile,
    original: &'a StepFile,
    attempt: u32,
    started: i64,
}

impl Executor {
    pub(super) async fn fail(&self, r: &mut RunRecord, e: &StepError) -> Result<()> {
        r.error = Some(e.to_string());
        r.status = RunStatus::Compensating;
        r.attempt = 1;
        self.save(r).await
    }

    /// Undoes completed effects in reverse order, then finishes the run.
    pub(super) async fn compensate(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let mut any = false;
        for i in (0..r.effects.len()).rev() {
            if r.effects[i].compensated {
                any = true;
                continue;
            }
            let effect = r.effects[i].clone();
            let original = &w.file.steps[effect.step];
            let Some(comp_id) = &original.compensate else {
                continue;
            };
            let Some(comp_idx) = w.file.steps.iter().position(|s| &s.id == comp_id) else {
                continue;
            };
            let comp = &w.file.steps[comp_idx];
            let name = comp.connector.clone().unwrap_or_default();
            let Some(config) = w.file.connectors.get(&name).cloned() else {
                continue;
            };
            let key = format!("{}/{}/{}", r.run_id, comp.id, original.id);
            let payload =
                json!({"run_id": r.run_id, "compensates": original.id, "effect": effect.output});
            let operation = comp.operation.clone().unwrap_or_default();
            let target = Target {
                name,
                config,
                operation,
                key,
                payload,
            };
            let started = now_ms();
            let (outcome, attempt) = self
                .call_compensation(w, comp_idx, &r.run_id, &target)
                .await;
            let undo = Undo {
                comp,
                original,
                attempt,
                started,
            };
            match outcome {
                Ok(v) => {
                    r.effects[i].compensated = true;
                    r.outputs.insert(format!("{}#{}", comp.id, original.id), v);
                    r.steps_run += 1;
                    any = true;
                    self.save(r).await?;
                    self.telemetry
                        .emit(&r.run_id, &self.undo_span(r, &undo, &target, None));
                }
                Err(e) => {
                    let span = self.undo_span(r, &undo, &target, Some(e.to_string()));
                    self.telemetry.emit(&r.run_id, &span);
                    r.error = Some(format!(
                        "{}; compensation `{}` of `{}` failed: {e}",
                        r.error.clone().unwrap_or_default(),
                        comp.id,
                        original.id
                    ));
                    r.outcome.get_or_insert_with(|| "failure".into());
                    return self.finish(r, "failure").await;
                }
            }
        }
        let outcome = if any { "compensated" } else { "failure" };
        self.finish(r, outcome).await
    }

    /// Calls the compensation step at `comp_idx` with its timeout and retries; a duplicate key
    /// answers with the effect the key made before. Returns the outcome and the last attempt.
    async fn call_compensation(
        &self,
        w: &Workflow,
        comp_idx: usize,
        run_id: &str,
        target: &Target,
    ) -> (std::result::Result<Value, StepError>, u32) {
        let comp = &w.file.steps[comp_idx];
        let policy = &w.retries[comp_idx];
        let mut attempt = 1;
        let outcome = loop {
            let call = Call {
                name: &target.name,
                config: &target.config,
                operation: &target.operation,
                key: &target.key,
                run_id,
                step: &comp.id,
                attempt,
                payload: &target.payload,
            };
            let res = match tokio::time::timeout(w.timeouts[comp_idx], self.connectors.call(&call))
                .await
            {
                Ok(Err(e)) if e.kind == "duplicate_key" && e.existing.is_some() => {
                    Ok(e.existing.unwrap_or_default())
                }
                Ok(x) => x,
                Err(_) => Err(StepError::retryable("timeout", "compensation timed out")),
            };
            match res {
                Ok(v) => break Ok(v),
                Err(e) => {
                    let stop = !e.retryable || policy.non_retryable_errors.contains(&e.kind);
                    match (stop, policy.delay_before(attempt + 1)) {
                        (false, Some(d)) => {
                            attempt += 1;
                            tokio::time::sleep(d).await;
                        }
                        _ => break Err(e),
                    }
                }
            }
        };
        (outcome, attempt)
    }

    /// The span of a compensation, ending now.
    fn undo_span(
        &self,
        r: &RunRecord,
        undo: &Undo<'_>,
        target: &Target,
        error: Option<String>,
    ) -> SpanRecord {
        let (comp, original) = (undo.comp, undo.original);
        let mut attrs = self.base_attributes(r, comp);
        attrs.insert("automation.connector".into(), json!(target.name));
        attrs.insert("automation.compensates".into(), json!(original.id));
        attrs.insert("automation.idempotency_key".into(), json!(target.key));
        SpanRecord {
            name: comp.id.clone(),
            span_id: span_id(
                &r.run_id,
                &format!("{}#{}", comp.id, original.id),
                undo.attempt,
            ),
            start_ms: undo.started,
            end_ms: now_ms(),
            attributes: attrs,
            error,
        }
    }
}

/// Steps that are only some other step's compensation.
pub(super) fn is_compensation_only(w: &Workflow, idx: usize) -> bool {
    let id = &w.file.steps[idx].id;
    let compensates = w
        .file
        .steps
        .iter()
        .any(|s| s.compensate.as_deref() == Some(id.as_str()));
    let reached = w.file.steps.iter().any(|s| {
        s.when.iter().any(|r| &r.goto == id)
            || s.default.as_deref() == Some(id.as_str())
            || s.on_timeout.as_deref() == Some(id.as_str())
    });
    compensates && !reached
}
