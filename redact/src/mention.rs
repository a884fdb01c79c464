//! Finding one person's data again after it was stored: the value as the automation sent it, and
//! its pseudonym under the data directory's key. Erasure uses this to select spans, journal
//! records and connector lines that mention someone.

use serde_json::Value;

use crate::PseudonymKey;

/// The shortest value a mention may be looked for by: a shorter one would match too much.
pub const MIN_MENTION_CHARS: usize = 3;

/// One person's value and the hex of its pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mention {
    raw: String,
    hex: String,
    marker: String,
}

impl Mention {
    /// The mention of `raw` under `key`; `None` when `raw` is shorter than
    /// [`MIN_MENTION_CHARS`] (after trimming).
    pub fn new(raw: &str, key: &PseudonymKey) -> Option<Self> {
        let raw = raw.trim();
        if raw.chars().count() < MIN_MENTION_CHARS {
            return None;
        }
        let hex = key.pseudonym(raw.as_bytes());
        Some(Self::from_parts(raw, &hex))
    }

    /// A mention from a value and a pseudonym's hex already computed.
    pub fn from_parts(raw: &str, hex: &str) -> Self {
        Self {
            raw: raw.to_string(),
            hex: hex.to_string(),
            marker: format!(":{hex}]"),
        }
    }

    /// The value as sent.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The 16 hex digits of its pseudonym (`[PERSON:<hex>]`, `[EMAIL:<hex>]`, …).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `s` mentions the person: equal to the value, holding it as a whole word (no letter
    /// or digit right before or after), or holding its pseudonym under any label.
    pub fn in_text(&self, s: &str) -> bool {
        s == self.raw || s.contains(&self.marker) || contains_word(s, &self.raw)
    }

    /// Whether any string (or object key) in `v` mentions the person.
    pub fn in_json(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.in_text(s),
            Value::Array(a) => a.iter().any(|v| self.in_json(v)),
            Value::Object(o) => o.iter().any(|(k, v)| self.in_text(k) || self.in_json(v)),
            Value::Number(n) => n.to_string() == self.raw,
            _ => false,
        }
    }
}

/// Whether `needle` occurs in `s` with no letter or digit right before or after it.
fn contains_word(s: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    s.match_indices(needle).any(|(at, _)| {
        let before = s[..at].chars().next_back();
        let after = s[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m() -> Mention {
        Mention::from_parts("u-123", "00ff00ff00ff00ff")
    }

    #[test]
    fn words_are_whole() {
        let m = m();
        assert!(m.in_text("customer u-123 called"));
        assert!(m.in_text("u-123"));
        assert!(m.in_text("(u-123)."));
        assert!(!m.in_text("u-1234"));
        assert!(!m.in_text("xu-123"));
        assert!(m.in_text("u-1234 and u-123"));
        assert!(m.in_text("[PERSON:00ff00ff00ff00ff]"));
        assert!(m.in_text("to [EMAIL:00ff00ff00ff00ff] today"));
        assert!(!m.in_text("[PERSON:00ff00ff00ff00fe]"));
    }

    #[test]
    fn json_is_searched_everywhere() {
        let m = m();
        assert!(m.in_json(&json!({"a": [1, {"b": "about u-123"}]})));
        assert!(m.in_json(&json!({"u-123": true})));
        assert!(!m.in_json(&json!({"a": ["u-1234", 123]})));
        assert!(Mention::from_parts("123", "x").in_json(&json!({"n": 123})));
    }

    #[test]
    fn short_values_are_refused() {
        let key = PseudonymKey::ephemeral().unwrap();
        assert!(Mention::new(" ab ", &key).is_none());
        let a = Mention::new("u-123", &key).unwrap();
        assert_eq!(a.hex(), key.pseudonym(b"u-123"));
        assert_eq!(a, Mention::new(" u-123", &key).unwrap());
    }
}
