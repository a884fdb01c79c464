//! Applying the rules: to an OTLP export (every span name, status message, event, link, span,
//! scope and resource attribute), to JSON (audit contexts, run inputs) and to text (messages).
//!
//! For one attribute: the first key rule whose globs match its key acts on the whole value
//! (`drop` removes it, `mask` and `hash` replace it, `truncate` shortens it and lets the
//! detectors scan what is left); without one, exempt keys are left alone and every string in the
//! value is scanned. A scan asks the one `RegexSet` whether anything matches at all (the common
//! answer, no, costs one linear pass), then finds the matches of the patterns that did, keeps
//! those their check accepts, prefers earlier rules where matches overlap, and replaces them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

use crate::{Action, Redactor};

/// Where a value was found: its span's service and workflow, for rules scoped to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// `service.name` of the resource.
    pub service: Option<&'a str>,
    /// The workflow the span belongs to (its attribute, else its resource's).
    pub workflow: Option<&'a str>,
}

/// What one export's walk remembers: keys repeat in every span and short values (`chat`,
/// `gpt-4o-mini`) in many, so each is matched once per export. Bounded, so a hostile export of
/// distinct keys costs no more than a walk without it.
#[derive(Default)]
struct Memo {
    /// A key's matching key rules (file order, before scopes) and whether it is exempt.
    keys: HashMap<String, (Vec<usize>, bool)>,
    /// Short values no pattern matches at all.
    clean: HashSet<String>,
}

const MEMO_ENTRIES: usize = 4096;
const MEMO_VALUE_BYTES: usize = 64;

/// The scope of the values being walked and the walk's memo.
struct Walk<'a> {
    scope: Scope<'a>,
    memo: &'a RefCell<Memo>,
}

/// What the key rules say about one key.
struct KeyHit {
    /// The first key rule that matches and applies.
    rule: Option<usize>,
    /// Whether detectors leave its values alone.
    exempt: bool,
}

/// What the key rules do to one value.
enum KeyStep<'r> {
    /// Remove it.
    Drop,
    /// Replace it with this (a mask's label).
    Replace(String),
    /// Replace it with its pseudonym under this label.
    Hash(&'r str),
    /// Cut it to `max` bytes (counted under `counted` if it was longer), then scan the rest.
    Truncate { max: usize, counted: usize },
    /// Leave it alone: an exempt key.
    Keep,
    /// No key rule: scan it.
    Scan,
}

/// What a scan found.
enum Scan {
    Unchanged,
    Replaced(String),
    /// A rule with `drop` matched: the whole value goes; the label stands in where a value
    /// cannot go (a span name).
    Drop(String),
}

/// The string value of a workflow attribute among `attrs`.
fn workflow_of(attrs: &[KeyValue]) -> Option<String> {
    let keys = custos_schema::CONVENTIONS
        .iter()
        .find(|c| c.column == custos_schema::col::WORKFLOW)
        .map_or(&[][..], |c| c.keys);
    keys.iter().find_map(|k| string_attr(attrs, k))
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    })
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

/// The bytes a `hash` of a whole value is computed over: a string's text, a number's decimal
/// form, anything else's protobuf encoding.
fn canonical(v: Option<&AnyValue>) -> Vec<u8> {
    use prost::Message as _;
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(any_value::Value::IntValue(i)) => i.to_string().into_bytes(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string().into_bytes(),
        Some(any_value::Value::BoolValue(b)) => b.to_string().into_bytes(),
        Some(any_value::Value::BytesValue(b)) => b.clone(),
        Some(other) => AnyValue {
            value: Some(other.clone()),
        }
        .encode_to_vec(),
        None => Vec::new(),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, saying how much went.
fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("[…{dropped} bytes truncated]"));
    true
}

/// A shareable closure over a record's action and its JSON context (the audit log's `Scrub`).
pub type JsonScrubber = std::sync::Arc<dyn Fn(&str, &mut Value) + Send + Sync>;

