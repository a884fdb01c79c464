//! The model price table (`rules/prices.yaml`) and the cost of a span's token usage.
//!
//! A span that reports its own cost (`cost_usd`) keeps it. A span that reports only token counts is
//! priced here: per model, a price per million tokens for each usage type, valid from a date. The
//! GenAI conventions count cached tokens (read and write) inside `input_tokens` and reasoning tokens
//! inside `output_tokens`, so each usage type is priced once:
//!
//! ```text
//! cost = (input - cache_read - cache_write) × input_price
//!      + cache_read × cache_read_price + cache_write × cache_write_price
//!      + (output - reasoning) × output_price + reasoning × reasoning_price      (all ÷ 1e6)
//! ```
//!
//! The file format and the defaults for missing prices are documented in docs/metrics.md.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::{Error, Result};

/// `rules/prices.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// Format version; `custos/v1`.
    pub version: String,
    /// One entry per model and validity period.
    pub prices: Vec<PriceEntry>,
}

/// One model's prices from a date on, in USD per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Model name as it appears in the `model` column (the response model when reported).
    pub model: String,
    /// Also match model names that start with `model` (e.g. dated snapshots `gpt-4o-2024-08-06`).
    #[serde(default)]
    pub prefix: bool,
    /// First UTC day (`YYYY-MM-DD`) these prices apply; they apply until the next entry's date.
    pub valid_from: String,
    /// Price of uncached input tokens.
    pub input: f64,
    /// Price of output tokens that are not reasoning tokens.
    pub output: f64,
    /// Price of cache-read input tokens; defaults to `input`.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Price of cache-write (cache-creation) input tokens; defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Price of reasoning output tokens; defaults to `output`.
    #[serde(default)]
    pub reasoning: Option<f64>,
}

/// Prices in USD per million tokens, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// First day, as days since the Unix epoch.
    pub valid_from_day: i64,
    /// Uncached input.
    pub input: f64,
    /// Output excluding reasoning.
    pub output: f64,
    /// Cache read.
    pub cache_read: f64,
    /// Cache write.
    pub cache_write: f64,
    /// Reasoning.
    pub reasoning: f64,
}

/// Token usage of one span; `None` counts as zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: Option<i64>,
    /// Output tokens, reasoning ones included.
    pub output: Option<i64>,
    /// Cache-read input tokens.
    pub cache_read: Option<i64>,
    /// Cache-write input tokens.
    pub cache_write: Option<i64>,
    /// Reasoning output tokens.
    pub reasoning: Option<i64>,
}

impl Usage {
    /// Whether any count is present.
    pub fn is_empty(&self) -> bool {
        self.input.is_none()
            && self.output.is_none()
            && self.cache_read.is_none()
            && self.cache_write.is_none()
            && self.reasoning.is_none()
    }
}

impl Price {
    /// The cost of `usage` in USD. Counts below zero (cached tokens exceeding the input count) are
    /// clamped so nothing is priced twice or negatively.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as f64;
        let cache_read = n(usage.cache_read);
        let cache_write = n(usage.cache_write);
        let reasoning = n(usage.reasoning);
        let uncached = (n(usage.input) - cache_read - cache_write).max(0.0);
        let plain_output = (n(usage.output) - reasoning).max(0.0);
        (uncached * self.input
            + cache_read * self.cache_read
            + cache_write * self.cache_write
            + plain_output * self.output
            + reasoning * self.reasoning)
            / 1e6
    }
}

/// The validated price table; lookups by model name and day.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    exact: HashMap<String, Vec<Price>>,
    /// Prefix entries, longest prefix first.
    prefixes: Vec<(String, Vec<Price>)>,
}

fn invalid(file: &str, message: String) -> Error {
    Error::Rules(format!("`{file}`: {message}"))
}

impl PriceTable {
    /// Text that changes whenever any price does (sorted, so equal tables give equal text): what
    /// a rollup priced at flush depends on.
    pub fn fingerprint(&self) -> String {
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        format!("{exact:?}|{:?}", self.prefixes)
    }

