//! Validation of a parsed definition: every problem is collected (not only the first), each
//! naming its step (id and position) and field, and the step timeouts and retry policies are
//! resolved once into runtime values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use custos_analytics::duration::parse as parse_duration;

use super::{
    ConnectorFile, Error, ModelFile, Problem, Result, RetryFile, RetryPolicy, StepFile, Workflow,
    WorkflowFile,
};

const KINDS: &[&str] = &["model", "connector", "human", "transform", "route"];
const TASKS: &[&str] = &["classify", "extract", "generate"];
const OPS: &[&str] = &[">=", ">", "<=", "<", "==", "!="];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const CONNECTOR_KINDS: &[&str] = &["http", "ledger", "tickets", "outbox"];
const TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array"];

fn one_of(v: &str, allowed: &[&str]) -> std::result::Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("`{v}` is not one of {}", allowed.join(", ")))
    }
}

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// A problem outside the steps.
    fn top(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(Problem {
            step: None,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// The problems of one step, with what its checks need to know about the workflow.
struct StepCheck<'a> {
    problems: &'a mut Problems,
    at: (String, usize),
    ids: &'a [&'a str],
}

impl StepCheck<'_> {
    fn bad(&mut self, field: &str, message: impl Into<String>) {
        self.problems.0.push(Problem {
            step: Some(self.at.clone()),
            field: field.into(),
            message: message.into(),
        });
    }

    /// `target` must name a step.
    fn step_ref(&mut self, field: &str, target: &str) {
        if !self.ids.contains(&target) {
            let list = self.ids.join(", ");
            self.bad(field, format!("unknown step `{target}`; steps are {list}"));
        }
    }
}

