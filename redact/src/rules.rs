//! `rules/redaction.yaml`: the file as written ([`RedactionFile`]) and validated once into a
//! [`Redactor`]. Without a file the shipped detectors apply with their defaults.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::detect::{self, BUILTINS, Check};
use crate::{Action, Counts, Error, PseudonymKey, Result};

/// `rules/redaction.yaml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionFile {
    /// Format version; `custos/v1`.
    pub version: String,
    /// Settings of shipped detectors by name; a detector not listed keeps its default.
    #[serde(default)]
    pub detectors: BTreeMap<String, DetectorSetting>,
    /// Attribute keys whose values detectors never scan (custos reads them as identifiers);
    /// replaces the default list. Key rules still apply to them.
    #[serde(default)]
    pub exempt_keys: Option<Vec<String>>,
    /// Rules of the deployment, applied before the detectors, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

/// A shipped detector's setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSetting {
    /// Whether it runs (default: on, but `ipv4` and `ipv6`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// What it does with a match: `mask` (default), `hash` or `drop`.
    #[serde(default)]
    pub action: Option<Action>,
}

/// A rule of the deployment: attribute keys (`keys`) or a pattern in values (`pattern`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Its name, in errors and metrics.
    pub name: String,
    /// Attribute keys, as globs (`gen_ai.prompt.*`, `*.password`): the rule acts on the whole
    /// value of each.
    #[serde(default)]
    pub keys: Vec<String>,
    /// A pattern (the `regex` crate's syntax) found in any value; a group named `v` limits the
    /// replacement to that group.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `mask`, `hash`, `drop`, or `truncate` (key rules only).
    pub action: Action,
    /// The label of `mask` and `hash` (default: the name in upper case).
    #[serde(default)]
    pub label: Option<String>,
    /// What `truncate` keeps, in bytes.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Only for spans of these services (globs on `service.name`).
    #[serde(default)]
    pub services: Vec<String>,
    /// Only for spans of these workflows (globs on the workflow attribute).
    #[serde(default)]
    pub workflows: Vec<String>,
}

/// Where a rule applies.
#[derive(Debug, Default)]
pub(crate) struct Applies {
    services: Option<RegexSet>,
    workflows: Option<RegexSet>,
}

impl Applies {
    pub(crate) fn to(&self, scope: &crate::Scope<'_>) -> bool {
        let one = |set: &Option<RegexSet>, v: Option<&str>| match set {
            None => true,
            Some(s) => v.is_some_and(|v| s.is_match(v)),
        };
        one(&self.services, scope.service) && one(&self.workflows, scope.workflow)
    }
}

/// A compiled value pattern: a shipped detector or a `pattern` rule.
#[derive(Debug)]
pub(crate) struct ValueRule {
    pub(crate) regex: Regex,
    pub(crate) check: Check,
    pub(crate) label: String,
    pub(crate) action: Action,
    pub(crate) applies: Applies,
    /// Replace only the group named `v`.
    pub(crate) group: bool,
}

/// A compiled key rule.
#[derive(Debug)]
pub(crate) struct KeyRule {
    pub(crate) label: String,
    pub(crate) action: Action,
    pub(crate) max_bytes: usize,
    pub(crate) applies: Applies,
}

/// The rules, compiled: what the collector runs on every export.
#[derive(Debug)]
pub struct Redactor {
    /// Every value pattern, in preference order.
    pub(crate) values: RegexSet,
    pub(crate) value_rules: Vec<ValueRule>,
    /// One entry per key rule (its globs as one alternation), in file order.
    pub(crate) keys: RegexSet,
    pub(crate) key_rules: Vec<KeyRule>,
    pub(crate) exempt: HashSet<String>,
    pub(crate) key: PseudonymKey,
    /// Counts by value rule, then by key rule (`value_rules.len() + i`).
    pub(crate) counts: Counts,
}

