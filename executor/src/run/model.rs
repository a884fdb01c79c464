//! Model steps: a model is asked (with cascade, cache and canary prompt routing), its usage
//! reported, and a decision's span held until the decision is final.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Executor;
use crate::journal::{RunRecord, SpanRecord, Write};
use crate::model::{Answer, Question, sha256_u64};
use crate::telemetry::span_id;
use crate::workflow::{StepFile, Workflow};
use crate::{Result, StepError, now_ms};

/// What a model step's attempts came back with.
struct Asked {
    /// The final answer and whether it came from the cache.
    answer: Answer,
    cached: bool,
    /// The cascade's first, smaller call (and whether it was cached), when the step escalated.
    first: Option<(Answer, bool)>,
    /// The successful attempt, its start and its end.
    attempt: u32,
    started: i64,
    ended: i64,
}

impl Executor {
    async fn ask(
        &self,
        w: &Workflow,
        model_name: &str,
        q: &Question<'_>,
        cache: bool,
    ) -> std::result::Result<(Answer, bool), StepError> {
        let Some(m) = w.file.models.get(model_name) else {
            return Err(StepError::fatal(
                "invalid_input",
                format!("unknown model `{model_name}`"),
            ));
        };
        let key = format!(
            "{}/{}/{}/{}/{:016x}",
            m.model,
            m.version,
            q.prompt_version,
            q.task,
            sha256_u64(&[&q.input.to_string()])
        );
        if cache
            && let Ok(Some(v)) = self.journal.cached(&key)
            && let Some(a) = Answer::from_json(&v)
        {
            return Ok((a, true));
        }
        if let Some(ms) = m.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let a = match m.provider.as_str() {
            "openai" => crate::model::openai(&self.http, m, q).await?,
            _ => crate::model::local(m, q),
        };
        if cache {
            self.journal
                .commit(vec![Write::Cache {
                    key,
                    value: a.to_json(),
                }])
                .await
                .map_err(|e| StepError::retryable("journal", e.to_string()))?;
        }
        Ok((a, false))
    }

    /// One attempt of a model step: the step's model, then its fallback model when the first
    /// answer's confidence is below `cascade_below`.
    async fn ask_with_cascade(
        &self,
        w: &Workflow,
        model: String,
        step: StepFile,
        q: &Question<'_>,
    ) -> std::result::Result<Value, StepError> {
        let first = self.ask(w, &model, q, step.cache).await?;
        match (&step.fallback_model, step.cascade_below) {
            (Some(big), Some(below)) if first.0.confidence < below => {
                let second = self.ask(w, big, q, step.cache).await?;
                Ok(json!({"final": second.0.to_json(), "cached": second.1,
                          "first": first.0.to_json(), "first_cached": first.1}))
            }
            _ => Ok(json!({"final": first.0.to_json(), "cached": first.1})),
        }
    }

    pub(super) async fn model_step(&self, w: &Workflow, r: &mut RunRecord) -> Result<()> {
        let step = w.file.steps[r.cursor].clone();
        let canary = r.canary.get(&step.id).copied().unwrap_or(false);
        let prompt = if canary {
            step.canary_prompt_version.clone()
        } else {
            step.prompt_version.clone()
        }
        .unwrap_or_default();
        let input = r.input.clone();
        let task = step.task.clone().unwrap_or_default();
        let model = step.model.clone().unwrap_or_default();
        let q = Question {
            task: &task,
            step: &step.id,
            prompt_version: &prompt,
            input: &input,
        };
        let result = self
            .attempts(w, r, |_| {
                self.ask_with_cascade(w, model.clone(), step.clone(), &q)
            })
            .await;
        let (v, started, attempt) = match result {
            Ok(x) => x,
            Err(e) => return self.fail(r, &e).await,
        };
        let Some(asked) = read_answers(&v, attempt, started) else {
            return self
                .fail(
                    r,
                    &StepError::fatal("invalid_response", "unreadable model answer"),
                )
                .await;
        };
        // The cascade's first, smaller call: usage only, not a step of its own.
        if let Some(s) = cascade_span(w, r, &step, &prompt, &asked) {
            self.telemetry.emit(&r.run_id, &s);
        }
        // A draft is not a decision: only classifications and extractions are judged.
        let decides = task != "generate";
        let span = self.decision_span(w, r, &step, &prompt, canary, decides, &asked);
        // A decision waits for its review (if any); a draft is emitted at once.
        let (earlier, now) = if decides {
            (r.pending_decision.replace(span), None)
        } else {
            (None, Some(span))
        };
        let mut out = asked.answer.to_json();
        if let Value::Object(o) = &mut out {
            o.insert("prompt_version".into(), json!(prompt));
            o.insert("canary".into(), json!(canary));
        }
        r.outputs.insert(step.id.clone(), out);
        r.cursor += 1;
        r.attempt = 1;
        r.steps_run += 1;
        self.save(r).await?;
        for s in earlier.iter().chain(now.iter()) {
            self.telemetry.emit(&r.run_id, s);
        }
        Ok(())
    }

