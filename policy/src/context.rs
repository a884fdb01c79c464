//! Typed construction of request contexts from JSON, without Cedar's generic JSON parser.
//!
//! Cedar parses a JSON context by trying its value forms one after another, which costs tens of
//! microseconds per request (most of a decision). The action's context type is known from the
//! schema, so this module converts JSON straight into Cedar values for the shapes it knows (records,
//! booleans, longs, strings, decimals, entity references, sets). Anything else, or anything that
//! does not fit the type, returns `None` and the caller falls back to Cedar's parser, which also
//! produces the precise error message. The request is validated against the schema afterwards
//! either way, so this path cannot accept what Cedar would refuse.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use cedar_policy::{Context, EntityUid, RestrictedExpression, SchemaFragment};
use serde_json::Value;

/// A context type as far as the fast path understands it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Bool,
    Long,
    Str,
    Decimal,
    Entity,
    Set(Box<Ty>),
    /// Attributes with their type and whether they are required.
    Record(BTreeMap<String, (Ty, bool)>),
    /// A type the fast path leaves to Cedar.
    Other,
}

/// A context attribute the schema marks `@sensitive` (or `@sensitive("LABEL")`): its path from
/// the context's top and the pseudonym label (`SENSITIVE` when the annotation has no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensitive {
    /// Attribute names from the context record down (`["customer", "email"]`).
    pub path: Vec<String>,
    /// The label of its pseudonym (`[PERSON:<hex>]`).
    pub label: String,
}

/// Context types by action (`Namespace::Action::"name"`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextTypes {
    by_action: HashMap<String, Ty>,
    sensitive: HashMap<String, Vec<Sensitive>>,
}

/// The `@sensitive` attributes of a context type, with their paths, through records and the
/// common types they name.
fn sensitive_paths(
    t: &Value,
    common: &serde_json::Map<String, Value>,
    path: &mut Vec<String>,
    out: &mut Vec<Sensitive>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    let t = match t["type"].as_str() {
        Some("EntityOrCommon" | "CommonType") => {
            let name = t["name"].as_str().unwrap_or_default();
            match common.get(name.rsplit("::").next().unwrap_or(name)) {
                Some(def) => def,
                None => return,
            }
        }
        _ => t,
    };
    let Some(attrs) = t["attributes"].as_object() else {
        return;
    };
    for (name, attr) in attrs {
        path.push(name.clone());
        if let Some(label) = attr["annotations"]["sensitive"].as_str() {
            let label = label.trim().to_ascii_uppercase();
            out.push(Sensitive {
                path: path.clone(),
                label: if label.is_empty() {
                    "SENSITIVE".into()
                } else {
                    label
                },
            });
        } else {
            sensitive_paths(attr, common, path, out, depth + 1);
        }
        path.pop();
    }
}

fn resolve(
    t: &Value,
    namespace: &str,
    common: &serde_json::Map<String, Value>,
    entities: &serde_json::Map<String, Value>,
    depth: usize,
) -> Ty {
    if depth > 16 {
        return Ty::Other;
    }
    let name = t["name"].as_str().unwrap_or_default();
    let short = name.rsplit("::").next().unwrap_or(name);
    let same_namespace =
        !name.contains("::") || name.strip_suffix(short) == Some(&format!("{namespace}::"));
    match t["type"].as_str().unwrap_or_default() {
        "Boolean" => Ty::Bool,
        "Long" => Ty::Long,
        "String" => Ty::Str,
        "Entity" => Ty::Entity,
        "Extension" if name == "decimal" => Ty::Decimal,
        "Set" => Ty::Set(Box::new(resolve(
            &t["element"],
            namespace,
            common,
            entities,
            depth + 1,
        ))),
        "Record" => {
            let Some(attrs) = t["attributes"].as_object() else {
                return Ty::Other;
            };
            if t["additionalAttributes"].as_bool() == Some(true) {
                return Ty::Other;
            }
            Ty::Record(
                attrs
                    .iter()
                    .map(|(k, v)| {
                        let required = v["required"].as_bool().unwrap_or(true);
                        let ty = resolve(v, namespace, common, entities, depth + 1);
                        (k.clone(), (ty, required))
                    })
                    .collect(),
            )
        }
        "EntityOrCommon" | "CommonType" => {
            if same_namespace && let Some(def) = common.get(short) {
                return resolve(def, namespace, common, entities, depth + 1);
            }
            if same_namespace && entities.contains_key(short) {
                return Ty::Entity;
            }
            match name {
                "Bool" | "Boolean" | "__cedar::Bool" => Ty::Bool,
                "Long" | "__cedar::Long" => Ty::Long,
                "String" | "__cedar::String" => Ty::Str,
                "decimal" | "__cedar::decimal" => Ty::Decimal,
                _ if name.contains("::") => Ty::Entity,
                _ => Ty::Other,
            }
        }
        _ => Ty::Other,
    }
}