impl Redactor {
    /// Redacts an export in place.
    pub fn request(&self, req: &mut ExportTraceServiceRequest) {
        if self.is_off() {
            return;
        }
        let memo = RefCell::new(Memo::default());
        for rs in &mut req.resource_spans {
            let res_attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = string_attr(res_attrs, custos_schema::SERVICE_NAME_KEY);
            let res_workflow = workflow_of(res_attrs);
            let w = Walk {
                scope: Scope {
                    service: service.as_deref(),
                    workflow: res_workflow.as_deref(),
                },
                memo: &memo,
            };
            if let Some(r) = &mut rs.resource {
                self.attributes(&mut r.attributes, &w);
            }
            for ss in &mut rs.scope_spans {
                if let Some(s) = &mut ss.scope {
                    self.attributes(&mut s.attributes, &w);
                }
                for span in &mut ss.spans {
                    let workflow = workflow_of(&span.attributes);
                    let w = Walk {
                        scope: Scope {
                            service: service.as_deref(),
                            workflow: workflow.as_deref().or(res_workflow.as_deref()),
                        },
                        memo: &memo,
                    };
                    self.text_in_place(&mut span.name, &w);
                    if let Some(st) = &mut span.status {
                        self.text_in_place(&mut st.message, &w);
                    }
                    self.attributes(&mut span.attributes, &w);
                    for e in &mut span.events {
                        self.text_in_place(&mut e.name, &w);
                        self.attributes(&mut e.attributes, &w);
                    }
                    for l in &mut span.links {
                        self.attributes(&mut l.attributes, &w);
                    }
                }
            }
        }
    }

    /// Whether nothing can match: every detector off and no rules.
    pub fn is_off(&self) -> bool {
        self.value_rules.is_empty() && self.key_rules.is_empty()
    }

    /// `text` with what the rules find in it replaced (rules scoped to a service or workflow do
    /// not apply): for messages that may quote a client's data.
    pub fn text(&self, text: &str) -> String {
        let memo = RefCell::new(Memo::default());
        let w = Walk {
            scope: Scope::default(),
            memo: &memo,
        };
        match self.scan(text, &w) {
            Scan::Unchanged => text.to_string(),
            Scan::Replaced(s) | Scan::Drop(s) => s,
        }
    }

    /// [`Redactor::json`] as a shareable closure of the audit log's shape (the record's action,
    /// which this ignores, and its context).
    pub fn json_scrubber(self: &std::sync::Arc<Self>) -> JsonScrubber {
        let r = std::sync::Arc::clone(self);
        std::sync::Arc::new(move |_: &str, v: &mut Value| r.json(v))
    }

    /// Replaces the value at `path` (attribute names from the top of `v`) with its pseudonym
    /// `[LABEL:hex]`, when it is there. A value in Cedar's JSON forms is hashed by what it names:
    /// a string as itself (so it joins with the same value's pseudonyms elsewhere), an entity
    /// reference by its id, an extension value by its argument, anything else as JSON text.
    pub fn pseudonymize_at(&self, v: &mut Value, path: &[String], label: &str) {
        let mut at = v;
        for name in path {
            match at.get_mut(name) {
                Some(next) => at = next,
                None => return,
            }
        }
        if at.is_null() {
            return;
        }
        let named = match &*at {
            Value::String(s) => s.clone(),
            Value::Object(o) => match (o.get("__entity"), o.get("__extn")) {
                (Some(e), _) => e["id"]
                    .as_str()
                    .map_or_else(|| e.to_string(), str::to_string),
                (_, Some(x)) => x["arg"]
                    .as_str()
                    .map_or_else(|| x.to_string(), str::to_string),
                _ => at.to_string(),
            },
            other => other.to_string(),
        };
        *at = Value::String(format!(
            "[{label}:{}]",
            self.key.pseudonym(named.as_bytes())
        ));
    }

    /// Redacts JSON in place: object keys are matched by the key rules (the key alone, at any
    /// depth), strings are scanned. Rules scoped to a service or workflow do not apply.
    pub fn json(&self, v: &mut Value) {
        let memo = RefCell::new(Memo::default());
        let w = Walk {
            scope: Scope::default(),
            memo: &memo,
        };
        self.json_in(v, &w);
    }

