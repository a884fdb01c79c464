//! Workflow definitions: the YAML format, and its validation into runtime types.
//!
//! A definition names the workflow and its version, the input's required fields, the models and
//! connectors it uses, and its steps in order. Every problem is reported with the file, the step
//! (id and position) and the field, e.g.
//! `fixtures/workflows/invoice.yaml: step `route` (#3), field `when[0].goto`: unknown step `pst`;
//! steps are extract, review, post`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod validate;
use validate::validate;

/// Errors of workflow definitions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read workflow `{path}`: {cause}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not a valid definition; every problem found is listed.
    #[error("{} problem(s) in workflow `{file}`:\n{}", .problems.len(), .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// The problems.
        problems: Vec<Problem>,
    },
}

/// Result type of workflow definitions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The step (id and 1-based position), when the problem is in one.
    pub step: Option<(String, usize)>,
    /// The field, as a path (`retry.maximum_attempts`, `when[0].goto`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((id, n)) = &self.step {
            write!(f, "step `{id}` (#{n}), ")?;
        }
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

/// The file format (`fixtures/workflows/*.yaml`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Workflow name (`automation.workflow` in telemetry).
    pub name: String,
    /// Definition version, reported in telemetry.
    pub version: String,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// The input's fields: name to type (`string`, `number`, `integer`, `boolean`, `object`,
    /// `array`); all listed fields are required.
    #[serde(default)]
    pub input: BTreeMap<String, String>,
    /// Models by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelFile>,
    /// Connectors by name.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorFile>,
    /// The steps, run in order unless a route jumps.
    pub steps: Vec<StepFile>,
}

/// A model.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// `local` (the built-in seeded model) or `openai` (an OpenAI-compatible chat-completions API).
    pub provider: String,
    /// Model name (`gen_ai.request.model`).
    pub model: String,
    /// Model version (`automation.model.version`).
    pub version: String,
    /// Base URL of an `openai` provider.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Seed of a `local` model.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Share of correct answers of a `local` model, in [0, 1].
    #[serde(default)]
    pub accuracy: Option<f64>,
    /// Shift of a `local` model's confidence, in [-1, 1] (emulates drift).
    #[serde(default)]
    pub confidence_shift: Option<f64>,
    /// Accuracy of a `local` model under given prompt versions (overrides `accuracy`; emulates a
    /// prompt change that helps or hurts).
    #[serde(default)]
    pub prompt_accuracy: BTreeMap<String, f64>,
    /// Reported cost per 1000 tokens (prompt and completion), in USD.
    #[serde(default)]
    pub cost_per_1k_tokens: Option<f64>,
    /// Added latency of a `local` model per call, in milliseconds (emulates a slow model).
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

/// A connector.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    /// `http`, `ledger`, `tickets` or `outbox`.
    pub kind: String,
    /// URL of an `http` connector.
    #[serde(default)]
    pub url: Option<String>,
    /// Calls per second allowed (token bucket).
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open, like `30s`.
    #[serde(default)]
    pub breaker_cooldown: Option<String>,
    /// The connector changes the outside world (default true): its steps are authorized with
    /// the policy engine (`execute`) before each call. A read-only lookup sets `false`.
    #[serde(default)]
    pub side_effects: Option<bool>,
    /// Added latency per call, in milliseconds (emulates a slow system).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Share of calls of a local connector that fail with `unavailable` before doing anything,
    /// in [0, 1] (emulates a flaky system; drawn per idempotency key and attempt).
    #[serde(default)]
    pub failure_rate: Option<f64>,
}

/// A retry policy, as Temporal defines it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// First delay, like `1s` (default 1s).
    #[serde(default)]
    pub initial_interval: Option<String>,
    /// Growth of the delay per attempt (default 2.0, at least 1).
    #[serde(default)]
    pub backoff_coefficient: Option<f64>,
    /// Longest delay (default 100 × the initial interval).
    #[serde(default)]
    pub maximum_interval: Option<String>,
    /// Attempts in all, 0 for unlimited (default 0).
    #[serde(default)]
    pub maximum_attempts: Option<u32>,
    /// Error types that are never retried.
    #[serde(default)]
    pub non_retryable_errors: Vec<String>,
}

/// A routing rule: when the condition holds, go to a step.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// An earlier step's output field: `STEP.confidence`, `STEP.output.FIELD`, `input.FIELD`.
    pub field: String,
    /// `>=`, `>`, `<=`, `<`, `==`, `!=`.
    pub op: String,
    /// The value compared with (number, string or boolean).
    pub value: serde_json::Value,
    /// The step to go to.
    pub goto: String,
}

