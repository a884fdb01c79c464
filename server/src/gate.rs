//! The deploy gate: measure a candidate prompt or model version on its canary traffic, evaluate the
//! `deploy` policies on what was measured, record the decision in the audit log, and render the
//! result for people and CI systems (text, JSON, GitHub annotations, JUnit XML, SARIF).
//!
//! The gate fails closed: a metric that cannot be measured (no canary traffic, no reviewed
//! decisions, no finished or successful runs, no confidences) is a deny naming what is missing, and
//! a policy that errors is a deny (see [`custos_policy::engine`]).

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use custos_analytics::Analytics;
use custos_analytics::canary::{CanaryMeasurement, CanaryQuery, ChangeKind, VersionStats, measure};
use custos_analytics::metrics::parse_duration;
use custos_audit::{AuditLog, Entry};
use custos_policy::engine::{AuthzRequest, Decision, DecisionError, Engine, ErrorKind};
use custos_policy::testing::xml_escape;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Error, Result};

/// The canary window: either the last `last` before the evaluation time, or `from`..`to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryWindow {
    /// A duration ending at the evaluation time, like `24h` or `90m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Window start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Window end (RFC 3339; default the evaluation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

/// A change file: what a CI pipeline asks to deploy (YAML or JSON; docs/ci.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeFile {
    /// What changes: `prompt` or `model`.
    pub change: ChangeKind,
    /// The workflow the version is deployed into.
    pub workflow: String,
    /// Only this step's decisions count (for workflows with several decision steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The version serving now.
    pub current: String,
    /// The version asking to be deployed.
    pub candidate: String,
    /// Who asks, as a Cedar entity reference (`Custos::Service::"ci"`, `Custos::User::"ana"`).
    pub requested_by: String,
    /// The canary window to measure.
    pub canary: CanaryWindow,
    /// Why: a pull request, a ticket; recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ChangeFile {
    /// Parses and checks a change file's text (`source` names it in messages).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let c: ChangeFile = serde_yaml_ng::from_str(text).map_err(|e| {
            Error::Gate(format!(
                "invalid change file `{source}`: {e}; it needs `change` (prompt or model), `workflow`, `current`, `candidate`, `requested_by` and `canary` (docs/ci.md)"
            ))
        })?;
        let bad = |m: String| Err(Error::Gate(format!("invalid change file `{source}`: {m}")));
        for (field, v) in [
            ("workflow", &c.workflow),
            ("current", &c.current),
            ("candidate", &c.candidate),
            ("requested_by", &c.requested_by),
        ] {
            if v.trim().is_empty() {
                return bad(format!("`{field}` is empty"));
            }
        }
        if c.current == c.candidate {
            return bad(format!(
                "`candidate` and `current` are both `{}`; name the version being replaced",
                c.current
            ));
        }
        match (&c.canary.last, &c.canary.from) {
            (Some(_), Some(_)) => {
                return bad("`canary` has both `last` and `from`; give one".into());
            }
            (None, None) => {
                return bad(
                    "`canary` needs `last` (like `24h`) or `from` (and optionally `to`)".into(),
                );
            }
            (Some(last), None) => {
                if c.canary.to.is_some() {
                    return bad("`canary.to` goes with `from`, not with `last`".into());
                }
                if let Err(e) = parse_duration(last) {
                    return bad(format!("`canary.last`: {e}"));
                }
            }
            (None, Some(from)) => {
                if let Some(to) = c.canary.to
                    && to <= *from
                {
                    return bad(format!(
                        "`canary.to` ({to}) is not after `canary.from` ({from})"
                    ));
                }
            }
        }
        Ok(c)
    }

    /// Reads and parses a change file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Gate(format!("cannot read change file `{}`: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The window as instants, given the evaluation time.
    pub fn window(&self, at: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        if let Some(last) = &self.canary.last {
            let d = parse_duration(last).map_err(|e| Error::Gate(e.to_string()))?;
            let d = chrono::Duration::from_std(d)
                .map_err(|e| Error::Gate(format!("`canary.last` = `{last}`: {e}")))?;
            return Ok((at - d, at));
        }
        let from = self
            .canary
            .from
            .ok_or_else(|| Error::Gate("`canary` needs `last` or `from`".into()))?;
        Ok((from, self.canary.to.unwrap_or(at)))
    }
}