    fn json_in(&self, v: &mut Value, w: &Walk<'_>) -> bool {
        match v {
            Value::String(s) => match self.scan(s, w) {
                Scan::Unchanged => true,
                Scan::Replaced(n) => {
                    *s = n;
                    true
                }
                Scan::Drop(_) => false,
            },
            Value::Array(items) => items.iter_mut().all(|i| self.json_in(i, w)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let keep = match map.get_mut(&k) {
                        Some(val) => self.json_entry(&k, val, w),
                        None => true,
                    };
                    if !keep {
                        map.remove(&k);
                    }
                }
                true
            }
            _ => true,
        }
    }

    /// What the key rules do to a value under `key`, counted; the caller applies it to its own
    /// representation (OTLP or JSON).
    fn key_step(&self, key: &str, w: &Walk<'_>) -> KeyStep<'_> {
        let hit = self.key_rule(key, w);
        let Some(i) = hit.rule else {
            return if hit.exempt {
                KeyStep::Keep
            } else {
                KeyStep::Scan
            };
        };
        let r = &self.key_rules[i];
        let counted = self.value_rules.len() + i;
        match r.action {
            Action::Truncate => KeyStep::Truncate {
                max: r.max_bytes,
                counted,
            },
            action => {
                self.counts.add(counted, action);
                match action {
                    Action::Drop => KeyStep::Drop,
                    Action::Hash => KeyStep::Hash(&r.label),
                    _ => KeyStep::Replace(format!("[{}]", r.label)),
                }
            }
        }
    }

    /// One object entry; false when it must go.
    fn json_entry(&self, key: &str, val: &mut Value, w: &Walk<'_>) -> bool {
        match self.key_step(key, w) {
            KeyStep::Drop => return false,
            KeyStep::Keep => return true,
            KeyStep::Replace(s) => {
                *val = Value::String(s);
                return true;
            }
            KeyStep::Hash(label) => {
                let bytes = match &*val {
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                };
                *val = Value::String(format!("[{label}:{}]", self.key.pseudonym(&bytes)));
                return true;
            }
            KeyStep::Truncate { max, counted } => {
                if let Value::String(s) = val
                    && truncate(s, max)
                {
                    self.counts.add(counted, Action::Truncate);
                }
            }
            KeyStep::Scan => {}
        }
        self.json_in(val, w)
    }

    /// The first key rule for `key` that applies in the walk's scope, and whether `key` is
    /// exempt; matched once per key and export.
    fn key_rule(&self, key: &str, w: &Walk<'_>) -> KeyHit {
        let mut memo = w.memo.borrow_mut();
        if !memo.keys.contains_key(key) {
            let rules: Vec<usize> = if self.key_rules.is_empty() {
                Vec::new()
            } else {
                self.keys.matches(key).iter().collect()
            };
            let exempt = self.exempt.contains(key);
            if memo.keys.len() >= MEMO_ENTRIES {
                let rule = rules
                    .into_iter()
                    .find(|&i| self.key_rules[i].applies.to(&w.scope));
                return KeyHit { rule, exempt };
            }
            memo.keys.insert(key.to_string(), (rules, exempt));
        }
        let (rules, exempt) = memo
            .keys
            .get(key)
            .map_or((&[][..], false), |(r, e)| (&r[..], *e));
        KeyHit {
            rule: rules
                .iter()
                .copied()
                .find(|&i| self.key_rules[i].applies.to(&w.scope)),
            exempt,
        }
    }

    fn attributes(&self, attrs: &mut Vec<KeyValue>, w: &Walk<'_>) {
        attrs.retain_mut(|kv| self.attribute(kv, w));
    }

    /// One attribute; false when it must go.
    fn attribute(&self, kv: &mut KeyValue, w: &Walk<'_>) -> bool {
        match self.key_step(&kv.key, w) {
            KeyStep::Drop => return false,
            KeyStep::Keep => return true,
            KeyStep::Replace(s) => {
                kv.value = Some(string_value(s));
                return true;
            }
            KeyStep::Hash(label) => {
                let p = self.key.pseudonym(&canonical(kv.value.as_ref()));
                kv.value = Some(string_value(format!("[{label}:{p}]")));
                return true;
            }
            KeyStep::Truncate { max, counted } => {
                if let Some(v) = &mut kv.value
                    && truncate_any(v, max)
                {
                    self.counts.add(counted, Action::Truncate);
                }
            }
            KeyStep::Scan => {}
        }
        match &mut kv.value {
            Some(v) => self.any_value(v, w),
            None => true,
        }
    }

    /// Scans every string in `v`; false when a `drop` rule matched.
    fn any_value(&self, v: &mut AnyValue, w: &Walk<'_>) -> bool {
        match &mut v.value {
            Some(any_value::Value::StringValue(s)) => match self.scan(s, w) {
                Scan::Unchanged => true,
                Scan::Replaced(n) => {
                    *s = n;
                    true
                }
                Scan::Drop(_) => false,
            },
            Some(any_value::Value::ArrayValue(a)) => {
                a.values.iter_mut().all(|e| self.any_value(e, w))
            }
            Some(any_value::Value::KvlistValue(l)) => {
                self.attributes(&mut l.values, w);
                true
            }
            Some(any_value::Value::BytesValue(b)) => {
                let Ok(text) = std::str::from_utf8(b) else {
                    return true;
                };
                match self.scan(text, w) {
                    Scan::Unchanged => true,
                    Scan::Replaced(n) => {
                        *b = n.into_bytes();
                        true
                    }
                    Scan::Drop(_) => false,
                }
            }
            _ => true,
        }
    }

    /// A span name, event name or status message: a `drop` leaves the label.
    fn text_in_place(&self, s: &mut String, w: &Walk<'_>) {
        match self.scan(s, w) {
            Scan::Unchanged => {}
            Scan::Replaced(n) | Scan::Drop(n) => *s = n,
        }
    }

    fn scan(&self, text: &str, w: &Walk<'_>) -> Scan {
        if text.is_empty() {
            return Scan::Unchanged;
        }
        let short = text.len() <= MEMO_VALUE_BYTES;
        if short && w.memo.borrow().clean.contains(text) {
            return Scan::Unchanged;
        }
        if !self.values.is_match(text) {
            let mut memo = w.memo.borrow_mut();
            if short && memo.clean.len() < MEMO_ENTRIES {
                memo.clean.insert(text.to_string());
            }
            return Scan::Unchanged;
        }
        // Matches by preference (rule order), kept where they overlap nothing preferred.
        let mut kept: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for i in self.values.matches(text).iter() {
            let r = &self.value_rules[i];
            if !r.applies.to(&w.scope) {
                continue;
            }
            for c in r.regex.captures_iter(text) {
                let Some(whole) = c.get(0) else { continue };
                if !r.check.accepts(whole.as_str()) {
                    continue;
                }
                if r.action == Action::Drop {
                    self.counts.add(i, Action::Drop);
                    return Scan::Drop(format!("[{}]", r.label));
                }
                let m = if r.group { c.name("v") } else { Some(whole) };
                let Some(m) = m.filter(|m| !m.is_empty()) else {
                    continue;
                };
                let (s, e) = (m.start(), m.end());
                let before = kept.range(..e).next_back();
                if before.is_some_and(|(_, &(end, _))| end > s) {
                    continue;
                }
                kept.insert(s, (e, i));
            }
        }
        if kept.is_empty() {
            return Scan::Unchanged;
        }
        let mut out = String::with_capacity(text.len() + 16 * kept.len());
        let mut at = 0;
        for (&s, &(e, i)) in &kept {
            let r = &self.value_rules[i];
            out.push_str(&text[at..s]);
            match r.action {
                Action::Hash => {
                    let p = self.key.pseudonym(&text.as_bytes()[s..e]);
                    out.push_str(&format!("[{}:{p}]", r.label));
                }
                _ => out.push_str(&format!("[{}]", r.label)),
            }
            self.counts.add(i, r.action);
            at = e;
        }
        out.push_str(&text[at..]);
        Scan::Replaced(out)
    }
}

/// Truncates every string in `v` (arrays too); whether anything was cut.
fn truncate_any(v: &mut AnyValue, max: usize) -> bool {
    match &mut v.value {
        Some(any_value::Value::StringValue(s)) => truncate(s, max),
        Some(any_value::Value::ArrayValue(a)) => {
            // Every element is cut, so no short-circuit.
            let mut cut = false;
            for e in &mut a.values {
                cut |= truncate_any(e, max);
            }
            cut
        }
        _ => false,
    }
}
