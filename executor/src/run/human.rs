//! Human steps: a review task opens and the run parks until a reviewer decides (authorized as
//! `approve_review` and audited) or the task times out (`on_timeout`: `escalate` or a step).
//! Approval continues the run (with `human_approved`); rejection escalates it.

use std::collections::BTreeMap;
use std::sync::Arc;

use custos_policy::engine::AuthzRequest;
use serde_json::{Value, json};

use super::{Executor, ReviewDecision};
use crate::journal::{ReviewStatus, ReviewTask, RunRecord, RunStatus, SpanRecord, Write};
use crate::telemetry::span_id;
use crate::workflow::{StepFile, Workflow};
use crate::{Error, Result, now_ms};

impl Executor {
    pub(super) async fn human_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let idx = r.cursor;
        let step = &w.file.steps[idx];
        let id = format!("{}-{}", r.run_id, step.id);
        if self.journal.review(&id)?.is_some() && r.review.is_none() {
            // Reviewed already in this run (a route came back): go on.
            r.cursor += 1;
            return self.save(r).await;
        }
        let created = now_ms();
        let context = review_context(w, r);
        let task = ReviewTask {
            id: id.clone(),
            run_id: r.run_id.clone(),
            workflow: r.workflow.clone(),
            step: step.id.clone(),
            queue: step.queue.clone().unwrap_or_default(),
            priority: step.priority.clone().unwrap_or_else(|| "normal".into()),
            created_ms: created,
            due_ms: created.saturating_add(w.timeouts[idx].as_millis() as i64),
            status: ReviewStatus::Pending,
            context,
            reviewer: None,
            reason: None,
            decided_ms: None,
            audit_seq: None,
        };
        r.status = RunStatus::Waiting;
        r.review = Some(id.clone());
        self.journal
            .commit(vec![
                Write::Run(Box::new(r.clone())),
                Write::Review(Box::new(task.clone())),
            ])
            .await?;
        // Makes the waiting run visible (`in_progress` in `runs`) while its decision span waits
        // for the verdict; not a step of its own (no `automation.step`).
        let mut attrs = BTreeMap::new();
        attrs.insert("automation.workflow".into(), json!(r.workflow));
        attrs.insert("automation.run_id".into(), json!(r.run_id));
        attrs.insert("automation.review.id".into(), json!(id));
        attrs.insert("automation.review.queue".into(), json!(task.queue));
        attrs.insert("automation.review.priority".into(), json!(task.priority));
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: "review requested".into(),
                span_id: span_id(&r.run_id, &format!("{}#requested", step.id), 1),
                start_ms: created,
                end_ms: created,
                attributes: attrs,
                error: None,
            },
        );
        Ok(())
    }

    /// Pending review tasks, most urgent first (priority, then age).
    pub fn pending_reviews(&self) -> Result<Vec<ReviewTask>> {
        let rank = |p: &str| match p {
            "urgent" => 0,
            "high" => 1,
            "normal" => 2,
            _ => 3,
        };
        let mut v: Vec<ReviewTask> = self
            .journal
            .reviews()?
            .into_iter()
            .filter(|t| t.status == ReviewStatus::Pending)
            .collect();
        v.sort_by(|a, b| {
            rank(&a.priority)
                .cmp(&rank(&b.priority))
                .then(a.created_ms.cmp(&b.created_ms))
                .then(a.id.cmp(&b.id))
        });
        Ok(v)
    }

    /// A reviewer approves (`approve`) or rejects a pending task, with a reason. The decision is
    /// authorized (`approve_review`, context `override` = rejection) and audited first; a deny
    /// changes nothing and is [`Error::Denied`]. The run goes on: call [`Executor::drive`].
    pub async fn decide_review(
        &self,
        id: &str,
        reviewer: &str,
        approve: bool,
        reason: &str,
    ) -> Result<ReviewDecision> {
        let (mut task, mut r, w) = self.review_to_decide(id, reviewer, reason).await?;
        let req = review_request(&task, &r, id, reviewer, approve);
        let (decision, seq) = self.authorize(req).await?;
        if decision.decision != "allow" {
            return Err(Error::Denied(format!(
                "`{reviewer}` may not decide review `{id}`: {} (audit record {seq})",
                decision.advice.join("; ")
            )));
        }
        let now = now_ms();
        task.status = if approve {
            ReviewStatus::Approved
        } else {
            ReviewStatus::Rejected
        };
        task.reviewer = Some(reviewer.to_string());
        task.reason = Some(reason.to_string());
        task.decided_ms = Some(now);
        task.audit_seq = Some(seq);
        let review_ms = now - task.created_ms;
        let idx = w
            .file
            .steps
            .iter()
            .position(|s| s.id == task.step)
            .unwrap_or(r.cursor);
        let step = &w.file.steps[idx];
        let pending = r.pending_decision.take().map(|mut s| {
            s.attributes
                .insert("automation.human.reviewer".into(), json!(reviewer));
            s.attributes
                .insert("automation.human.override".into(), json!(!approve));
            s.attributes
                .insert("automation.human.review_ms".into(), json!(review_ms));
            s
        });
        r.outputs.insert(
            step.id.clone(),
            json!({"review": id, "approved": approve, "reviewer": reviewer, "reason": reason}),
        );
        r.review = None;
        r.steps_run += 1;
        if approve {
            r.human_approved = true;
            r.status = RunStatus::Running;
            r.cursor = r.resume_at.take().unwrap_or(idx + 1);
        } else {
            r.outcome = Some("escalated".into());
            r.error = Some(format!("rejected by `{reviewer}`: {reason}"));
            r.status = RunStatus::Compensating;
        }
        r.attempt = 1;
        let mut attrs = BTreeMap::new();
        attrs.insert("automation.human.reviewer".into(), json!(reviewer));
        attrs.insert("automation.human.review_ms".into(), json!(review_ms));
        attrs.insert(
            "automation.review.outcome".into(),
            json!(if approve { "approved" } else { "rejected" }),
        );
        attrs.insert("automation.review.queue".into(), json!(task.queue));
        attrs.insert("automation.audit.seq".into(), json!(seq));
        self.close_review(&r, &task, step, pending, attrs, now, None)
            .await?;
        Ok(ReviewDecision {
            task,
            decision,
            audit_seq: seq,
        })
    }

    /// Times out pending reviews due at `now`: `on_timeout: escalate` finishes the run as
    /// `escalated`; `on_timeout: STEP` continues there without a human approval. Returns the
    /// runs that can go on (call [`Executor::drive`]).
    pub async fn expire_reviews(&self, now: i64) -> Result<Vec<String>> {
        let mut moved = Vec::new();
        for mut task in self.journal.reviews()? {
            if task.status != ReviewStatus::Pending || task.due_ms > now {
                continue;
            }
            let Some(mut r) = self.journal.run(&task.run_id)? else {
                continue;
            };
            let w = self.definition(&r.definition)?;
            let idx = w
                .file
                .steps
                .iter()
                .position(|s| s.id == task.step)
                .unwrap_or(r.cursor);
            let step = &w.file.steps[idx];
            task.status = ReviewStatus::TimedOut;
            task.decided_ms = Some(now);
            r.review = None;
            r.steps_run += 1;
            let on_timeout = step.on_timeout.clone().unwrap_or_else(|| "escalate".into());
            let pending = r.pending_decision.take();
            if on_timeout == "escalate" {
                r.outcome = Some("escalated".into());
                r.status = RunStatus::Running;
                r.cursor = w.file.steps.len();
            } else {
                r.status = RunStatus::Running;
                r.resume_at = None;
                r.cursor = w
                    .file
                    .steps
                    .iter()
                    .position(|s| s.id == on_timeout)
                    .unwrap_or(idx + 1);
            }
            r.attempt = 1;
            let mut attrs = BTreeMap::new();
            attrs.insert("automation.review.outcome".into(), json!("timed_out"));
            attrs.insert("automation.review.on_timeout".into(), json!(on_timeout));
            let error = format!("review timed out after {} ms", now - task.created_ms);
            match self
                .close_review(&r, &task, step, pending, attrs, now, Some(error))
                .await
            {
                Ok(()) => moved.push(r.run_id.clone()),
                // A reviewer decided it just now: the decision stands.
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// The pending task `id` and its run, when `reviewer` and `reason` are given.
    async fn review_to_decide(
        &self,
        id: &str,
        reviewer: &str,
        reason: &str,
    ) -> Result<(ReviewTask, RunRecord, Arc<Workflow>)> {
        let task = self
            .journal
            .review(id)?
            .ok_or_else(|| Error::NotFound(format!("no review task `{id}`")))?;
        if task.status != ReviewStatus::Pending {
            return Err(Error::Conflict(format!(
                "review task `{id}` is {:?} already",
                task.status
            )));
        }
        if reviewer.trim().is_empty() || reason.trim().is_empty() {
            return Err(Error::Conflict(
                "a review decision needs a reviewer and a reason".into(),
            ));
        }
        let r = self
            .journal
            .run(&task.run_id)?
            .ok_or_else(|| Error::NotFound(format!("no run `{}`", task.run_id)))?;
        let w = self.definition(&r.definition)?;
        Ok((task, r, w))
    }

    /// Journals a decided or timed-out review with its run, then emits the decision span the
    /// review completed and the human step's span (with `extra` attributes).
    #[allow(clippy::too_many_arguments)]
    async fn close_review(
        &self,
        r: &RunRecord,
        task: &ReviewTask,
        step: &StepFile,
        pending: Option<SpanRecord>,
        extra: BTreeMap<String, Value>,
        end_ms: i64,
        error: Option<String>,
    ) -> Result<()> {
        // Only if nobody decided the task meanwhile: a racing decision (or the timeout) loses
        // with a conflict and changes nothing.
        self.journal
            .commit(vec![
                Write::ExpectPending {
                    review: task.id.clone(),
                },
                Write::Run(Box::new(r.clone())),
                Write::Review(Box::new(task.clone())),
            ])
            .await?;
        if let Some(s) = pending {
            self.telemetry.emit(&r.run_id, &s);
        }
        let mut attributes = self.base_attributes(r, step);
        attributes.extend(extra);
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: step.id.clone(),
                span_id: span_id(&r.run_id, &step.id, 1),
                start_ms: task.created_ms,
                end_ms,
                attributes,
                error,
            },
        );
        Ok(())
    }
}