/// Checks a parsed definition and resolves its timeouts and retry policies.
pub(super) fn validate(w: WorkflowFile, file: &str) -> Result<Workflow> {
    let mut problems = Problems::default();
    if w.name.trim().is_empty() {
        problems.top("name", "is empty");
    }
    if w.steps.is_empty() {
        problems.top("steps", "a workflow needs at least one step");
    }
    for (name, ty) in &w.input {
        if let Err(m) = one_of(ty, TYPES) {
            problems.top(&format!("input.{name}"), m);
        }
    }
    for (name, m) in &w.models {
        model(&mut problems, &format!("models.{name}"), m);
    }
    for (name, c) in &w.connectors {
        connector(&mut problems, &format!("connectors.{name}"), c);
    }
    let ids: Vec<&str> = w.steps.iter().map(|s| s.id.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut timeouts = Vec::new();
    let mut retries = Vec::new();
    for (i, s) in w.steps.iter().enumerate() {
        let mut check = StepCheck {
            problems: &mut problems,
            at: (s.id.clone(), i + 1),
            ids: &ids,
        };
        if s.id.trim().is_empty() {
            check.bad("id", "is empty");
        }
        if !seen.insert(s.id.as_str()) {
            let message = format!("`{}` is used by an earlier step; ids must be unique", s.id);
            check.bad("id", message);
        }
        if let Err(e) = one_of(&s.kind, KINDS) {
            check.bad("kind", e);
        }
        match s.kind.as_str() {
            "model" => model_step(&mut check, s, &w.models),
            "connector" => connector_step(&mut check, s, &w),
            "human" => human_step(&mut check, s),
            "transform" if s.set.is_empty() => check.bad(
                "set",
                "a transform step needs `set` (output field: source path)",
            ),
            "route" => route_step(&mut check, s, i),
            _ => {}
        }
        timeouts.push(timeout(&mut check, s));
        retries.push(
            s.retry
                .as_ref()
                .map_or_else(RetryPolicy::default, |r| retry(&mut check, r)),
        );
    }
    if problems.0.is_empty() {
        Ok(Workflow {
            file: w,
            timeouts,
            retries,
        })
    } else {
        Err(Error::Invalid {
            file: file.to_string(),
            problems: problems.0,
        })
    }
}

fn unit_interval(v: Option<f64>) -> bool {
    v.is_some_and(|a| !(0.0..=1.0).contains(&a))
}

fn model(problems: &mut Problems, field: &str, m: &ModelFile) {
    if let Err(e) = one_of(&m.provider, &["local", "openai"]) {
        problems.top(&format!("{field}.provider"), e);
    }
    if m.provider == "openai" && m.base_url.is_none() {
        problems.top(
            &format!("{field}.base_url"),
            "an `openai` provider needs `base_url`, like `http://127.0.0.1:8080/v1`",
        );
    }
    if unit_interval(m.accuracy) {
        problems.top(&format!("{field}.accuracy"), "must be within [0, 1]");
    }
    for (version, a) in &m.prompt_accuracy {
        if unit_interval(Some(*a)) {
            let at = format!("{field}.prompt_accuracy.{version}");
            problems.top(&at, "must be within [0, 1]");
        }
    }
    if m.cost_per_1k_tokens.is_some_and(|c| c.is_nan() || c < 0.0) {
        problems.top(&format!("{field}.cost_per_1k_tokens"), "must be 0 or more");
    }
    if m.confidence_shift
        .is_some_and(|a| !(-1.0..=1.0).contains(&a))
    {
        problems.top(
            &format!("{field}.confidence_shift"),
            "must be within [-1, 1]",
        );
    }
}

fn connector(problems: &mut Problems, field: &str, c: &ConnectorFile) {
    if let Err(e) = one_of(&c.kind, CONNECTOR_KINDS) {
        problems.top(&format!("{field}.kind"), e);
    }
    if c.kind == "http" && c.url.is_none() {
        problems.top(&format!("{field}.url"), "an `http` connector needs `url`");
    }
    if let Some(d) = &c.breaker_cooldown
        && let Err(e) = parse_duration(d)
    {
        problems.top(&format!("{field}.breaker_cooldown"), e);
    }
    if unit_interval(c.failure_rate) {
        problems.top(&format!("{field}.failure_rate"), "must be within [0, 1]");
    }
    if c.rate_per_second.is_some_and(|r| r.is_nan() || r <= 0.0) {
        problems.top(
            &format!("{field}.rate_per_second"),
            "must be greater than 0",
        );
    }
}

fn model_step(check: &mut StepCheck<'_>, s: &StepFile, models: &BTreeMap<String, ModelFile>) {
    match &s.task {
        None => check.bad(
            "task",
            format!("a model step needs `task`: {}", TASKS.join(", ")),
        ),
        Some(t) => {
            if let Err(e) = one_of(t, TASKS) {
                check.bad("task", e);
            }
        }
    }
    for (field, m) in [("model", &s.model), ("fallback_model", &s.fallback_model)] {
        match m {
            Some(m) if !models.contains_key(m) => {
                let known = models.keys().cloned().collect::<Vec<_>>().join(", ");
                check.bad(field, format!("unknown model `{m}`; models are {known}"));
            }
            None if field == "model" => check.bad("model", "a model step needs `model`"),
            _ => {}
        }
    }
    if s.fallback_model.is_some() != s.cascade_below.is_some() {
        check.bad(
            "cascade_below",
            "a model cascade needs both `fallback_model` and `cascade_below`",
        );
    }
    if s.canary_percent
        .is_some_and(|p| !(0.0..=100.0).contains(&p))
    {
        check.bad("canary_percent", "must be within [0, 100]");
    }
    if s.canary_percent.is_some() != s.canary_prompt_version.is_some() {
        check.bad(
            "canary_prompt_version",
            "canary routing needs both `canary_prompt_version` and `canary_percent`",
        );
    }
    if s.prompt_version.is_none() {
        check.bad(
            "prompt_version",
            "a model step needs `prompt_version` (reported in telemetry, judged by the deploy gate)",
        );
    }
}

fn connector_step(check: &mut StepCheck<'_>, s: &StepFile, w: &WorkflowFile) {
    match &s.connector {
        None => check.bad("connector", "a connector step needs `connector`"),
        Some(c) if !w.connectors.contains_key(c) => {
            let known = w.connectors.keys().cloned().collect::<Vec<_>>().join(", ");
            check.bad(
                "connector",
                format!("unknown connector `{c}`; connectors are {known}"),
            );
        }
        _ => {}
    }
    if s.operation.is_none() {
        check.bad("operation", "a connector step needs `operation`");
    }
    if let Some(c) = &s.compensate {
        match w.steps.iter().find(|x| &x.id == c) {
            None => check.step_ref("compensate", c),
            Some(x) if x.kind != "connector" => check.bad(
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

fn human_step(check: &mut StepCheck<'_>, s: &StepFile) {
    if s.queue.is_none() {
        check.bad("queue", "a human step needs `queue`");
    }
    if let Some(p) = &s.priority
        && let Err(e) = one_of(p, PRIORITIES)
    {
        check.bad("priority", e);
    }
    if let Some(t) = &s.on_timeout
        && t != "escalate"
    {
        check.step_ref("on_timeout", t);
    }
}

/// A route step; `i` is its position, since a rule may only read earlier steps.
fn route_step(check: &mut StepCheck<'_>, s: &StepFile, i: usize) {
    if s.when.is_empty() {
        check.bad("when", "a route step needs at least one rule");
    }
    for (r, rule) in s.when.iter().enumerate() {
        if let Err(e) = one_of(&rule.op, OPS) {
            check.bad(&format!("when[{r}].op"), e);
        }
        check.step_ref(&format!("when[{r}].goto"), &rule.goto);
        let source = rule.field.split('.').next().unwrap_or_default();
        let earlier = check.ids.get(..i).is_some_and(|b| b.contains(&source));
        if source != "input" && !earlier {
            check.bad(
                &format!("when[{r}].field"),
                format!(
                    "`{}` must read `input.FIELD` or an earlier step (`STEP.confidence`, `STEP.output.FIELD`)",
                    rule.field
                ),
            );
        }
    }
    match &s.default {
        None => check.bad("default", "a route step needs `default`"),
        Some(d) => check.step_ref("default", d),
    }
}

/// The step's timeout per attempt: 30 s by default, 24 h for a human step.
fn timeout(check: &mut StepCheck<'_>, s: &StepFile) -> Duration {
    let default = if s.kind == "human" {
        Duration::from_secs(86_400)
    } else {
        Duration::from_secs(30)
    };
    match s.timeout.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            check.bad("timeout", e);
            default
        }
    }
}

/// The step's retry policy, Temporal's defaults where a field is absent.
fn retry(check: &mut StepCheck<'_>, r: &RetryFile) -> RetryPolicy {
    let mut retry = RetryPolicy::default();
    if let Some(d) = &r.initial_interval {
        match parse_duration(d) {
            Ok(d) => {
                retry.initial_interval = d;
                retry.maximum_interval = d * 100;
            }
            Err(e) => check.bad("retry.initial_interval", e),
        }
    }
    if let Some(c) = r.backoff_coefficient {
        if c >= 1.0 && c.is_finite() {
            retry.backoff_coefficient = c;
        } else {
            check.bad(
                "retry.backoff_coefficient",
                format!("`{c}` must be at least 1"),
            );
        }
    }
    if let Some(d) = &r.maximum_interval {
        match parse_duration(d) {
            Ok(d) if d >= retry.initial_interval => retry.maximum_interval = d,
            Ok(_) => check.bad(
                "retry.maximum_interval",
                "must not be shorter than `initial_interval`",
            ),
            Err(e) => check.bad("retry.maximum_interval", e),
        }
    }
    if let Some(n) = r.maximum_attempts {
        retry.maximum_attempts = n;
    }
    retry.non_retryable_errors = r.non_retryable_errors.iter().cloned().collect();
    retry
}
