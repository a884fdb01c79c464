//! Connector steps: authorized (`execute`, when the connector has side effects), their intent
//! journaled, the call made with the idempotency key `RUN/STEP` (with the step's timeout and
//! retries), the result journaled, then the step's span. A deny routes to the workflow's human
//! step when the run has no human approval yet and the deny is a default deny or its advice
//! names a human; otherwise the run fails.

use std::collections::BTreeMap;

use custos_policy::engine::{AuthzRequest, Decision};
use serde_json::{Value, json};

use super::Executor;
use crate::connector::Call;
use crate::journal::{Effect, Intent, RunRecord, SpanRecord};
use crate::telemetry::span_id;
use crate::workflow::{ConnectorFile, StepFile, Workflow};
use crate::{Result, StepError, crash_point, now_ms};

fn entity(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": format!("Custos::{ty}"), "id": id}})
}

fn decimal(x: f64) -> String {
    format!("{:.4}", if x.is_finite() { x } else { 0.0 })
}

/// One connector call of a step: the connector, the operation, the key and the payload.
pub(super) struct Target {
    pub(super) name: String,
    pub(super) config: ConnectorFile,
    pub(super) operation: String,
    pub(super) key: String,
    pub(super) payload: Value,
}

impl Executor {
    /// The payload a connector step sends: the input, with every transform's fields over it, and
    /// the outputs of earlier steps under `steps`.
    fn payload(w: &Workflow, r: &RunRecord) -> Value {
        let mut p = match &r.input {
            Value::Object(o) => o.clone(),
            _ => serde_json::Map::new(),
        };
        p.remove("expected");
        for s in &w.file.steps {
            if s.kind == "transform"
                && let Some(Value::Object(o)) = r.outputs.get(&s.id)
            {
                for (k, v) in o {
                    p.insert(k.clone(), v.clone());
                }
            }
        }
        p.insert("run_id".into(), json!(r.run_id));
        Value::Object(p)
    }

