//! The gate's output formats: plain text for people, the whole report as JSON, GitHub Actions
//! annotations, JUnit XML and SARIF 2.1.0 for CI systems.

use std::fmt::Write as _;

use custos_policy::engine::ErrorKind;
use custos_policy::junit;
use serde_json::{Value, json};

use super::GateReport;
use crate::{Error, Result};

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

/// The text table's rows: each measured value of the candidate and the current version.
fn measured_rows(r: &GateReport) -> Vec<Vec<String>> {
    let (a, b) = (&r.measurement.candidate, &r.measurement.current);
    vec![
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
    ]
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
    let rows = measured_rows(r);
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
    let measurement_errors: Vec<&str> = r
        .decision
        .errors
        .iter()
        .filter(|e| e.kind != ErrorKind::Request)
        .map(|e| e.message.as_str())
        .collect();
    let gate_case = |name: &str, failure: Option<junit::Failure>| junit::Case {
        name: name.into(),
        classname: "custos.gate".into(),
        failure,
        ..junit::Case::default()
    };
    let mut cases = vec![gate_case(
        "canary metrics measured",
        (!measurement_errors.is_empty()).then(|| junit::Failure {
            message: measurement_errors[0].to_string(),
            text: Some(measurement_errors.join("\n")),
        }),
    )];
    for p in &r.policies {
        let failure = denying.contains(&p.id.as_str()).then(|| junit::Failure {
            message: p.advice.as_deref().unwrap_or("denied").to_string(),
            text: Some(values_read(r, &p.id).join("\n")),
        });
        cases.push(junit::Case {
            name: p.id.clone(),
            classname: format!("policy.{}", p.effect),
            attributes: vec![
                ("file", policy_path(r, &p.file)),
                ("line", p.line.to_string()),
            ],
            failure,
            ..junit::Case::default()
        });
    }
    if !r.allowed() && denying.is_empty() && measurement_errors.is_empty() {
        cases.push(gate_case(
            "a policy permits the change",
            Some(junit::Failure {
                message: r.decision.advice.join("; "),
                text: None,
            }),
        ));
    }
    junit::render(&junit::Report {
        name: "custos gate".into(),
        timed: false,
        suites: vec![junit::Suite {
            name: format!("custos gate: {}", headline(r)),
            cases,
        }],
    })
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
