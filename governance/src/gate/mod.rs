//! The deploy gate: measure a candidate prompt or model version on its canary traffic, evaluate the
//! `deploy` policies on what was measured, record the decision in the audit log, and render the
//! result for people and CI systems (text, JSON, GitHub annotations, JUnit XML, SARIF).
//!
//! The gate fails closed: a metric that cannot be measured (no canary traffic, no reviewed
//! decisions, no finished or successful runs, no confidences) is a deny naming what is missing, and
//! a policy that errors is a deny (see [`custos_policy::engine`]).

mod change;
mod render;

use chrono::{DateTime, Utc};
use custos_analytics::Analytics;
use custos_analytics::canary::{CanaryMeasurement, CanaryQuery, VersionStats, measure};
use custos_audit::{AuditLog, Entry, Record};
use custos_policy::engine::{AuthzRequest, Decision, DecisionError, Engine, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use change::{CanaryWindow, ChangeFile};
pub use render::{
    GateFormat, render, render_github, render_json, render_junit, render_sarif, render_text,
};

use crate::Result;

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

/// The `deploy` policies of the engine's set, sorted by file and line.
fn deploy_policies(engine: &Engine) -> Vec<PolicyRef> {
    engine
        .policies_for_action("deploy")
        .into_iter()
        .map(|p| PolicyRef {
            id: p.id,
            effect: p.effect,
            advice: p.advice,
            file: p.file,
            line: p.line,
        })
        .collect()
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
            sources: engine.trusted_sources(&change.workflow),
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
        for metric in engine.metrics_read(&d.id) {
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
pub fn note_policy_set(
    audit: &AuditLog,
    engine: &Engine,
    principal: &str,
) -> Result<Option<Record>> {
    let hash = engine.hash().to_string();
    let previous = audit.last_policy_hash();
    if previous.as_deref() == Some(hash.as_str()) {
        return Ok(None);
    }
    let p = engine.policies();
    let mut files: Vec<String> = p
        .files
        .values()
        .map(|f| f.strip_prefix(&p.dir).unwrap_or(f).display().to_string())
        .collect();
    files.sort();
    files.dedup();
    let changed = crate::changes::changed_files(audit, "policy_change", &p.file_hashes)?;
    let record = audit.append(Entry {
        kind: "policy_change".into(),
        principal: principal.to_string(),
        action: "load_policies".into(),
        resource: format!("PolicySet::{}", Value::String(p.dir.display().to_string())),
        decision: "recorded".into(),
        policies: p.ids(),
        advice: Vec::new(),
        errors: Vec::new(),
        context: json!({
            "previous_hash": previous, "hash": hash, "files": files,
            "file_hashes": p.file_hashes, "changed": changed,
        }),
        policy_hash: hash,
    })?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

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