    /// A table with no prices: no cost is computed.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether the table has no prices.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Reads and validates a price file.
    pub fn load(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&name, format!("cannot read: {e}")))?;
        Self::parse(&text, &name)
    }

    /// Parses and validates price-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let raw: PriceFile =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(file, e.to_string()))?;
        if raw.version != "custos/v1" {
            return Err(invalid(
                file,
                format!(
                    "unsupported version `{}`; expected `custos/v1`",
                    raw.version
                ),
            ));
        }
        let mut exact: HashMap<String, Vec<Price>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<Price>> = HashMap::new();
        for (i, e) in raw.prices.iter().enumerate() {
            let at = |field: &str, msg: String| {
                invalid(
                    file,
                    format!("prices[{i}] (model `{}`), field `{field}`: {msg}", e.model),
                )
            };
            if e.model.trim().is_empty() {
                return Err(at("model", "must not be empty".into()));
            }
            let day = NaiveDate::parse_from_str(&e.valid_from, "%Y-%m-%d").map_err(|err| {
                at(
                    "valid_from",
                    format!("`{}` is not YYYY-MM-DD: {err}", e.valid_from),
                )
            })?;
            let days = day.signed_duration_since(NaiveDate::default()).num_days();
            let check = |field: &str, v: f64| {
                if v.is_finite() && v >= 0.0 {
                    Ok(v)
                } else {
                    Err(at(
                        field,
                        format!("`{v}` must be a non-negative number (USD per million tokens)"),
                    ))
                }
            };
            let price = Price {
                valid_from_day: days,
                input: check("input", e.input)?,
                output: check("output", e.output)?,
                cache_read: check("cache_read", e.cache_read.unwrap_or(e.input))?,
                cache_write: check("cache_write", e.cache_write.unwrap_or(e.input))?,
                reasoning: check("reasoning", e.reasoning.unwrap_or(e.output))?,
            };
            let list = if e.prefix {
                prefixes.entry(e.model.clone()).or_default()
            } else {
                exact.entry(e.model.clone()).or_default()
            };
            if list.iter().any(|p| p.valid_from_day == days) {
                return Err(at(
                    "valid_from",
                    format!(
                        "a second entry for the same model starts on `{}`",
                        e.valid_from
                    ),
                ));
            }
            list.push(price);
        }
        for list in exact.values_mut().chain(prefixes.values_mut()) {
            list.sort_by_key(|p| p.valid_from_day);
        }
        let mut prefixes: Vec<(String, Vec<Price>)> = prefixes.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(Self { exact, prefixes })
    }

    /// The price of `model` on the day of `time_micros` (UTC): an exact entry first, else the
    /// longest matching prefix entry; the latest entry whose `valid_from` is on or before the day.
    pub fn lookup(&self, model: &str, time_micros: i64) -> Option<Price> {
        let day = time_micros.div_euclid(86_400_000_000);
        let pick = |list: &[Price]| list.iter().rev().find(|p| p.valid_from_day <= day).copied();
        if let Some(list) = self.exact.get(model) {
            return pick(list);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix.as_str()))
            .and_then(|(_, list)| pick(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
version: custos/v1
prices:
  - model: m1
    valid_from: 2026-01-01
    input: 2.0
    output: 8.0
    cache_read: 0.5
    cache_write: 2.5
    reasoning: 8.0
  - model: m1
    valid_from: 2026-06-01
    input: 1.0
    output: 4.0
  - model: fam-
    prefix: true
    valid_from: 2026-01-01
    input: 3.0
    output: 3.0
"#;

    fn micros(date: &str) -> i64 {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        d.signed_duration_since(NaiveDate::default()).num_days() * 86_400_000_000 + 1
    }

    #[test]
    fn prices_each_usage_type_once() {
        let t = PriceTable::parse(FILE, "prices.yaml").unwrap();
        let p = t.lookup("m1", micros("2026-03-01")).unwrap();
        let usage = Usage {
            input: Some(1_000_000),
            output: Some(500_000),
            cache_read: Some(400_000),
            cache_write: Some(100_000),
            reasoning: Some(200_000),
        };
        // 500k uncached × 2 + 400k × 0.5 + 100k × 2.5 + 300k × 8 + 200k × 8, per million.
        let want = 1.0 + 0.2 + 0.25 + 2.4 + 1.6;
        assert!((p.cost(&usage) - want).abs() < 1e-12);
    }

    proptest::proptest! {
        /// Cost is never negative, and adding tokens of any kind never makes it cheaper.
        #[test]
        fn cost_is_non_negative_and_monotone(
            input in proptest::option::of(-10i64..10_000_000),
            output in proptest::option::of(-10i64..10_000_000),
            cache_read in proptest::option::of(-10i64..10_000_000),
            cache_write in proptest::option::of(-10i64..10_000_000),
            reasoning in proptest::option::of(-10i64..10_000_000),
            extra in 0i64..1_000_000,
        ) {
            let t = PriceTable::parse(FILE, "prices.yaml").unwrap();
            let p = t.lookup("m1", micros("2026-03-01")).unwrap();
            let u = Usage { input, output, cache_read, cache_write, reasoning };
            let c = p.cost(&u);
            proptest::prop_assert!(c >= 0.0 && c.is_finite());
            let more_input = Usage { input: Some(input.unwrap_or(0).max(0) + extra), ..u };
            proptest::prop_assert!(p.cost(&more_input) >= c - 1e-12);
            let more_output = Usage { output: Some(output.unwrap_or(0).max(0) + extra), ..u };
            proptest::prop_assert!(p.cost(&more_output) >= c - 1e-12);
        }
    }

    #[test]
    fn validity_dates_and_defaults() {
        let t = PriceTable::parse(FILE, "prices.yaml").unwrap();
        assert!(t.lookup("m1", micros("2025-12-31")).is_none());
        let later = t.lookup("m1", micros("2026-06-01")).unwrap();
        assert_eq!(later.input, 1.0);
        assert_eq!(
            later.cache_read, 1.0,
            "cache read defaults to the input price"
        );
        assert_eq!(
            later.reasoning, 4.0,
            "reasoning defaults to the output price"
        );
        assert!(t.lookup("fam-large-2026", micros("2026-02-01")).is_some());
        assert!(t.lookup("other", micros("2026-02-01")).is_none());
    }

    #[test]
    fn errors_name_file_entry_and_field() {
        let bad = FILE.replace("input: 1.0", "input: -1.0");
        let e = PriceTable::parse(&bad, "rules/prices.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rules/prices.yaml") && e.contains("prices[1]") && e.contains("`input`"),
            "{e}"
        );
        let bad = FILE.replace("2026-06-01", "June 1st");
        let e = PriceTable::parse(&bad, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("valid_from") && e.contains("June 1st"), "{e}");
        let bad = FILE.replace("cache_write: 2.5", "cache_writes: 2.5");
        let e = PriceTable::parse(&bad, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("cache_writes") && e.contains("line"), "{e}");
        let dup = FILE.replace("2026-06-01", "2026-01-01");
        let e = PriceTable::parse(&dup, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("same model"), "{e}");
    }
}