    /// The model step's span: usage, canary, the decision (unless a draft), the attempt.
    #[allow(clippy::too_many_arguments)]
    fn decision_span(
        &self,
        w: &Workflow,
        r: &RunRecord,
        step: &StepFile,
        prompt: &str,
        canary: bool,
        decides: bool,
        asked: &Asked,
    ) -> SpanRecord {
        let mut attrs = self.base_attributes(r, step);
        usage(w, prompt, &mut attrs, &asked.answer, asked.cached);
        attrs.insert("automation.canary".into(), json!(canary));
        if decides {
            attrs.insert(
                "automation.decision.confidence".into(),
                json!(asked.answer.confidence),
            );
            attrs.insert(
                "automation.decision.outcome".into(),
                json!(asked.answer.label),
            );
        }
        attrs.insert("automation.attempt".into(), json!(asked.attempt));
        SpanRecord {
            name: step.id.clone(),
            span_id: span_id(&r.run_id, &step.id, asked.attempt),
            start_ms: asked.started,
            end_ms: asked.ended,
            attributes: attrs,
            error: None,
        }
    }
}

/// Reads the answers an attempt journaled; `None` when the final one is unreadable. The end
/// of the step is now.
fn read_answers(v: &Value, attempt: u32, started: i64) -> Option<Asked> {
    let answer = v.get("final").and_then(Answer::from_json)?;
    let cached = v.get("cached").and_then(Value::as_bool).unwrap_or(false);
    let first = v.get("first").and_then(Answer::from_json).map(|first| {
        (
            first,
            v.get("first_cached")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )
    });
    Some(Asked {
        answer,
        cached,
        first,
        attempt,
        started,
        ended: now_ms(),
    })
}

/// The span of the cascade's first call, when there was one.
fn cascade_span(
    w: &Workflow,
    r: &RunRecord,
    step: &StepFile,
    prompt: &str,
    asked: &Asked,
) -> Option<SpanRecord> {
    let (first, cached) = asked.first.as_ref()?;
    let mut a = BTreeMap::new();
    a.insert("automation.workflow".into(), json!(r.workflow));
    a.insert("automation.run_id".into(), json!(r.run_id));
    a.insert("automation.cascade".into(), json!("escalated"));
    usage(w, prompt, &mut a, first, *cached);
    Some(SpanRecord {
        name: format!("chat {}", first.model),
        span_id: span_id(&r.run_id, &format!("{}#cascade", step.id), asked.attempt),
        start_ms: asked.started,
        end_ms: asked.ended,
        attributes: a,
        error: None,
    })
}

/// The version of the workflow's model called `name`.
fn version_of(w: &Workflow, name: &str) -> String {
    w.file
        .models
        .values()
        .find(|x| x.model == name)
        .map(|x| x.version.clone())
        .unwrap_or_default()
}

/// The usage attributes of one answer (cost zero when it came from the cache).
fn usage(w: &Workflow, prompt: &str, a: &mut BTreeMap<String, Value>, ans: &Answer, cached: bool) {
    a.insert("gen_ai.request.model".into(), json!(ans.model));
    a.insert("gen_ai.response.model".into(), json!(ans.model));
    a.insert("gen_ai.provider.name".into(), json!(ans.provider));
    a.insert("gen_ai.operation.name".into(), json!("chat"));
    a.insert(
        "automation.model.version".into(),
        json!(version_of(w, &ans.model)),
    );
    a.insert("automation.prompt.version".into(), json!(prompt));
    a.insert("automation.cache.hit".into(), json!(cached));
    if !cached {
        a.insert("gen_ai.usage.input_tokens".into(), json!(ans.input_tokens));
        a.insert(
            "gen_ai.usage.output_tokens".into(),
            json!(ans.output_tokens),
        );
        a.insert("automation.cost_usd".into(), json!(ans.cost_usd));
    } else {
        a.insert("automation.cost_usd".into(), json!(0.0));
    }
}