    pub(super) async fn connector_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let idx = r.cursor;
        let step = w.file.steps[idx].clone();
        let name = step.connector.clone().unwrap_or_default();
        let Some(config) = w.file.connectors.get(&name).cloned() else {
            let e = StepError::fatal("invalid_input", format!("unknown connector `{name}`"));
            return self.fail(r, &e).await;
        };
        // The decision that led to a side effect is final: no review came in between. (A
        // read-only lookup leaves it waiting.)
        if config.side_effects.unwrap_or(true)
            && let Some(s) = r.pending_decision.take()
        {
            self.save(r).await?;
            self.telemetry.emit(&r.run_id, &s);
        }
        let payload = Self::payload(w, r);
        let key = format!("{}/{}", r.run_id, step.id);
        let mut policy_attrs = BTreeMap::new();
        if config.side_effects.unwrap_or(true) && r.intent.is_none() {
            match self.authorize_effect(w, r, &step, &name, &payload).await? {
                Some(attrs) => policy_attrs = attrs,
                None => return Ok(()),
            }
        }
        self.journal_intent(r, idx, &step, &key).await?;
        let operation = step.operation.clone().unwrap_or_default();
        let target = Target {
            name,
            config,
            operation,
            key,
            payload,
        };
        let result = self.call_with_retries(w, r, &step, &target).await;
        crash_point("after_call", &step.id);
        let started = r
            .intent
            .as_ref()
            .map(|i| i.started_ms)
            .unwrap_or_else(now_ms);
        let (output, attempt) = match result {
            Ok((v, _, attempt)) => (v, attempt),
            Err(e) => {
                r.intent = None;
                return self.fail(r, &e).await;
            }
        };
        self.journal_result(r, idx, &step, &target.key, output)
            .await?;
        let mut attrs = self.base_attributes(r, &step);
        attrs.insert("automation.connector".into(), json!(target.name));
        attrs.insert(
            "automation.connector.operation".into(),
            json!(target.operation),
        );
        attrs.insert("automation.idempotency_key".into(), json!(target.key));
        attrs.insert("automation.attempt".into(), json!(attempt));
        attrs.extend(policy_attrs);
        self.telemetry.emit(
            &r.run_id,
            &SpanRecord {
                name: step.id.clone(),
                span_id: span_id(&r.run_id, &step.id, attempt),
                start_ms: started,
                end_ms: now_ms(),
                attributes: attrs,
                error: None,
            },
        );
        Ok(())
    }

    /// Authorizes a side effect (`execute`). Allowed: the policy attributes of the step's span.
    /// Denied: the run went to a human step or failed, and the answer is `None`.
    async fn authorize_effect(
        &self,
        w: &Workflow,
        r: &mut RunRecord,
        step: &StepFile,
        name: &str,
        payload: &Value,
    ) -> Result<Option<BTreeMap<String, Value>>> {
        let confidence = Self::last_decision(w, r)
            .and_then(|(_, o)| o.get("confidence").and_then(Value::as_f64))
            .unwrap_or(0.0);
        let amount = payload
            .get("amount_usd")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let req = AuthzRequest {
            principal: json!(format!("Custos::Service::\"{}\"", self.principal)),
            action: json!("Custos::Action::\"execute\""),
            resource: json!(format!("Custos::Connector::\"{name}\"")),
            context: json!({
                "workflow": entity("Workflow", &r.workflow),
                "confidence": decimal(confidence),
                "amount_usd": format!("{:.2}", if amount.is_finite() { amount } else { 0.0 }),
                "human_approved": r.human_approved,
            }),
            entities: Vec::new(),
        };
        let (d, seq) = self.authorize(req).await?;
        let mut policy_attrs = BTreeMap::new();
        policy_attrs.insert("automation.policy.decision".into(), json!(d.decision));
        policy_attrs.insert(
            "automation.policy.ids".into(),
            json!(d.policy_ids().join(",")),
        );
        policy_attrs.insert("automation.audit.seq".into(), json!(seq));
        if d.decision == "allow" {
            return Ok(Some(policy_attrs));
        }
        let mut attrs = self.base_attributes(r, step);
        attrs.insert("automation.connector".into(), json!(name));
        attrs.extend(policy_attrs);
        self.denied(w, r, step, &d, seq, attrs).await?;
        Ok(None)
    }

    /// A denied side effect: to the human step (`attrs` are the policy span's), or the run fails.
    async fn denied(
        &self,
        w: &Workflow,
        r: &mut RunRecord,
        step: &StepFile,
        d: &Decision,
        seq: u64,
        mut attrs: BTreeMap<String, Value>,
    ) -> Result<()> {
        let idx = r.cursor;
        let ids = d.policy_ids().join(", ");
        let advice = d.advice.join("; ");
        let default_deny = d.determining_policies.is_empty() && d.errors.is_empty();
        let names_human = d.advice.iter().any(|a| a.contains("human"));
        // A human step this run went through already is not asked twice.
        let human = match human_step_for(w, idx) {
            Some(h)
                if self
                    .journal
                    .review(&format!("{}-{}", r.run_id, w.file.steps[h].id))?
                    .is_none() =>
            {
                Some(h)
            }
            _ => None,
        };
        if let (Some(h), false, true) = (human, r.human_approved, default_deny || names_human) {
            r.outputs.insert(
                step.id.clone(),
                json!({"policy": {"decision": d.decision, "policies": d.policy_ids(),
                       "advice": d.advice, "audit_seq": seq}}),
            );
            r.resume_at = Some(idx);
            r.cursor = h;
            r.attempt = 1;
            self.save(r).await?;
            attrs.insert("automation.policy.route".into(), json!(w.file.steps[h].id));
            let now = now_ms();
            self.telemetry.emit(
                &r.run_id,
                &SpanRecord {
                    name: format!("{} (policy)", step.id),
                    span_id: span_id(&r.run_id, &format!("{}#policy", step.id), r.retries),
                    start_ms: now,
                    end_ms: now,
                    attributes: attrs,
                    error: None,
                },
            );
            return Ok(());
        }
        let why = if ids.is_empty() {
            format!("denied by policy (no policy permits it): {advice}")
        } else {
            format!("denied by policy `{ids}`: {advice}")
        };
        let e = StepError::fatal("policy_denied", why);
        self.fail(r, &e).await
    }

    /// The intent, durable before the call.
    async fn journal_intent(
        &self,
        r: &mut RunRecord,
        idx: usize,
        step: &StepFile,
        key: &str,
    ) -> Result<()> {
        crash_point("before_intent", &step.id);
        if r.intent.is_none() {
            r.intent = Some(Intent {
                step: idx,
                attempt: r.attempt,
                key: key.to_string(),
                started_ms: now_ms(),
            });
            self.save(r).await?;
        }
        crash_point("after_intent", &step.id);
        Ok(())
    }

    /// The call, attempt after attempt with the step's timeout and retries; a duplicate key
    /// answers with the effect the key made before.
    async fn call_with_retries(
        &self,
        w: &Workflow,
        r: &mut RunRecord,
        step: &StepFile,
        target: &Target,
    ) -> std::result::Result<(Value, i64, u32), StepError> {
        let run_id = r.run_id.clone();
        let connectors = self.connectors.clone();
        self.attempts(w, r, |attempt| {
            let connectors = connectors.clone();
            let (config, name, operation, key, payload, run_id, step_id) = (
                target.config.clone(),
                target.name.clone(),
                target.operation.clone(),
                target.key.clone(),
                target.payload.clone(),
                run_id.clone(),
                step.id.clone(),
            );
            async move {
                let call = Call {
                    name: &name,
                    config: &config,
                    operation: &operation,
                    key: &key,
                    run_id: &run_id,
                    step: &step_id,
                    attempt,
                    payload: &payload,
                };
                match connectors.call(&call).await {
                    // Our key made this effect before (an attempt whose answer was lost).
                    Err(e) if e.kind == "duplicate_key" && e.existing.is_some() => {
                        Ok(e.existing.unwrap_or_default())
                    }
                    other => other,
                }
            }
        })
        .await
    }

    /// The result, durable: the effect (when the step has a compensation), the output, the
    /// cursor on.
    async fn journal_result(
        &self,
        r: &mut RunRecord,
        idx: usize,
        step: &StepFile,
        key: &str,
        output: Value,
    ) -> Result<()> {
        r.intent = None;
        if step.compensate.is_some() {
            r.effects.push(Effect {
                step: idx,
                key: key.to_string(),
                output: output.clone(),
                compensated: false,
            });
        }
        r.outputs.insert(step.id.clone(), output);
        r.cursor += 1;
        r.attempt = 1;
        r.steps_run += 1;
        self.save(r).await?;
        crash_point("after_result", &step.id);
        Ok(())
    }
}

/// The human step a denied step at `idx` goes to: the nearest one before it, else the first.
fn human_step_for(w: &Workflow, idx: usize) -> Option<usize> {
    let humans: Vec<usize> = w
        .file
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "human")
        .map(|(i, _)| i)
        .collect();
    humans
        .iter()
        .rev()
        .find(|i| **i < idx)
        .or(humans.first())
        .copied()
}
