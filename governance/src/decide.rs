//! Decide-and-record: every authorization the executor or the server's `/api/authorize` asks for
//! is decided by the policy engine and appended to the audit trail before the answer is used.
//! Without policies every request is denied (fail closed).

use custos_audit::{AuditLog, Record};
use custos_policy::engine::{AuthzRequest, Decision, Engine};

use crate::Result;

/// Decides `req` and records the decision; the record is durable before this returns.
///
/// `approve_review` requests are recorded with kind `review` (a person's review decision being
/// checked, so oversight queries find it), every other request with kind `authorize`.
pub fn authorize_and_record(
    engine: &Engine,
    audit: &AuditLog,
    req: &AuthzRequest,
) -> Result<(Decision, Record)> {
    let d = engine.authorize(req);
    let record = record(audit, req, &d)?;
    Ok((d, record))
}

/// A deny for when no policies are loaded, recorded like any decision.
pub fn deny_without_policies(audit: &AuditLog, req: &AuthzRequest) -> Result<(Decision, Record)> {
    let message = "no policies are loaded (set `[rules] policies` or create rules/policy); every request is denied";
    let d = Decision {
        decision: "deny".into(),
        determining_policies: Vec::new(),
        advice: vec![message.into()],
        errors: vec![custos_policy::engine::DecisionError {
            kind: custos_policy::engine::ErrorKind::Evaluation,
            policy: None,
            message: message.into(),
        }],
        policy_hash: String::new(),
    };
    let record = record(audit, req, &d)?;
    Ok((d, record))
}

fn record(audit: &AuditLog, req: &AuthzRequest, d: &Decision) -> Result<Record> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let action = text(&req.action);
    let kind = if action == "approve_review" || action.ends_with("Action::\"approve_review\"") {
        "review"
    } else {
        "authorize"
    };
    Ok(audit.append(custos_audit::Entry {
        kind: kind.into(),
        principal: text(&req.principal),
        action,
        resource: text(&req.resource),
        decision: d.decision.clone(),
        policies: d.policy_ids(),
        advice: d.advice.clone(),
        errors: d.errors.iter().map(|e| e.message.clone()).collect(),
        context: req.context.clone(),
        policy_hash: d.policy_hash.clone(),
    })?)
}