/// What a reviewer sees: the input (long strings cut), the decision under review and the
/// policy decision that asked for a human, if any.
fn review_context(w: &Workflow, r: &RunRecord) -> Value {
    let decision = Executor::last_decision(w, r);
    let mut summary = match &r.input {
        Value::Object(o) => o.clone(),
        _ => serde_json::Map::new(),
    };
    summary.remove("expected");
    for v in summary.values_mut() {
        if let Value::String(s) = v
            && s.chars().count() > 200
        {
            *s = format!("{}…", s.chars().take(200).collect::<String>());
        }
    }
    let policy = w
        .file
        .steps
        .get(r.resume_at.unwrap_or(usize::MAX))
        .and_then(|s| {
            r.outputs
                .get(&s.id)
                .and_then(|o| o.get("policy"))
                .map(|p| json!({"step": s.id, "decision": p}))
        });
    json!({
        "input": summary,
        "decision_step": decision.as_ref().map(|d| d.0.clone()),
        "proposal": decision.as_ref().map(|d| d.1.get("output").cloned()),
        "label": decision.as_ref().and_then(|d| d.1.get("label").cloned()),
        "confidence": decision.as_ref().and_then(|d| d.1.get("confidence").cloned()),
        "model": decision.as_ref().and_then(|d| d.1.get("model").cloned()),
        "prompt_version": decision.as_ref().and_then(|d| d.1.get("prompt_version").cloned()),
        "policy": policy,
        "trace_id": r.trace_id,
        "started_by": r.started_by,
    })
}