/// Keys custos reads as identifiers, never scanned by detectors unless the file says otherwise:
/// the service's name and the automation conventions whose values name things, not people.
fn default_exempt() -> Vec<String> {
    use custos_schema::col;
    let identifiers = [
        col::WORKFLOW,
        col::RUN_ID,
        col::STEP,
        col::STEP_KIND,
        col::MODEL,
        col::PROVIDER,
        col::MODEL_VERSION,
        col::PROMPT_VERSION,
        col::DECISION,
        col::OUTCOME,
    ];
    let mut keys: Vec<String> = custos_schema::CONVENTIONS
        .iter()
        .filter(|c| identifiers.contains(&c.column))
        .flat_map(|c| c.keys.iter().map(|k| (*k).to_string()))
        .collect();
    keys.extend(
        [
            custos_schema::SERVICE_NAME_KEY,
            "service.version",
            "service.namespace",
            "service.instance.id",
            "telemetry.sdk.name",
            "telemetry.sdk.language",
            "telemetry.sdk.version",
            "deployment.environment",
            "deployment.environment.name",
        ]
        .map(str::to_string),
    );
    keys
}

/// A glob (`*` any run, `?` one character) as an anchored pattern.
fn glob(g: &str) -> String {
    let mut out = String::from("^");
    let mut lit = String::new();
    for c in g.chars() {
        match c {
            '*' | '?' => {
                out.push_str(&regex::escape(&lit));
                lit.clear();
                out.push_str(if c == '*' { ".*" } else { "." });
            }
            c => lit.push(c),
        }
    }
    out.push_str(&regex::escape(&lit));
    out.push('$');
    out
}

fn glob_set(globs: &[String]) -> Option<RegexSet> {
    if globs.is_empty() {
        return None;
    }
    // Globs escape everything else, so the set always compiles.
    RegexSet::new(globs.iter().map(|g| glob(g))).ok()
}

impl Redactor {
    /// The shipped detectors with their defaults, and no rules of the deployment.
    pub fn defaults(key: PseudonymKey) -> Result<Self> {
        Self::compile(&RedactionFile::default(), "(defaults)", key)
    }

