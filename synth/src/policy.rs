//! The policy benchmark's request mix (`custos bench policy`, `cargo bench -p custos-policy`):
//! four `execute` requests of the executor (confident, unconfident, a large amount, approved by a
//! human) and two `deploy` requests of CI (a canary within and one beyond the override-rate bound).
//!
//! Requests are the JSON fields of `POST /api/authorize`; this crate does not depend on the policy
//! engine, so callers build their `AuthzRequest` from the fields.

use serde_json::{Value, json};

/// One authorization request, field by field as `POST /api/authorize` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRequest {
    /// Who asks.
    pub principal: Value,
    /// What.
    pub action: Value,
    /// On what.
    pub resource: Value,
    /// The request's context.
    pub context: Value,
    /// Entities known only to this request.
    pub entities: Vec<Value>,
}

/// The request mix.
pub fn requests() -> Vec<PolicyRequest> {
    let wf = json!({"__entity": {"type": "Custos::Workflow", "id": "invoice-posting"}});
    let exec = |conf: &str, amount: &str, human: bool| PolicyRequest {
        principal: Value::String("Custos::Service::\"executor\"".into()),
        action: Value::String("execute".into()),
        resource: Value::String("Custos::Connector::\"erp\"".into()),
        context: json!({"workflow": wf, "confidence": conf, "amount_usd": amount, "human_approved": human}),
        entities: vec![],
    };
    let deploy = |delta_upper: &str| PolicyRequest {
        principal: Value::String("Custos::Service::\"ci\"".into()),
        action: Value::String("deploy".into()),
        resource: Value::String("Custos::Workflow::\"invoice-posting\"".into()),
        context: json!({"change": "prompt", "current_version": "v1", "candidate_version": "v2",
            "metrics": {"sample_size": 800, "baseline_sample_size": 1500, "override_rate": "0.17",
                "override_rate_delta": "0.01", "override_rate_delta_upper": delta_upper,
                "error_rate": "0.04", "error_rate_delta": "0.0", "p99_latency_ms": 600000,
                "p99_latency_ratio": "1.01", "cost_per_success_usd": "0.02",
                "cost_per_success_ratio": "0.98", "confidence_psi": "0.01"}}),
        entities: vec![],
    };
    vec![
        exec("0.97", "120.00", false),
        exec("0.50", "120.00", false),
        exec("0.99", "25000.00", false),
        exec("0.60", "900.00", true),
        deploy("0.03"),
        deploy("0.30"),
    ]
}
