//! Authorization over a loaded policy set: the library call behind `POST /api/authorize`, the deploy
//! gate and the executor's `execute` checks.
//!
//! The engine fails closed. A request that cannot be evaluated (an unknown entity type, a context
//! that does not match the schema, malformed entities) is a deny with a `request` error; a policy
//! whose evaluation errors makes the whole decision a deny with an `evaluation` error, even when
//! Cedar would allow (Cedar skips an erroring policy, so an erroring `forbid` would otherwise let
//! the request through).

use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicyId, Request,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::ContextTypes;
use crate::{Error, Policies, Result};

/// Namespace of the shipped schema; action names without one are taken from it.
pub const NAMESPACE: &str = "Custos";

/// An authorization request as callers send it (JSON body of `POST /api/authorize`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzRequest {
    /// Who asks: `Custos::User::"ana"` or `{"type": "Custos::User", "id": "ana"}`.
    pub principal: Value,
    /// What: `Custos::Action::"execute"`, or just `execute`.
    pub action: Value,
    /// On what: an entity reference like the principal.
    pub resource: Value,
    /// The request's context, a JSON object checked against the action's context type.
    #[serde(default = "empty_object")]
    pub context: Value,
    /// Entities known only to this request (Cedar entity JSON), added to the configured store;
    /// they replace stored entities with the same id.
    #[serde(default)]
    pub entities: Vec<Value>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// What kind of problem an error is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be evaluated as sent: the caller must fix it.
    Request,
    /// A policy failed to evaluate on this request.
    Evaluation,
    /// A value the policies need could not be measured (the deploy gate).
    Measurement,
}

/// One problem met while deciding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionError {
    /// Request or evaluation.
    pub kind: ErrorKind,
    /// The policy that failed, for evaluation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// A policy that determined a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Determining {
    /// The policy's `@id`.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Its `@advice`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// The file it is written in, relative to the policy directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line of its `@id` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The answer to an authorization request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decision {
    /// `allow` or `deny`.
    pub decision: String,
    /// The policies that determined the decision: the satisfied `forbid`s of a deny, the satisfied
    /// `permit`s of an allow; empty for a default deny or a deny caused by errors.
    pub determining_policies: Vec<Determining>,
    /// What to do now: the determining policies' advice, or why nothing applies.
    pub advice: Vec<String>,
    /// Problems met; any problem makes the decision a deny.
    pub errors: Vec<DecisionError>,
    /// Hash of the policy set that decided.
    pub policy_hash: String,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.decision == "allow"
    }

    /// Whether the request itself was faulty (an HTTP 400, not a policy outcome).
    pub fn request_error(&self) -> bool {
        self.errors.iter().any(|e| e.kind == ErrorKind::Request)
    }

    /// The determining policies' ids.
    pub fn policy_ids(&self) -> Vec<String> {
        self.determining_policies
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }
}

/// A policy set with its entity store, ready to decide.
#[derive(Debug, Clone)]
pub struct Engine {
    policies: Arc<Policies>,
    entities: Entities,
    authorizer: Arc<Authorizer>,
    types: Arc<ContextTypes>,
}

/// An entity reference from a string in Cedar syntax or a `{"type", "id"}` object.
fn entity_ref(what: &str, v: &Value) -> std::result::Result<EntityUid, String> {
    match v {
        Value::String(s) => EntityUid::from_str(s).map_err(|e| {
            format!("{what} `{s}` is not an entity reference like `Custos::User::\"ana\"`: {e}")
        }),
        Value::Object(_) => EntityUid::from_json(v.clone()).map_err(|e| {
            format!("{what} `{v}` is not an entity reference like {{\"type\": \"Custos::User\", \"id\": \"ana\"}}: {e}")
        }),
        other => Err(format!(
            "{what} must be an entity reference (string or object), not `{other}`"
        )),
    }
}

/// The action: full references, or a bare action name in the custos namespace.
fn action_ref(v: &Value) -> std::result::Result<EntityUid, String> {
    match v {
        Value::String(s) if !s.contains("::") => {
            let full = format!("{NAMESPACE}::Action::{}", Value::String(s.clone()));
            entity_ref("action", &Value::String(full))
        }
        _ => entity_ref("action", v),
    }
}

impl Engine {
    /// An engine over `policies` with the entity store `entities` (Cedar entity JSON, checked
    /// against the schema).
    pub fn new(policies: Policies, entities: Option<Value>) -> Result<Self> {
        let entities = match entities {
            None => Entities::empty(),
            Some(json) => Entities::from_json_value(json, Some(&policies.schema))
                .map_err(|e| Error::Entities(e.to_string()))?,
        };
        let types = ContextTypes::from_schema_text(&policies.schema_source);
        Ok(Self {
            policies: Arc::new(policies),
            entities,
            authorizer: Arc::new(Authorizer::new()),
            types: Arc::new(types),
        })
    }