    /// Reads and validates a rules file.
    pub fn load(path: &Path, key: PseudonymKey) -> Result<Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Rules {
            file: name.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &name, key)
    }

    /// Parses and validates rules-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str, key: PseudonymKey) -> Result<Self> {
        let raw: RedactionFile = serde_yaml_ng::from_str(text).map_err(|e| Error::Rules {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        if raw.version != "custos/v1" {
            return Err(Error::Rules {
                file: file.to_string(),
                message: format!(
                    "unsupported version `{}`; expected `custos/v1`",
                    raw.version
                ),
            });
        }
        Self::compile(&raw, file, key)
    }

    fn compile(raw: &RedactionFile, file: &str, key: PseudonymKey) -> Result<Self> {
        let err = |message: String| Error::Rules {
            file: file.to_string(),
            message,
        };
        for (name, s) in &raw.detectors {
            if detect::builtin(name).is_none() {
                return Err(err(format!(
                    "detectors: unknown detector `{name}`; shipped: {}",
                    detect::names()
                )));
            }
            if s.action == Some(Action::Truncate) {
                return Err(err(format!(
                    "detectors.{name}, field `action`: `truncate` applies to key rules only; use `mask`, `hash` or `drop`"
                )));
            }
        }
        let mut value_rules = Vec::new();
        let mut value_names = Vec::new();
        let mut key_rules = Vec::new();
        let mut key_patterns = Vec::new();
        let mut key_names = Vec::new();
        let mut seen = HashSet::new();
        // The deployment's pattern rules come before the detectors: they are more specific.
        for (i, r) in raw.rules.iter().enumerate() {
            let at = |field: &str, msg: String| {
                err(format!("rules[{i}] (`{}`), field `{field}`: {msg}", r.name))
            };
            if r.name.trim().is_empty() {
                return Err(at("name", "must not be empty".into()));
            }
            if !seen.insert(r.name.clone()) || detect::builtin(&r.name).is_some() {
                return Err(at(
                    "name",
                    "is already the name of another rule or of a shipped detector".into(),
                ));
            }
            let applies = Applies {
                services: glob_set(&r.services),
                workflows: glob_set(&r.workflows),
            };
            let label = match &r.label {
                Some(l) if l.is_empty() || l.contains([']', '[', ':']) => {
                    return Err(at(
                        "label",
                        format!("`{l}` must be non-empty without `[`, `]` or `:`"),
                    ));
                }
                Some(l) => l.clone(),
                None => r.name.to_uppercase().replace(['-', ' ', '.'], "_"),
            };
            match (&r.pattern, r.keys.is_empty()) {
                (Some(_), false) | (None, true) => {
                    return Err(at(
                        "keys",
                        "a rule names either `keys` (attribute keys) or a `pattern` (in values), exactly one".into(),
                    ));
                }
                (Some(p), true) => {
                    if r.action == Action::Truncate {
                        return Err(at(
                            "action",
                            "`truncate` keeps the start of a whole value: give `keys`, not a `pattern`".into(),
                        ));
                    }
                    if r.max_bytes.is_some() {
                        return Err(at("max_bytes", "applies to `truncate` only".into()));
                    }
                    let regex = Regex::new(p).map_err(|e| at("pattern", e.to_string()))?;
                    if regex.is_match("") {
                        return Err(at(
                            "pattern",
                            format!(
                                "`{p}` matches the empty string, so it would match every value"
                            ),
                        ));
                    }
                    let group = regex.capture_names().any(|n| n == Some("v"));
                    value_names.push(r.name.clone());
                    value_rules.push(ValueRule {
                        regex,
                        check: Check::None,
                        label,
                        action: r.action,
                        applies,
                        group,
                    });
                }
                (None, false) => {
                    let max_bytes = match (r.action, r.max_bytes) {
                        (Action::Truncate, Some(n)) if n > 0 => n,
                        (Action::Truncate, _) => {
                            return Err(at(
                                "max_bytes",
                                "`truncate` needs `max_bytes`, a positive number of bytes to keep"
                                    .into(),
                            ));
                        }
                        (_, Some(_)) => {
                            return Err(at("max_bytes", "applies to `truncate` only".into()));
                        }
                        (_, None) => 0,
                    };
                    if let Some(k) = r.keys.iter().find(|k| k.trim().is_empty()) {
                        return Err(at("keys", format!("`{k}` is not a key")));
                    }
                    let alternation: Vec<String> = r.keys.iter().map(|k| glob(k)).collect();
                    key_patterns.push(format!("(?:{})", alternation.join("|")));
                    key_names.push(r.name.clone());
                    key_rules.push(KeyRule {
                        label,
                        action: r.action,
                        max_bytes,
                        applies,
                    });
                }
            }
        }
        for b in BUILTINS {
            let s = raw.detectors.get(b.name);
            if !s.and_then(|s| s.enabled).unwrap_or(b.enabled) {
                continue;
            }
            let regex = Regex::new(b.pattern).map_err(|e| err(format!("{}: {e}", b.name)))?;
            value_names.push(b.name.to_string());
            value_rules.push(ValueRule {
                group: regex.capture_names().any(|n| n == Some("v")),
                regex,
                check: b.check,
                label: b.label.to_string(),
                action: s.and_then(|s| s.action).unwrap_or(b.action),
                applies: Applies::default(),
            });
        }
        let values = RegexSet::new(value_rules.iter().map(|r| r.regex.as_str()))
            .map_err(|e| err(format!("the patterns do not compile together: {e}")))?;
        let keys = RegexSet::new(&key_patterns)
            .map_err(|e| err(format!("the key globs do not compile together: {e}")))?;
        let exempt = raw
            .exempt_keys
            .clone()
            .unwrap_or_else(default_exempt)
            .into_iter()
            .collect();
        value_names.extend(key_names);
        Ok(Self {
            values,
            value_rules,
            keys,
            key_rules,
            exempt,
            key,
            counts: Counts::new(value_names),
        })
    }

    /// What was redacted since start, by rule and action.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The pseudonym key.
    pub fn key(&self) -> &PseudonymKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Redactor> {
        Redactor::parse(
            text,
            "rules/redaction.yaml",
            PseudonymKey::ephemeral().unwrap(),
        )
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_file_and_the_defaults_load() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/redaction.yaml");
        let r = Redactor::load(&shipped, PseudonymKey::ephemeral().unwrap()).unwrap();
        assert!(!r.key_rules.is_empty());
        let d = Redactor::defaults(PseudonymKey::ephemeral().unwrap()).unwrap();
        assert_eq!(
            d.value_rules.len(),
            BUILTINS.iter().filter(|b| b.enabled).count()
        );
    }

    #[test]
    fn every_kind_of_error_names_the_file_the_rule_and_the_field() {
        let v = "version: custos/v1\n";
        let cases = [
            (format!("{v}colour: red\n"), "unknown field `colour`"),
            (
                "version: custos/v9\n".into(),
                "unsupported version `custos/v9`",
            ),
            (
                format!("{v}detectors:\n  emial: {{}}\n"),
                "unknown detector `emial`; shipped: `private_key`",
            ),
            (
                format!("{v}detectors:\n  email: {{action: truncate}}\n"),
                "detectors.email, field `action`",
            ),
            (
                format!("{v}detectors:\n  email: {{action: scramble}}\n"),
                "unknown variant `scramble`",
            ),
            (
                format!("{v}rules:\n  - {{name: t, pattern: '(', action: mask}}\n"),
                "rules[0] (`t`), field `pattern`: regex parse error",
            ),
            (
                format!("{v}rules:\n  - {{name: t, pattern: 'a*', action: mask}}\n"),
                "matches the empty string",
            ),
            (
                format!("{v}rules:\n  - {{name: t, action: mask}}\n"),
                "field `keys`: a rule names either",
            ),
            (
                format!("{v}rules:\n  - {{name: t, keys: [a], pattern: b, action: mask}}\n"),
                "exactly one",
            ),
            (
                format!("{v}rules:\n  - {{name: t, keys: [a], action: truncate}}\n"),
                "field `max_bytes`: `truncate` needs",
            ),
            (
                format!("{v}rules:\n  - {{name: t, keys: [a], action: mask, max_bytes: 3}}\n"),
                "applies to `truncate` only",
            ),
            (
                format!("{v}rules:\n  - {{name: t, pattern: x, action: truncate, max_bytes: 3}}\n"),
                "give `keys`, not a `pattern`",
            ),
            (
                format!(
                    "{v}rules:\n  - {{name: t, keys: [a], action: mask}}\n  - {{name: t, keys: [b], action: mask}}\n"
                ),
                "rules[1] (`t`), field `name`",
            ),
            (
                format!("{v}rules:\n  - {{name: email, keys: [a], action: mask}}\n"),
                "shipped detector",
            ),
            (
                format!("{v}rules:\n  - {{name: t, keys: [a], action: mask, label: 'A]'}}\n"),
                "field `label`",
            ),
            (
                format!("{v}rules:\n  - {{name: t, keys: [a], action: mask, colour: 1}}\n"),
                "unknown field `colour`",
            ),
        ];
        for (text, want) in cases {
            let e = error(&text);
            assert!(e.starts_with("`rules/redaction.yaml`: "), "{e}");
            assert!(e.contains(want), "{text}\n→ {e}\nwanted: {want}");
        }
    }

    #[test]
    fn globs_match_whole_keys() {
        let s = glob_set(&["gen_ai.prompt.*".into(), "*.password".into()]).unwrap();
        assert!(s.is_match("gen_ai.prompt.0.content"));
        assert!(s.is_match("db.password"));
        assert!(!s.is_match("gen_ai.prompt"));
        assert!(!s.is_match("xgen_ai.prompt.0"));
        assert!(glob_set(&["a+b(c)".into()]).unwrap().is_match("a+b(c)"));
    }
}