/// A measured value a determining policy read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mattered {
    /// The policy.
    pub policy: String,
    /// The metric (a field of `context.metrics`).
    pub metric: String,
    /// Its value as evaluated.
    pub value: Value,
}

/// Where the audit record of a decision is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRef {
    /// Its `seq`.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Everything the gate decided and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// The change asked for.
    pub change: ChangeFile,
    /// Window start.
    pub window_from: DateTime<Utc>,
    /// Window end.
    pub window_to: DateTime<Utc>,
    /// What was measured.
    pub measurement: CanaryMeasurement,
    /// The Cedar context evaluated (`null` when a metric was missing and nothing was evaluated).
    pub context: Value,
    /// The decision.
    pub decision: Decision,
    /// The measured values the determining policies read.
    pub mattered: Vec<Mattered>,
    /// Every `deploy` policy of the set, with where it is written (for JUnit and SARIF).
    pub policies: Vec<PolicyRef>,
    /// The policy directory as given (paths in annotations start with it).
    pub policy_dir: String,
    /// The audit record, once appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditRef>,
}

/// A `deploy` policy of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Its `@id`.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Its `@advice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// Its file, relative to the policy directory.
    pub file: String,
    /// The line of its `@id`.
    pub line: usize,
}

impl GateReport {
    /// Whether the change may be deployed.
    pub fn allowed(&self) -> bool {
        self.decision.allowed()
    }

    /// The process exit code: 0 allow, 2 deny.
    pub fn exit_code(&self) -> i32 {
        if self.allowed() { 0 } else { 2 }
    }
}

/// A ratio as a Cedar decimal literal (4 fractional digits, within Cedar's range).
fn decimal(x: f64) -> Value {
    let x = x.clamp(-1e12, 1e12);
    Value::String(format!("{x:.4}"))
}

