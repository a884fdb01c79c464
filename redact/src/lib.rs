//! Redaction: personal data and secrets taken out of telemetry before anything stores it.
//!
//! This crate owns the redaction rules (`rules/redaction.yaml`, validated once into a
//! [`Redactor`]), the shipped detectors ([`detect`]: emails, phone numbers, Luhn-checked card
//! numbers, mod-97-checked IBANs, US SSNs, IP addresses, API keys, tokens, private keys,
//! passwords), the pseudonym key that makes `hash` a keyed HMAC-SHA256 ([`key`]), and applying
//! the rules to an OTLP export, to JSON (audit contexts, run inputs) and to text ([`apply`]), and
//! finding a person's stored data again for erasure ([`mention`]).
//!
//! Every pattern runs on the `regex` crate, whose matching time is linear in the input: all value
//! patterns are compiled once into one `RegexSet`, so a value that matches nothing costs one scan.
//! Values are never logged; what was redacted is counted by rule and action ([`Counts`]).

pub mod apply;
mod detect;
pub mod key;
pub mod mention;
pub mod report;
mod rules;

pub use apply::Scope;
pub use key::PseudonymKey;
pub use mention::Mention;
pub use rules::{RedactionFile, Redactor};

use std::sync::atomic::{AtomicU64, Ordering};

/// The names of the shipped detectors.
pub fn detector_names() -> Vec<&'static str> {
    detect::BUILTINS.iter().map(|b| b.name).collect()
}

/// A rules file that turns every shipped detector off and has no rules: redaction off, for
/// deployments whose telemetry is scrubbed before it arrives (and for measuring what redaction
/// costs).
pub fn off_rules() -> String {
    let mut s = String::from("version: custos/v1\ndetectors:\n");
    for n in detector_names() {
        s.push_str(&format!("  {n}: {{ enabled: false }}\n"));
    }
    s
}

/// Errors of redaction.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rules file is invalid.
    #[error("`{file}`: {message}")]
    Rules {
        /// The file.
        file: String,
        /// What is wrong, naming the rule and field.
        message: String,
    },
    /// The pseudonym key cannot be read or made.
    #[error("pseudonym key `{path}`: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Result type of redaction.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace it with its label: `[EMAIL]`.
    Mask,
    /// Replace it with a keyed pseudonym: `[EMAIL:3f9c2a1b7d4e5f60]`; the same value gives the
    /// same pseudonym under one key, so it still joins across spans.
    Hash,
    /// Remove the attribute (a span name or status message becomes the label).
    Drop,
    /// Keep the first `max_bytes` bytes of the value (key rules only).
    Truncate,
}

impl Action {
    /// Its name in the rules file and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Drop => "drop",
            Action::Truncate => "truncate",
        }
    }

    const ALL: [Action; 4] = [Action::Mask, Action::Hash, Action::Drop, Action::Truncate];

    fn index(self) -> usize {
        self as usize
    }
}

/// How many values each rule (or detector) redacted, by action, since start.
#[derive(Debug, Default)]
pub struct Counts {
    names: Vec<String>,
    counts: Vec<[AtomicU64; 4]>,
}

impl Counts {
    fn new(names: Vec<String>) -> Self {
        let counts = names.iter().map(|_| Default::default()).collect();
        Self { names, counts }
    }

    fn add(&self, rule: usize, action: Action) {
        if let Some(c) = self.counts.get(rule) {
            c[action.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(rule or detector, action, count)` for every pair counted at least once.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (name, c) in self.names.iter().zip(&self.counts) {
            for a in Action::ALL {
                let n = c[a.index()].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((name.clone(), a.as_str(), n));
                }
            }
        }
        out
    }

    /// Everything redacted since start.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .flat_map(|c| c.iter())
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}
