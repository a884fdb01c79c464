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

use custos_analytics::duration::parse as parse_duration;
use serde::Deserialize;

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

const KINDS: &[&str] = &["model", "connector", "human", "transform", "route"];
const TASKS: &[&str] = &["classify", "extract", "generate"];
const OPS: &[&str] = &[">=", ">", "<=", "<", "==", "!="];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const CONNECTOR_KINDS: &[&str] = &["http", "ledger", "tickets", "outbox"];
const TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array"];

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

fn one_of(v: &str, allowed: &[&str]) -> std::result::Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("`{v}` is not one of {}", allowed.join(", ")))
    }
}

fn validate(w: WorkflowFile, file: &str) -> Result<Workflow> {
    let mut problems = Vec::new();
    let top = |problems: &mut Vec<Problem>, field: &str, message: String| {
        problems.push(Problem {
            step: None,
            field: field.into(),
            message,
        })
    };
    if w.name.trim().is_empty() {
        top(&mut problems, "name", "is empty".into());
    }
    if w.steps.is_empty() {
        top(
            &mut problems,
            "steps",
            "a workflow needs at least one step".into(),
        );
    }
    for (name, ty) in &w.input {
        if let Err(m) = one_of(ty, TYPES) {
            top(&mut problems, &format!("input.{name}"), m);
        }
    }
    for (name, m) in &w.models {
        let field = format!("models.{name}");
        if let Err(e) = one_of(&m.provider, &["local", "openai"]) {
            top(&mut problems, &format!("{field}.provider"), e);
        }
        if m.provider == "openai" && m.base_url.is_none() {
            top(
                &mut problems,
                &format!("{field}.base_url"),
                "an `openai` provider needs `base_url`, like `http://127.0.0.1:8080/v1`".into(),
            );
        }
        if m.accuracy.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
            top(
                &mut problems,
                &format!("{field}.accuracy"),
                "must be within [0, 1]".into(),
            );
        }
        for (version, a) in &m.prompt_accuracy {
            if !(0.0..=1.0).contains(a) {
                top(
                    &mut problems,
                    &format!("{field}.prompt_accuracy.{version}"),
                    "must be within [0, 1]".into(),
                );
            }
        }
        if m.cost_per_1k_tokens.is_some_and(|c| c.is_nan() || c < 0.0) {
            top(
                &mut problems,
                &format!("{field}.cost_per_1k_tokens"),
                "must be 0 or more".into(),
            );
        }
        if m.confidence_shift
            .is_some_and(|a| !(-1.0..=1.0).contains(&a))
        {
            top(
                &mut problems,
                &format!("{field}.confidence_shift"),
                "must be within [-1, 1]".into(),
            );
        }
    }
    for (name, c) in &w.connectors {
        let field = format!("connectors.{name}");
        if let Err(e) = one_of(&c.kind, CONNECTOR_KINDS) {
            top(&mut problems, &format!("{field}.kind"), e);
        }
        if c.kind == "http" && c.url.is_none() {
            top(
                &mut problems,
                &format!("{field}.url"),
                "an `http` connector needs `url`".into(),
            );
        }
        if let Some(d) = &c.breaker_cooldown
            && let Err(e) = parse_duration(d)
        {
            top(&mut problems, &format!("{field}.breaker_cooldown"), e);
        }
        if c.failure_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            top(
                &mut problems,
                &format!("{field}.failure_rate"),
                "must be within [0, 1]".into(),
            );
        }
        if c.rate_per_second.is_some_and(|r| r.is_nan() || r <= 0.0) {
            top(
                &mut problems,
                &format!("{field}.rate_per_second"),
                "must be greater than 0".into(),
            );
        }
    }

    let ids: Vec<&str> = w.steps.iter().map(|s| s.id.as_str()).collect();
    let known = |id: &str| ids.contains(&id);
    let list = ids.join(", ");
    let mut seen = BTreeSet::new();
    let mut timeouts = Vec::new();
    let mut retries = Vec::new();
    for (i, s) in w.steps.iter().enumerate() {
        let at = Some((s.id.clone(), i + 1));
        let mut bad = |field: &str, message: String| {
            problems.push(Problem {
                step: at.clone(),
                field: field.into(),
                message,
            })
        };
        if s.id.trim().is_empty() {
            bad("id", "is empty".into());
        }
        if !seen.insert(s.id.as_str()) {
            bad(
                "id",
                format!("`{}` is used by an earlier step; ids must be unique", s.id),
            );
        }
        if let Err(e) = one_of(&s.kind, KINDS) {
            bad("kind", e);
        }
        let step_ref = |bad: &mut dyn FnMut(&str, String), field: &str, target: &str| {
            if !known(target) {
                bad(field, format!("unknown step `{target}`; steps are {list}"));
            }
        };
        match s.kind.as_str() {
            "model" => {
                match &s.task {
                    None => bad(
                        "task",
                        format!("a model step needs `task`: {}", TASKS.join(", ")),
                    ),
                    Some(t) => {
                        if let Err(e) = one_of(t, TASKS) {
                            bad("task", e);
                        }
                    }
                }
                for (field, m) in [("model", &s.model), ("fallback_model", &s.fallback_model)] {
                    match m {
                        Some(m) if !w.models.contains_key(m) => bad(
                            field,
                            format!(
                                "unknown model `{m}`; models are {}",
                                w.models.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ),
                        None if field == "model" => {
                            bad("model", "a model step needs `model`".into())
                        }
                        _ => {}
                    }
                }
                if s.fallback_model.is_some() != s.cascade_below.is_some() {
                    bad(
                        "cascade_below",
                        "a model cascade needs both `fallback_model` and `cascade_below`".into(),
                    );
                }
                if s.canary_percent
                    .is_some_and(|p| !(0.0..=100.0).contains(&p))
                {
                    bad("canary_percent", "must be within [0, 100]".into());
                }
                if s.canary_percent.is_some() != s.canary_prompt_version.is_some() {
                    bad(
                        "canary_prompt_version",
                        "canary routing needs both `canary_prompt_version` and `canary_percent`"
                            .into(),
                    );
                }
                if s.prompt_version.is_none() {
                    bad(
                        "prompt_version",
                        "a model step needs `prompt_version` (reported in telemetry, judged by the deploy gate)".into(),
                    );
                }
            }
            "connector" => {
                match &s.connector {
                    None => bad("connector", "a connector step needs `connector`".into()),
                    Some(c) if !w.connectors.contains_key(c) => bad(
                        "connector",
                        format!(
                            "unknown connector `{c}`; connectors are {}",
                            w.connectors.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    _ => {}
                }
                if s.operation.is_none() {
                    bad("operation", "a connector step needs `operation`".into());
                }
                if let Some(c) = &s.compensate {
                    match w.steps.iter().find(|x| &x.id == c) {
                        None => step_ref(&mut bad, "compensate", c),
                        Some(x) if x.kind != "connector" => bad(
                            "compensate",
                            format!(
                                "compensation `{c}` must be a connector step, not `{}`",
                                x.kind
                            ),
                        ),
                        _ => {}
                    }
                }
            }
            "human" => {
                if s.queue.is_none() {
                    bad("queue", "a human step needs `queue`".into());
                }
                if let Some(p) = &s.priority
                    && let Err(e) = one_of(p, PRIORITIES)
                {
                    bad("priority", e);
                }
                if let Some(t) = &s.on_timeout
                    && t != "escalate"
                {
                    step_ref(&mut bad, "on_timeout", t);
                }
            }
            "transform" if s.set.is_empty() => {
                bad(
                    "set",
                    "a transform step needs `set` (output field: source path)".into(),
                );
            }
            "route" => {
                if s.when.is_empty() {
                    bad("when", "a route step needs at least one rule".into());
                }
                for (r, rule) in s.when.iter().enumerate() {
                    if let Err(e) = one_of(&rule.op, OPS) {
                        bad(&format!("when[{r}].op"), e);
                    }
                    step_ref(&mut bad, &format!("when[{r}].goto"), &rule.goto);
                    let source = rule.field.split('.').next().unwrap_or_default();
                    if source != "input"
                        && !ids.get(..i).is_some_and(|before| before.contains(&source))
                    {
                        bad(
                            &format!("when[{r}].field"),
                            format!(
                                "`{}` must read `input.FIELD` or an earlier step (`STEP.confidence`, `STEP.output.FIELD`)",
                                rule.field
                            ),
                        );
                    }
                }
                match &s.default {
                    None => bad("default", "a route step needs `default`".into()),
                    Some(d) => step_ref(&mut bad, "default", d),
                }
            }
            _ => {}
        }
        let default_timeout = if s.kind == "human" {
            Duration::from_secs(86_400)
        } else {
            Duration::from_secs(30)
        };
        timeouts.push(match &s.timeout {
            None => default_timeout,
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                bad("timeout", e);
                default_timeout
            }),
        });
        let mut retry = RetryPolicy::default();
        if let Some(r) = &s.retry {
            if let Some(d) = &r.initial_interval {
                match parse_duration(d) {
                    Ok(d) => {
                        retry.initial_interval = d;
                        retry.maximum_interval = d * 100;
                    }
                    Err(e) => bad("retry.initial_interval", e),
                }
            }
            if let Some(c) = r.backoff_coefficient {
                if c >= 1.0 && c.is_finite() {
                    retry.backoff_coefficient = c;
                } else {
                    bad(
                        "retry.backoff_coefficient",
                        format!("`{c}` must be at least 1"),
                    );
                }
            }
            if let Some(d) = &r.maximum_interval {
                match parse_duration(d) {
                    Ok(d) if d >= retry.initial_interval => retry.maximum_interval = d,
                    Ok(_) => bad(
                        "retry.maximum_interval",
                        "must not be shorter than `initial_interval`".into(),
                    ),
                    Err(e) => bad("retry.maximum_interval", e),
                }
            }
            if let Some(n) = r.maximum_attempts {
                retry.maximum_attempts = n;
            }
            retry.non_retryable_errors = r.non_retryable_errors.iter().cloned().collect();
        }
        retries.push(retry);
    }
    if problems.is_empty() {
        Ok(Workflow {
            file: w,
            timeouts,
            retries,
        })
    } else {
        Err(Error::Invalid {
            file: file.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