/// A step.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// Unique id (`automation.step`).
    pub id: String,
    /// `model`, `connector`, `human`, `transform` or `route`.
    pub kind: String,
    /// Model steps: `classify`, `extract` or `generate`.
    #[serde(default)]
    pub task: Option<String>,
    /// Model steps: the model's name in `models`.
    #[serde(default)]
    pub model: Option<String>,
    /// Model steps: a larger model's name, used when the first one's confidence is below
    /// `cascade_below` (a model cascade).
    #[serde(default)]
    pub fallback_model: Option<String>,
    /// Model steps: the confidence under which the fallback model is asked.
    #[serde(default)]
    pub cascade_below: Option<f64>,
    /// Model steps: prompt version (`automation.prompt.version`).
    #[serde(default)]
    pub prompt_version: Option<String>,
    /// Model steps: a candidate prompt version for canary runs.
    #[serde(default)]
    pub canary_prompt_version: Option<String>,
    /// Model steps: percentage of runs that use the canary prompt, in [0, 100].
    #[serde(default)]
    pub canary_percent: Option<f64>,
    /// Model steps: cache answers by model, prompt version and input.
    #[serde(default)]
    pub cache: bool,
    /// Connector steps: the connector's name in `connectors`.
    #[serde(default)]
    pub connector: Option<String>,
    /// Connector steps: the operation (`post`, `create`, `send`, ...).
    #[serde(default)]
    pub operation: Option<String>,
    /// Connector steps: the step (a connector step) that undoes this one when a later step fails.
    #[serde(default)]
    pub compensate: Option<String>,
    /// Human steps: the review queue, named after the `Custos::Team` whose members may decide its
    /// tasks (policy `review-by-assigned-team`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Human steps: `low`, `normal`, `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<String>,
    /// Human steps: on timeout, `escalate` or the step to go to.
    #[serde(default)]
    pub on_timeout: Option<String>,
    /// Transform steps: output field to input path (`input.vendor`, `extract.output.total`).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Route steps: rules in order; the first that holds decides.
    #[serde(default)]
    pub when: Vec<RuleFile>,
    /// Route steps: where to go when no rule holds.
    #[serde(default)]
    pub default: Option<String>,
    /// How long one attempt may take, like `30s` (default 30s; human steps 24h).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries of failed attempts.
    #[serde(default)]
    pub retry: Option<RetryFile>,
}

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial_interval: Duration,
    /// Growth per attempt.
    pub backoff_coefficient: f64,
    /// Longest delay.
    pub maximum_interval: Duration,
    /// Attempts in all; 0 is unlimited.
    pub maximum_attempts: u32,
    /// Never retried.
    pub non_retryable_errors: BTreeSet<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(100),
            maximum_attempts: 0,
            non_retryable_errors: BTreeSet::new(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt` (2 is the first retry); `None` when no attempt is left.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        if self.maximum_attempts != 0 && attempt > self.maximum_attempts {
            return None;
        }
        let exp = attempt.saturating_sub(2).min(64) as i32;
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exp);
        Some(Duration::from_secs_f64(
            secs.min(self.maximum_interval.as_secs_f64()),
        ))
    }
}

/// A validated workflow.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The parsed file.
    pub file: WorkflowFile,
    /// Each step's timeout.
    pub timeouts: Vec<Duration>,
    /// Each step's retry policy.
    pub retries: Vec<RetryPolicy>,
}

/// Parses and validates a definition's text (`file` names it in messages).
pub fn parse(text: &str, file: &str) -> Result<Workflow> {
    let w: WorkflowFile = serde_yaml_ng::from_str(text).map_err(|e| Error::Invalid {
        file: file.to_string(),
        problems: vec![Problem {
            step: None,
            field: e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(document)".into()),
            message: e.to_string(),
        }],
    })?;
    validate(w, file)
}

/// Reads, parses and validates a definition.
pub fn load(path: &Path) -> Result<Workflow> {
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Read {
        path: path.display().to_string(),
        cause,
    })?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_analytics::duration::parse as parse_duration;

    #[test]
    fn durations_and_backoff() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        let r = RetryPolicy {
            maximum_attempts: 5,
            maximum_interval: Duration::from_secs(5),
            ..Default::default()
        };
        let d: Vec<_> = (2..=6).map(|a| r.delay_before(a)).collect();
        assert_eq!(
            d,
            [1, 2, 4, 5]
                .map(|s| Some(Duration::from_secs(s)))
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }
}