/// The reviewer's request: `approve_review` on the task, `override` when rejecting.
fn review_request(
    task: &ReviewTask,
    r: &RunRecord,
    id: &str,
    reviewer: &str,
    approve: bool,
) -> AuthzRequest {
    AuthzRequest {
        principal: json!(format!("Custos::User::{}", json!(reviewer))),
        action: json!("Custos::Action::\"approve_review\""),
        resource: json!(review_uid(id)),
        context: json!({ "override": !approve }),
        entities: vec![review_entity(task, &r.started_by)],
    }
}

/// A review task as a Cedar reference.
pub fn review_uid(id: &str) -> String {
    format!("Custos::ReviewTask::{}", json!(id))
}

/// The user who started a run, from its `started_by`: a `Custos::User` reference, or a bare
/// name (how runs were recorded before callers were authenticated); `None` for a service or a
/// local actor (`local:NAME`, someone with access to the data directory).
pub fn starting_user(started_by: &str) -> Option<String> {
    match started_by.strip_prefix("Custos::User::") {
        Some(quoted) => serde_json::from_str::<String>(quoted).ok(),
        None if started_by.contains(':') => None,
        None => Some(started_by.to_string()),
    }
}

/// A review task as the Cedar entity the review policies read (`workflow`, `reviewers`, and
/// `requested_by` when a person started the run).
pub fn review_entity(task: &ReviewTask, started_by: &str) -> serde_json::Value {
    let mut attrs = json!({
        "workflow": {"__entity": {"type": "Custos::Workflow", "id": task.workflow}},
        "reviewers": {"__entity": {"type": "Custos::Team", "id": task.queue}},
    });
    if let Some(user) = starting_user(started_by) {
        attrs["requested_by"] = json!({"__entity": {"type": "Custos::User", "id": user}});
    }
    json!({
        "uid": {"type": "Custos::ReviewTask", "id": task.id},
        "attrs": attrs,
        "parents": [],
    })
}