/// Metrics read by a policy: every `context.metrics.NAME` in its text.
fn metrics_read(policy_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = "context.metrics.";
    let mut rest = policy_text;
    while let Some(i) = rest.find(needle) {
        rest = &rest[i + needle.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Builds the Cedar `metrics` record, or lists what could not be measured.
fn metrics_context(m: &CanaryMeasurement) -> std::result::Result<Value, Vec<String>> {
    let (c, b) = (&m.candidate, &m.current);
    let mut missing = Vec::new();
    if c.decisions == 0 {
        missing.push(format!(
            "no canary traffic: no decisions of candidate `{}` in the window",
            c.version
        ));
    }
    if b.decisions == 0 {
        missing.push(format!(
            "no baseline: no decisions of current `{}` in the window",
            b.version
        ));
    }
    // Each metric of both versions, and why it can be missing.
    let why = [
        "override rate: no human-reviewed decisions",
        "error rate: no finished runs",
        "p99 latency: no finished runs",
        "cost per success: no successful runs",
    ];
    let values = |s: &VersionStats| {
        [
            s.override_rate,
            s.error_rate,
            s.p99_ms,
            s.cost_per_success_usd,
        ]
    };
    let usable = |v: Option<f64>| v.filter(|x| x.is_finite());
    let (cv, bv) = (values(c), values(b));
    for (i, why) in why.iter().enumerate() {
        for (s, v) in [(c, cv[i]), (b, bv[i])] {
            if usable(v).is_none() {
                let (what, reason) = why.split_once(':').unwrap_or((why, ""));
                missing.push(format!("{what} of `{}`:{reason}", s.version));
            }
        }
    }
    let [co, ce, cp, cc] = cv.map(|v| usable(v).unwrap_or(0.0));
    let [bo, be, bp, bc] = bv.map(|v| usable(v).unwrap_or(0.0));
    let psi = match m.confidence_psi {
        Some(x) if x.is_finite() => x,
        _ => {
            missing.push("confidence drift: decisions of both versions need a confidence".into());
            0.0
        }
    };
    if !missing.is_empty() {
        return Err(missing);
    }
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            a / b
        } else if a > 0.0 {
            1e12
        } else {
            1.0
        }
    };
    // One-sided 95% upper bound of the override-rate difference (Wald, with Agresti-Caffo's
    // pseudo-counts for the standard error so that 0 of n does not claim certainty).
    let adjusted = |x: i64, n: i64| (x as f64 + 1.0) / (n as f64 + 2.0);
    let (pa, pb) = (
        adjusted(c.overrides, c.reviewed),
        adjusted(b.overrides, b.reviewed),
    );
    let se = (pa * (1.0 - pa) / (c.reviewed as f64 + 2.0)
        + pb * (1.0 - pb) / (b.reviewed as f64 + 2.0))
        .sqrt();
    let upper = (co - bo) + 1.645 * se;
    Ok(json!({
        "sample_size": c.decisions,
        "baseline_sample_size": b.decisions,
        "override_rate": decimal(co),
        "override_rate_delta": decimal(co - bo),
        "override_rate_delta_upper": decimal(upper),
        "error_rate": decimal(ce),
        "error_rate_delta": decimal(ce - be),
        "p99_latency_ms": cp.round() as i64,
        "p99_latency_ratio": decimal(ratio(cp, bp)),
        "cost_per_success_usd": decimal(cc),
        "cost_per_success_ratio": decimal(ratio(cc, bc)),
        "confidence_psi": decimal(psi),
    }))
}

/// The `deploy` policies of the engine's set.
fn deploy_policies(engine: &Engine) -> Vec<PolicyRef> {
    let p = engine.policies();
    let mut out: Vec<PolicyRef> = p
        .set
        .policies()
        .filter(|pol| pol.to_string().contains("Action::\"deploy\""))
        .map(|pol| {
            let id = pol.id().to_string();
            let (file, line) = p
                .locations
                .get(&id)
                .map(|(f, l, _)| {
                    (
                        f.strip_prefix(&p.dir).unwrap_or(f).display().to_string(),
                        *l,
                    )
                })
                .unwrap_or_default();
            PolicyRef {
                effect: pol.effect().to_string(),
                advice: pol.annotation("advice").map(str::to_string),
                id,
                file,
                line,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}

/// Measures the change's canary and decides. Nothing is recorded yet: see [`record`].
pub async fn evaluate(
    analytics: &Analytics,
    engine: &Engine,
    change: &ChangeFile,
    at: DateTime<Utc>,
    policy_dir: &str,
) -> Result<GateReport> {
    let (from, to) = change.window(at)?;
    let measurement = measure(
        analytics,
        &CanaryQuery {
            kind: change.change,
            workflow: change.workflow.clone(),
            step: change.step.clone(),
            current: change.current.clone(),
            candidate: change.candidate.clone(),
            from,
            to,
        },
    )
    .await?;
    let (context, decision) = match metrics_context(&measurement) {
        Ok(metrics) => {
            let context = json!({
                "change": change.change.name(),
                "current_version": change.current,
                "candidate_version": change.candidate,
                "metrics": metrics,
            });
            let req = AuthzRequest {
                principal: Value::String(change.requested_by.clone()),
                action: Value::String("deploy".into()),
                resource: json!({"type": "Custos::Workflow", "id": change.workflow}),
                context: context.clone(),
                entities: Vec::new(),
            };
            (context, engine.authorize(&req))
        }
        Err(missing) => (
            Value::Null,
            engine.deny(
                missing
                    .into_iter()
                    .map(|m| DecisionError {
                        kind: ErrorKind::Measurement,
                        policy: None,
                        message: format!("missing metric: {m}"),
                    })
                    .collect(),
            ),
        ),
    };
    let mut mattered = Vec::new();
    for d in &decision.determining_policies {
        let Some(policy) = engine
            .policies()
            .set
            .policy(&cedar_policy::PolicyId::new(&d.id))
        else {
            continue;
        };
        for metric in metrics_read(&policy.to_string()) {
            let value = context["metrics"][&metric].clone();
            mattered.push(Mattered {
                policy: d.id.clone(),
                metric,
                value,
            });
        }
    }
    Ok(GateReport {
        change: change.clone(),
        window_from: from,
        window_to: to,
        measurement,
        context,
        decision,
        mattered,
        policies: deploy_policies(engine),
        policy_dir: policy_dir.to_string(),
        audit: None,
    })
}

/// Appends the gate decision to the audit log (durably) and notes the record in the report.
pub fn record(audit: &AuditLog, report: &mut GateReport) -> Result<()> {
    let c = &report.change;
    let entry = Entry {
        kind: "gate".into(),
        principal: c.requested_by.clone(),
        action: "Custos::Action::\"deploy\"".into(),
        resource: format!("Custos::Workflow::{}", Value::String(c.workflow.clone())),
        decision: report.decision.decision.clone(),
        policies: report.decision.policy_ids(),
        advice: report.decision.advice.clone(),
        errors: report
            .decision
            .errors
            .iter()
            .map(|e| e.message.clone())
            .collect(),
        context: json!({
            "change": c,
            "window": {"from": report.window_from, "to": report.window_to},
            "evaluated": report.context,
        }),
        policy_hash: report.decision.policy_hash.clone(),
    };
    let r = audit.append(entry)?;
    report.audit = Some(AuditRef {
        seq: r.seq,
        hash: r.hash,
    });
    Ok(())
}

/// Records the policy set in the audit log when it differs from the set of the last record: every
/// change of the deciding policies leaves a trace before the first decision it makes.
pub fn note_policy_set(audit: &AuditLog, engine: &Engine, principal: &str) -> Result<bool> {
    let hash = engine.hash().to_string();
    let previous = audit.last_policy_hash();
    if previous.as_deref() == Some(hash.as_str()) {
        return Ok(false);
    }
    let p = engine.policies();
    let mut files: Vec<String> = p
        .files
        .values()
        .map(|f| f.strip_prefix(&p.dir).unwrap_or(f).display().to_string())
        .collect();
    files.sort();
    files.dedup();
    audit.append(Entry {
        kind: "policy_change".into(),
        principal: principal.to_string(),
        action: "load_policies".into(),
        resource: format!("PolicySet::{}", Value::String(p.dir.display().to_string())),
        decision: "recorded".into(),
        policies: p.set.policies().map(|x| x.id().to_string()).collect(),
        advice: Vec::new(),
        errors: Vec::new(),
        context: json!({"previous_hash": previous, "hash": hash, "files": files}),
        policy_hash: hash,
    })?;
    Ok(true)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1} %", x * 100.0))
}

fn num(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}{unit}"))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The measured values a determining policy read, as `metric = value`.
fn values_read(r: &GateReport, policy: &str) -> Vec<String> {
    r.mattered
        .iter()
        .filter(|m| m.policy == policy)
        .map(|m| format!("{} = {}", m.metric, value_text(&m.value)))
        .collect()
}

fn policy_path(r: &GateReport, file: &str) -> String {
    let dir = r.policy_dir.trim_end_matches('/');
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

fn location(r: &GateReport, id: &str) -> Option<(String, usize)> {
    r.policies
        .iter()
        .find(|p| p.id == id)
        .map(|p| (policy_path(r, &p.file), p.line))
}

fn headline(r: &GateReport) -> String {
    let c = &r.change;
    format!(
        "{} {} `{}` -> `{}` in workflow `{}`{}",
        if r.allowed() { "ALLOW" } else { "DENY" },
        c.change.name(),
        c.current,
        c.candidate,
        c.workflow,
        c.step
            .as_deref()
            .map(|s| format!(" (step `{s}`)"))
            .unwrap_or_default()
    )
}

/// Plain text for people.
pub fn render_text(r: &GateReport) -> String {
    let mut out = String::new();
    let c = &r.change;
    let _ = writeln!(out, "custos gate: {}", headline(r));
    let _ = writeln!(
        out,
        "requested by {}; canary window {} .. {}; policy set {}",
        c.requested_by,
        r.window_from
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        r.window_to
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        r.decision.policy_hash.get(..12).unwrap_or_default()
    );
    let (a, b) = (&r.measurement.candidate, &r.measurement.current);
    let rows: Vec<Vec<String>> = vec![
        vec![
            "decisions".into(),
            a.decisions.to_string(),
            b.decisions.to_string(),
        ],
        vec![
            "human-reviewed".into(),
            a.reviewed.to_string(),
            b.reviewed.to_string(),
        ],
        vec![
            "override rate".into(),
            pct(a.override_rate),
            pct(b.override_rate),
        ],
        vec![
            "finished runs".into(),
            a.finished_runs.to_string(),
            b.finished_runs.to_string(),
        ],
        vec!["error rate".into(), pct(a.error_rate), pct(b.error_rate)],
        vec![
            "p99 run latency".into(),
            num(a.p99_ms, " ms", 0),
            num(b.p99_ms, " ms", 0),
        ],
        vec![
            "cost per success".into(),
            num(a.cost_per_success_usd, " USD", 4),
            num(b.cost_per_success_usd, " USD", 4),
        ],
        vec![
            "confidence PSI".into(),
            num(r.measurement.confidence_psi, "", 4),
            "(baseline)".into(),
        ],
    ];
    out.push('\n');
    out.push_str(&custos_analytics::metrics::text_table(
        &[
            "measured",
            &format!("candidate `{}`", c.candidate),
            &format!("current `{}`", c.current),
        ],
        &rows,
    ));
    out.push('\n');
    if r.allowed() {
        let _ = writeln!(out, "allowed by:");
    } else if !r.decision.determining_policies.is_empty() {
        let _ = writeln!(out, "denied by:");
    } else {
        let _ = writeln!(out, "denied:");
    }
    for d in &r.decision.determining_policies {
        let loc = location(r, &d.id)
            .map(|(f, l)| format!(" ({f}:{l})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} {}{loc}", d.effect, d.id);
        for v in values_read(r, &d.id) {
            let _ = writeln!(out, "    {v}");
        }
        if let Some(a) = &d.advice {
            let _ = writeln!(out, "    advice: {a}");
        }
    }
    for e in &r.decision.errors {
        let _ = writeln!(out, "  error: {}", e.message);
    }
    if r.decision.determining_policies.is_empty() {
        for a in &r.decision.advice {
            let _ = writeln!(out, "  advice: {a}");
        }
    }
    if let Some(a) = &r.audit {
        let _ = writeln!(out, "\naudit record {} ({})", a.seq, a.hash);
    }
    out
}

/// The report as JSON.
pub fn render_json(r: &GateReport) -> Result<String> {
    serde_json::to_string_pretty(r)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| Error::Gate(format!("cannot render JSON: {e}")))
}

/// GitHub Actions workflow commands: an `::error` per denying policy (annotating its line), a
/// `::notice` for an allow.
pub fn render_github(r: &GateReport) -> String {
    // Workflow command values escape %, CR and LF; properties also `:` and `,`.
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    let title = headline(r);
    if r.allowed() {
        let _ = writeln!(
            out,
            "::notice title={}::{}",
            prop(&format!("custos gate: {title}")),
            data(&format!(
                "allowed by {}",
                r.decision.policy_ids().join(", ")
            ))
        );
    } else {
        for d in &r.decision.determining_policies {
            let values = values_read(r, &d.id);
            let msg = format!(
                "{title}: {}{}",
                d.advice.as_deref().unwrap_or("denied"),
                if values.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", values.join(", "))
                }
            );
            match location(r, &d.id) {
                Some((file, line)) => {
                    let _ = writeln!(
                        out,
                        "::error file={},line={line},title={}::{}",
                        prop(&file),
                        prop(&d.id),
                        data(&msg)
                    );
                }
                None => {
                    let _ = writeln!(out, "::error title={}::{}", prop(&d.id), data(&msg));
                }
            }
        }
        for e in &r.decision.errors {
            let _ = writeln!(
                out,
                "::error title={}::{}",
                prop("custos gate"),
                data(&format!("{title}: {}", e.message))
            );
        }
        if r.decision.determining_policies.is_empty() && r.decision.errors.is_empty() {
            let _ = writeln!(
                out,
                "::error title={}::{}",
                prop("custos gate"),
                data(&format!("{title}: {}", r.decision.advice.join("; ")))
            );
        }
    }
    out
}

/// JUnit XML: one test case per `deploy` policy (a failure for each that denied) and one for the
/// measurement (a failure when a metric is missing).
pub fn render_junit(r: &GateReport) -> String {
    let denying: Vec<&str> = if r.allowed() {
        Vec::new()
    } else {
        r.decision
            .determining_policies
            .iter()
            .map(|d| d.id.as_str())
            .collect()
    };
    let measurement_errors: Vec<&DecisionError> = r
        .decision
        .errors
        .iter()
        .filter(|e| e.kind != ErrorKind::Request)
        .collect();
    let default_deny = !r.allowed() && denying.is_empty() && measurement_errors.is_empty();
    let cases = r.policies.len() + 1 + usize::from(default_deny);
    let failures =
        denying.len() + usize::from(!measurement_errors.is_empty()) + usize::from(default_deny);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let name = format!("custos gate: {}", headline(r));
    let _ = writeln!(
        out,
        "<testsuites name=\"custos gate\" tests=\"{cases}\" failures=\"{failures}\" errors=\"0\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{cases}\" failures=\"{failures}\" errors=\"0\">",
        xml_escape(&name)
    );
    let _ = write!(
        out,
        "    <testcase name=\"canary metrics measured\" classname=\"custos.gate\""
    );
    if measurement_errors.is_empty() {
        out.push_str("/>\n");
    } else {
        let text: Vec<&str> = measurement_errors
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        let _ = writeln!(
            out,
            ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
            xml_escape(text.first().copied().unwrap_or_default()),
            xml_escape(&text.join("\n"))
        );
    }
    for p in &r.policies {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
            xml_escape(&p.id),
            xml_escape(&format!("policy.{}", p.effect)),
            xml_escape(&policy_path(r, &p.file)),
            p.line
        );
        if denying.contains(&p.id.as_str()) {
            let values = values_read(r, &p.id);
            let advice = p.advice.as_deref().unwrap_or("denied");
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                xml_escape(advice),
                xml_escape(&values.join("\n"))
            );
        } else {
            out.push_str("/>\n");
        }
    }
    if default_deny {
        let _ = writeln!(
            out,
            "    <testcase name=\"a policy permits the change\" classname=\"custos.gate\">\n      <failure message=\"{}\"/>\n    </testcase>",
            xml_escape(&r.decision.advice.join("; "))
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// SARIF 2.1.0: the `deploy` policies as rules, one result per denying policy, located at the
/// policy, plus one per missing metric or error.
pub fn render_sarif(r: &GateReport) -> Result<String> {
    let rules: Vec<Value> = r
        .policies
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "shortDescription": {"text": p.advice.clone().unwrap_or_else(|| p.id.clone())},
                "properties": {"effect": p.effect},
            })
        })
        .collect();
    let mut results = Vec::new();
    let title = headline(r);
    if !r.allowed() {
        for d in &r.decision.determining_policies {
            let values = values_read(r, &d.id);
            let mut result = json!({
                "ruleId": d.id,
                "level": "error",
                "message": {"text": format!("{title}: {} ({})", d.advice.as_deref().unwrap_or("denied"), values.join(", "))},
            });
            if let Some((file, line)) = location(r, &d.id) {
                result["locations"] = json!([{"physicalLocation": {
                    "artifactLocation": {"uri": file},
                    "region": {"startLine": line},
                }}]);
            }
            results.push(result);
        }
        for e in &r.decision.errors {
            results.push(json!({
                "ruleId": "custos-gate",
                "level": "error",
                "message": {"text": format!("{title}: {}", e.message)},
            }));
        }
        if r.decision.determining_policies.is_empty() && r.decision.errors.is_empty() {
            results.push(json!({
                "ruleId": "custos-gate",
                "level": "error",
                "message": {"text": format!("{title}: {}", r.decision.advice.join("; "))},
            }));
        }
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "custos-gate",
                "informationUri": "https://example.invalid/custos",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
            "properties": {
                "decision": r.decision.decision,
                "policyHash": r.decision.policy_hash,
                "change": r.change,
            },
        }],
    });
    serde_json::to_string_pretty(&doc)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| Error::Gate(format!("cannot render SARIF: {e}")))
}