    /// An engine over the policy directory `dir`, with its `entities.json` when there is one.
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let policies = crate::load(dir)?;
        let path = dir.join("entities.json");
        let entities = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|cause| Error::Read {
                path: path.clone(),
                cause,
            })?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::Entities(format!("`{}` is not JSON: {e}", path.display())))?;
            Some(v)
        } else {
            None
        };
        Self::new(policies, entities).map_err(|e| match e {
            Error::Entities(m) => Error::Entities(format!("in `{}`: {m}", path.display())),
            other => other,
        })
    }

    /// The policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The context attributes of `action` (`Custos::Action::"execute"`) the schema marks
    /// `@sensitive`: an audit record stores their values as pseudonyms.
    /// `action` may be spelled any way a request may name it (`execute`,
    /// `Custos::Action::"execute"`, or its JSON object form).
    pub fn sensitive(&self, action: &str) -> &[crate::Sensitive] {
        let v = if action.trim_start().starts_with('{') {
            serde_json::from_str(action).unwrap_or_else(|_| Value::String(action.to_string()))
        } else {
            Value::String(action.to_string())
        };
        match action_ref(&v) {
            Ok(uid) => self.types.sensitive(&uid.to_string()),
            Err(_) => &[],
        }
    }

    /// The policy set's hash.
    pub fn hash(&self) -> &str {
        &self.policies.hash
    }

    /// A deny for `errors`, without evaluating anything (fail closed).
    pub fn deny(&self, errors: Vec<DecisionError>) -> Decision {
        let advice = if errors.iter().any(|e| e.kind == ErrorKind::Request) {
            "fix the request: it does not match the policy schema".to_string()
        } else if errors.iter().any(|e| e.kind == ErrorKind::Measurement) {
            "collect enough canary traffic for every metric, then run the gate again".to_string()
        } else {
            "fix the failing policy or the data it reads; until then the request is denied"
                .to_string()
        };
        Decision {
            decision: "deny".into(),
            determining_policies: Vec::new(),
            advice: vec![advice],
            errors,
            policy_hash: self.policies.hash.clone(),
        }
    }

    fn request_error(&self, message: String) -> Decision {
        self.deny(vec![DecisionError {
            kind: ErrorKind::Request,
            policy: None,
            message,
        }])
    }

    /// Builds and checks `req` against the schema: the Cedar request, and the entities it sees
    /// when the request brings its own. A faulty request is the deny to return.
    pub fn build(
        &self,
        req: &AuthzRequest,
    ) -> std::result::Result<(Request, Option<Entities>), Box<Decision>> {
        let schema = &self.policies.schema;
        let fail = |m: String| Box::new(self.request_error(m));
        let principal = entity_ref("principal", &req.principal).map_err(fail)?;
        let action = action_ref(&req.action).map_err(fail)?;
        let resource = entity_ref("resource", &req.resource).map_err(fail)?;
        // The typed fast path, or Cedar's parser (which also words the errors).
        let context = match self.types.build(&action, &req.context) {
            Some(c) => c,
            None => Context::from_json_value(req.context.clone(), Some((schema, &action)))
                .map_err(|e| fail(format!("context: {e}{}", help(&e))))?,
        };
        let request = Request::new(principal, action, resource, context, Some(schema))
            .map_err(|e| fail(format!("{e}{}", help(&e))))?;
        if req.entities.is_empty() {
            return Ok((request, None));
        }
        let parsed = Entities::from_json_value(Value::Array(req.entities.clone()), Some(schema))
            .map_err(|e| fail(format!("entities: {e}{}", help(&e))))?;
        self.no_shadowing(&parsed).map_err(fail)?;
        let merged = self
            .entities
            .clone()
            .upsert_entities(parsed.iter().cloned(), Some(schema))
            .map_err(|e| fail(format!("entities: {e}{}", help(&e))))?;
        Ok((request, Some(merged)))
    }

    /// Decides `req`. Never fails: every problem is a deny with its errors.
    pub fn authorize(&self, req: &AuthzRequest) -> Decision {
        match self.build(req) {
            Ok((request, None)) => self.decide(&request, &self.entities),
            Ok((request, Some(entities))) => self.decide(&request, &entities),
            Err(deny) => *deny,
        }
    }

    /// Builds `req`'s context with Cedar's JSON parser only (no typed fast path): for tests that
    /// compare both paths.
    pub fn build_with_cedar_parser(
        &self,
        req: &AuthzRequest,
    ) -> std::result::Result<(Request, Option<Entities>), Box<Decision>> {
        let mut slow = self.clone();
        slow.types = Arc::new(ContextTypes::default());
        slow.build(req)
    }

    /// The configured entity store.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// A request's own entities may describe its resource and context, never change what the
    /// store says: an entity the store has may not be redefined or shadowed, and a new entity
    /// may not join a stored one (a caller would otherwise add itself to a team, or lower a
    /// workflow's threshold, and receive a recorded `allow`).
    fn no_shadowing(&self, request: &Entities) -> std::result::Result<(), String> {
        for e in request.iter() {
            let uid = e.uid();
            // Parsing with the schema adds the schema's actions to every entity set.
            if uid.type_name().basename() == "Action" {
                continue;
            }
            if self.entities.get(&uid).is_some() {
                return Err(format!(
                    "entities: `{uid}` is an entity of the store (entities.json); a request may describe only entities the store does not have, so it cannot redefine, re-parent or shadow `{uid}`"
                ));
            }
            if let Some(mut ancestors) = request.ancestors(&uid)
                && let Some(parent) = ancestors.find(|a| self.entities.get(a).is_some())
            {
                return Err(format!(
                    "entities: `{uid}` may not be made a member of `{parent}`: memberships of stored entities come from the store (entities.json) only"
                ));
            }
        }
        Ok(())
    }

    /// Whether `uid` (Cedar syntax, `Custos::User::"ana"`) is an entity of the store; an error
    /// when it is not an entity reference.
    pub fn has_entity(&self, uid: &str) -> std::result::Result<bool, String> {
        let uid = entity_ref("principal", &Value::String(uid.to_string()))?;
        Ok(self.entities.get(&uid).is_some())
    }

    /// The sources whose spans count for `workflow` (its `trusted_sources` in the store, each in
    /// Cedar syntax like the `spans.source` column); `None` when the workflow names none, or is
    /// not in the store: then every source counts.
    pub fn trusted_sources(&self, workflow: &str) -> Option<Vec<String>> {
        let uid = EntityUid::from_type_name_and_id(
            cedar_policy::EntityTypeName::from_str("Custos::Workflow").ok()?,
            cedar_policy::EntityId::new(workflow),
        );
        let entity = self.entities.get(&uid)?;
        let Ok(cedar_policy::EvalResult::Set(set)) = entity.attr("trusted_sources")? else {
            return None;
        };
        let mut out: Vec<String> = set
            .iter()
            .filter_map(|v| match v {
                cedar_policy::EvalResult::EntityUid(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        out.sort();
        Some(out)
    }

    /// Whether `member` is in `group` (directly or through teams) in the store.
    pub fn is_in(&self, member: &str, group: &str) -> bool {
        let (Ok(m), Ok(g)) = (EntityUid::from_str(member), EntityUid::from_str(group)) else {
            return false;
        };
        self.entities.is_ancestor_of(&g, &m)
    }

    /// Decides a request already built against the schema.
    pub fn decide(&self, request: &Request, entities: &Entities) -> Decision {
        let response = self
            .authorizer
            .is_authorized(request, &self.policies.set, entities);
        let errors: Vec<DecisionError> = response
            .diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                DecisionError {
                    kind: ErrorKind::Evaluation,
                    policy: Some(pe.policy_id().to_string()),
                    message: e.to_string(),
                }
            })
            .collect();
        if !errors.is_empty() {
            return self.deny(errors);
        }
        let allowed = response.decision() == CedarDecision::Allow;
        let mut determining: Vec<Determining> = response
            .diagnostics()
            .reason()
            .map(|id| self.determining(id))
            .collect();
        determining.sort_by(|a, b| a.id.cmp(&b.id));
        let mut advice: Vec<String> = determining
            .iter()
            .filter_map(|d| d.advice.clone())
            .collect();
        if determining.is_empty() && !allowed {
            advice.push("no policy permits this request; it is denied by default".into());
        }
        Decision {
            decision: if allowed { "allow" } else { "deny" }.into(),
            determining_policies: determining,
            advice,
            errors,
            policy_hash: self.policies.hash.clone(),
        }
    }

    fn determining(&self, id: &PolicyId) -> Determining {
        let policy = self.policies.set.policy(id);
        let location = self.policies.locations.get(id.to_string().as_str());
        Determining {
            id: id.to_string(),
            effect: policy
                .map(|p| p.effect().to_string())
                .unwrap_or_else(|| "unknown".into()),
            advice: policy.and_then(|p| p.annotation("advice").map(str::to_string)),
            file: location.map(|(f, _, _)| {
                f.strip_prefix(&self.policies.dir)
                    .unwrap_or(f)
                    .display()
                    .to_string()
            }),
            line: location.map(|(_, l, _)| *l),
        }
    }
}

/// A diagnostic's help text, as ` (help: ...)`, when it has one.
fn help(d: &dyn miette::Diagnostic) -> String {
    d.help()
        .map(|h| format!(" (help: {h})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_action_names_are_in_the_custos_namespace() {
        let a = action_ref(&Value::String("deploy".into())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.to_string(), "Custos::Action::\"deploy\"");
        let e = entity_ref("principal", &Value::from(3)).unwrap_err();
        assert!(e.contains("must be an entity reference"), "{e}");
    }
}
