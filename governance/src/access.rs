//! Access to custos: may an authenticated caller do an operation, decided by the same engine and
//! policies as every other decision (`rules/policy/access.cedar` ships the roles).
//!
//! An operation is a Cedar action on a resource with an empty context: `query` on
//! `Custos::Api::"custos"`, `start_run` on a `Workflow`, `read_review` on a `ReviewTask`, ...
//! (the actions are declared and explained in `schema.cedarschema`). Every denial is appended to
//! the audit log (kind `access`) before the caller hears of it, and so is every allowed write;
//! allowed reads are only counted by the caller (a chained record per SQL query would make the
//! trail a query log).

use custos_audit::{AuditLog, Entry, Record};
use custos_policy::engine::{AuthzRequest, Decision, Engine};
use serde_json::{Value, json};

use crate::Result;

/// The resource of operations on the whole data directory.
pub const API: &str = "Custos::Api::\"custos\"";

/// One operation a caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The action's name in the custos namespace (`query`).
    pub action: &'static str,
    /// The resource, in Cedar syntax.
    pub resource: String,
    /// Entities the store does not have that the resource needs (a review task).
    pub entities: Vec<Value>,
    /// What the caller did, for the record (`POST /api/sql`).
    pub route: String,
    /// Whether the operation changes something: an allowed write is recorded too.
    pub write: bool,
}

impl Operation {
    /// A read of the whole data directory (`Custos::Api::"custos"`).
    pub fn read(action: &'static str, route: impl Into<String>) -> Self {
        Self {
            action,
            resource: API.to_string(),
            entities: Vec::new(),
            route: route.into(),
            write: false,
        }
    }

    /// The same operation on `resource`.
    pub fn on(mut self, resource: impl Into<String>) -> Self {
        self.resource = resource.into();
        self
    }

    /// The same operation as a write (recorded when allowed).
    pub fn writing(mut self) -> Self {
        self.write = true;
        self
    }

    /// The same operation with the entities its resource needs.
    pub fn with_entities(mut self, entities: Vec<Value>) -> Self {
        self.entities = entities;
        self
    }

    /// The action in Cedar syntax.
    pub fn action_uid(&self) -> String {
        format!(
            "{}::Action::{}",
            custos_policy::engine::NAMESPACE,
            json!(self.action)
        )
    }
}

/// A workflow as a Cedar reference.
pub fn workflow(id: &str) -> String {
    format!("Custos::Workflow::{}", json!(id))
}

/// The decision on `principal` doing `op`, without recording it.
pub fn decide(engine: &Engine, principal: &str, op: &Operation) -> Decision {
    engine.authorize(&AuthzRequest {
        principal: Value::String(principal.to_string()),
        action: Value::String(op.action_uid()),
        resource: Value::String(op.resource.clone()),
        context: json!({}),
        entities: op.entities.clone(),
    })
}

/// Decides `op` for `principal` (who presented token `token_id`) and records a denial, or an
/// allowed write, before returning. The record is the decision's (`None` for an allowed read).
pub fn check(
    engine: &Engine,
    audit: &AuditLog,
    principal: &str,
    token_id: &str,
    op: &Operation,
) -> Result<(Decision, Option<Record>)> {
    let d = decide(engine, principal, op);
    if d.allowed() && !op.write {
        return Ok((d, None));
    }
    let record = record(audit, principal, token_id, op, &d)?;
    Ok((d, Some(record)))
}

/// Appends `d` about `principal` doing `op` to the audit log (kind `access`).
pub fn record(
    audit: &AuditLog,
    principal: &str,
    token_id: &str,
    op: &Operation,
    d: &Decision,
) -> Result<Record> {
    Ok(audit.append(Entry {
        kind: "access".into(),
        principal: principal.to_string(),
        action: op.action_uid(),
        resource: op.resource.clone(),
        decision: d.decision.clone(),
        policies: d.policy_ids(),
        advice: d.advice.clone(),
        errors: d.errors.iter().map(|e| e.message.clone()).collect(),
        context: json!({"route": op.route, "token": token_id}),
        policy_hash: d.policy_hash.clone(),
    })?)
}

/// What a denial says to the caller: the action, the resource and the deciding policies.
pub fn denial_message(principal: &str, op: &Operation, d: &Decision) -> String {
    let why = if d.determining_policies.is_empty() {
        "no policy permits it".to_string()
    } else {
        let ids: Vec<String> = d.policy_ids().iter().map(|i| format!("`{i}`")).collect();
        format!("denied by {}", ids.join(", "))
    };
    let errors: Vec<&str> = d.errors.iter().map(|e| e.message.as_str()).collect();
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    };
    format!(
        "`{principal}` may not `{}` on `{}`: {why}{errors}; the roles are teams in entities.json (docs/governance.md, \"Who may do what\")",
        op.action, op.resource
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy");
        Engine::load(&dir).unwrap()
    }

    #[test]
    fn reads_are_decided_and_only_denials_and_writes_recorded() {
        let engine = engine();
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let sam = "Custos::User::\"sam\"";
        let (d, r) = check(
            &engine,
            &audit,
            sam,
            "t1",
            &Operation::read("query", "POST /api/sql"),
        )
        .unwrap();
        assert!(d.allowed(), "{d:?}");
        assert!(r.is_none());
        let op = Operation::read("read_audit", "GET /api/audit/verify");
        let (d, r) = check(&engine, &audit, sam, "t1", &op).unwrap();
        assert!(!d.allowed());
        let r = r.unwrap();
        assert_eq!(
            (r.kind.as_str(), r.principal.as_str(), r.decision.as_str()),
            ("access", sam, "deny")
        );
        assert_eq!(r.action, "Custos::Action::\"read_audit\"");
        assert_eq!(r.context["route"], "GET /api/audit/verify");
        let msg = denial_message(sam, &op, &d);
        assert!(
            msg.contains("may not `read_audit`") && msg.contains("no policy permits"),
            "{msg}"
        );
        let omar = "Custos::User::\"omar\"";
        let run = Operation::read("start_run", "POST /api/runs")
            .on(workflow("invoice-posting"))
            .writing();
        let (d, r) = check(&engine, &audit, omar, "t2", &run).unwrap();
        assert!(d.allowed(), "{d:?}");
        assert_eq!(r.unwrap().decision, "allow");
        assert_eq!(custos_audit::read_all(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_forbid_is_named_in_the_denial() {
        let engine = engine();
        let admin = "Custos::User::\"admin\"";
        let op = Operation::read("authorize", "POST /api/authorize");
        let d = decide(&engine, admin, &op);
        assert!(!d.allowed());
        let msg = denial_message(admin, &op, &d);
        assert!(msg.contains("`authorize-only-services`"), "{msg}");
    }
}