/// Output formats of `custos gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFormat {
    /// For people.
    Text,
    /// The whole report.
    Json,
    /// GitHub Actions annotations.
    Github,
    /// JUnit XML.
    Junit,
    /// SARIF 2.1.0.
    Sarif,
}

impl GateFormat {
    /// Parses a format name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "text" => Self::Text,
            "json" => Self::Json,
            "github" => Self::Github,
            "junit" => Self::Junit,
            "sarif" => Self::Sarif,
            other => {
                return Err(Error::Gate(format!(
                    "unknown format `{other}`; use text, json, github, junit or sarif"
                )));
            }
        })
    }
}

/// Renders a report in `format`.
pub fn render(r: &GateReport, format: GateFormat) -> Result<String> {
    Ok(match format {
        GateFormat::Text => render_text(r),
        GateFormat::Json => render_json(r)?,
        GateFormat::Github => render_github(r),
        GateFormat::Junit => render_junit(r),
        GateFormat::Sarif => render_sarif(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_files_are_checked() {
        let ok = "change: prompt\nworkflow: w\ncurrent: v1\ncandidate: v2\nrequested_by: 'Custos::Service::\"ci\"'\ncanary: {last: 24h}\n";
        assert!(ChangeFile::parse(ok, "c.yaml").is_ok());
        let e = ChangeFile::parse(&ok.replace("v2", "v1"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("both `v1`"), "{e}");
        let e = ChangeFile::parse(&ok.replace("{last: 24h}", "{}"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("needs `last`"), "{e}");
        let e = ChangeFile::parse(&ok.replace("prompt", "dataset"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("c.yaml"), "{e}");
        let e = ChangeFile::parse(&ok.replace("24h", "a while"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("canary.last"), "{e}");
        let e = ChangeFile::parse(&format!("{ok}colour: red\n"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn policies_name_the_metrics_they_read() {
        let t = "forbid (principal, action, resource) when { context.metrics.a_b.greaterThan(decimal(\"1\")) || context.metrics.c < 3 || context.metrics.a_b == 1 };";
        assert_eq!(metrics_read(t), vec!["a_b".to_string(), "c".to_string()]);
    }

    #[test]
    fn missing_metrics_are_listed() {
        let m = CanaryMeasurement::default();
        let missing = metrics_context(&m).unwrap_err();
        assert!(
            missing.iter().any(|m| m.contains("no canary traffic")),
            "{missing:?}"
        );
        assert!(
            missing.iter().any(|m| m.contains("confidence drift")),
            "{missing:?}"
        );
    }
}