impl ContextTypes {
    /// Reads the context type of every action from the schema text; an unreadable schema gives
    /// no types (every request takes Cedar's parser).
    pub(crate) fn from_schema_text(text: &str) -> Self {
        let Ok((fragment, _)) = SchemaFragment::from_cedarschema_str(text) else {
            return Self::default();
        };
        let Ok(json) = fragment.to_json_value() else {
            return Self::default();
        };
        let mut by_action = HashMap::new();
        let mut sensitive = HashMap::new();
        let empty = serde_json::Map::new();
        for (namespace, ns) in json.as_object().unwrap_or(&empty) {
            let common = ns["commonTypes"].as_object().unwrap_or(&empty);
            let entities = ns["entityTypes"].as_object().unwrap_or(&empty);
            for (action, def) in ns["actions"].as_object().unwrap_or(&empty) {
                let context = &def["appliesTo"]["context"];
                let ty = if context.is_null() {
                    Ty::Record(BTreeMap::new())
                } else {
                    resolve(context, namespace, common, entities, 0)
                };
                let prefix = if namespace.is_empty() {
                    String::new()
                } else {
                    format!("{namespace}::")
                };
                let uid = format!("{prefix}Action::{}", Value::String(action.clone()));
                let mut marked = Vec::new();
                sensitive_paths(context, common, &mut Vec::new(), &mut marked, 0);
                if !marked.is_empty() {
                    sensitive.insert(uid.clone(), marked);
                }
                by_action.insert(uid, ty);
            }
        }
        Self {
            by_action,
            sensitive,
        }
    }

    /// The `@sensitive` context attributes of `action` (`Namespace::Action::"name"`).
    pub(crate) fn sensitive(&self, action: &str) -> &[Sensitive] {
        self.sensitive.get(action).map_or(&[], Vec::as_slice)
    }

    /// The context for `action` built from `json`, or `None` when the fast path does not apply.
    pub(crate) fn build(&self, action: &EntityUid, json: &Value) -> Option<Context> {
        let Ty::Record(fields) = self.by_action.get(&action.to_string())? else {
            return None;
        };
        Context::from_pairs(record_pairs(json.as_object()?, fields)?).ok()
    }
}

/// An entity reference in Cedar's JSON forms (`{"__entity": {"type", "id"}}` or `{"type", "id"}`);
/// like Cedar's parser, a string is not one.
fn entity(v: &Value) -> Option<EntityUid> {
    match v {
        Value::Object(o) => {
            let inner = o.get("__entity").unwrap_or(v);
            let (t, id) = (inner["type"].as_str()?, inner["id"].as_str()?);
            Some(EntityUid::from_type_name_and_id(
                t.parse().ok()?,
                cedar_policy::EntityId::new(id),
            ))
        }
        _ => None,
    }
}

/// A record's attributes, when every attribute is known and every required one is present (else
/// Cedar's parser words the error).
fn record_pairs(
    o: &serde_json::Map<String, Value>,
    fields: &BTreeMap<String, (Ty, bool)>,
) -> Option<Vec<(String, RestrictedExpression)>> {
    if fields
        .iter()
        .any(|(k, (_, required))| *required && !o.contains_key(k))
    {
        return None;
    }
    o.iter()
        .map(|(k, v)| Some((k.clone(), convert(v, &fields.get(k)?.0)?)))
        .collect()
}

/// The `decimal` extension function's name, parsed once: `RestrictedExpression::new_decimal`
/// parses it on every call, which costs ~10 µs per value.
static DECIMAL_FN: LazyLock<Option<cedar_policy_core::ast::Name>> = LazyLock::new(|| {
    "decimal"
        .parse::<cedar_policy_core::ast::UnreservedId>()
        .ok()
        .map(cedar_policy_core::ast::Name::unqualified_name)
});

/// A call of the `decimal` constructor on `s` (checked when the context is built).
fn decimal(s: &str) -> RestrictedExpression {
    use cedar_policy_core::ast::RestrictedExpr;
    match DECIMAL_FN.as_ref() {
        Some(name) => RestrictedExpression::from(RestrictedExpr::call_extension_fn(
            name.clone(),
            [RestrictedExpr::val(s)],
        )),
        None => RestrictedExpression::new_decimal(s),
    }
}

fn convert(v: &Value, ty: &Ty) -> Option<RestrictedExpression> {
    Some(match (ty, v) {
        (Ty::Bool, Value::Bool(b)) => RestrictedExpression::new_bool(*b),
        (Ty::Long, Value::Number(n)) => RestrictedExpression::new_long(n.as_i64()?),
        (Ty::Str, Value::String(s)) => RestrictedExpression::new_string(s.clone()),
        (Ty::Decimal, Value::String(s)) => decimal(s),
        (Ty::Entity, _) => RestrictedExpression::new_entity_uid(entity(v)?),
        (Ty::Set(t), Value::Array(items)) => RestrictedExpression::new_set(
            items
                .iter()
                .map(|i| convert(i, t))
                .collect::<Option<Vec<_>>>()?,
        ),
        (Ty::Record(fields), Value::Object(o)) => {
            RestrictedExpression::new_record(record_pairs(o, fields)?).ok()?
        }
        _ => return None,
    })
}
