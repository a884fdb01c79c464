//! Attribute values: typed reads for the lifted columns, text renderings for the maps, and
//! the enum and date renderings of the span's own fields.

use std::collections::HashMap;
use std::sync::OnceLock;

use arrow::array::{MapBuilder, MapFieldNames, StringBuilder};
use custos_schema::{CONVENTIONS, ValueKind};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use crate::{Error, Result};

/// Typed value extracted from an attribute.
#[derive(Debug, Clone, Copy)]
pub(super) enum Typed<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

pub(super) fn typed<'a>(v: &'a AnyValue, kind: ValueKind) -> Option<Typed<'a>> {
    match (kind, v.value.as_ref()?) {
        (ValueKind::Str, Value::StringValue(s)) => Some(Typed::Str(s)),
        (ValueKind::Int, Value::IntValue(i)) => Some(Typed::Int(*i)),
        (ValueKind::Float, Value::DoubleValue(d)) => Some(Typed::Float(*d)),
        (ValueKind::Float, Value::IntValue(i)) => Some(Typed::Float(*i as f64)),
        (ValueKind::Bool, Value::BoolValue(b)) => Some(Typed::Bool(*b)),
        _ => None,
    }
}

/// Attribute key → (convention index, preference rank).
pub(super) fn key_index() -> &'static HashMap<&'static str, (usize, usize)> {
    static INDEX: OnceLock<HashMap<&'static str, (usize, usize)>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut m = HashMap::new();
        for (ci, c) in CONVENTIONS.iter().enumerate() {
            for (rank, k) in c.keys.iter().enumerate() {
                m.insert(*k, (ci, rank));
            }
        }
        m
    })
}

/// Which first bytes any convention key starts with.
pub(super) fn first_bytes() -> &'static [bool; 256] {
    static FIRST: OnceLock<[bool; 256]> = OnceLock::new();
    FIRST.get_or_init(|| {
        let mut t = [false; 256];
        for c in CONVENTIONS {
            for k in c.keys {
                if let Some(b) = k.as_bytes().first() {
                    t[*b as usize] = true;
                }
            }
        }
        t
    })
}

/// For each convention, the best-ranked attribute of the right type among `attrs`.
pub(super) fn lift<'a>(attrs: &'a [KeyValue], out: &mut [Option<(usize, Typed<'a>)>]) {
    let index = key_index();
    for kv in attrs {
        // Most keys that fill no column are skipped by their first byte, without hashing.
        let first = kv.key.as_bytes().first().copied().unwrap_or(0);
        if !first_bytes()[first as usize] {
            continue;
        }
        let Some(&(ci, rank)) = index.get(kv.key.as_str()) else {
            continue;
        };
        let Some(v) = kv.value.as_ref() else { continue };
        let Some(t) = typed(v, CONVENTIONS[ci].kind) else {
            continue;
        };
        match out[ci] {
            Some((best, _)) if best <= rank => {}
            _ => out[ci] = Some((rank, t)),
        }
    }
}

/// Renders an attribute value as text for the attribute maps; see docs/conventions.md.
pub fn render_value(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => base64_encode(b),
        // Arrays and key-value lists keep their OTLP/JSON form.
        other => serde_json::to_string(&AnyValue {
            value: Some(other.clone()),
        })
        .unwrap_or_default(),
    })
}

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    map_builder_with(0, 0)
}

/// A map builder with room for `entries` entries of `bytes` text in all.
pub(super) fn map_builder_with(
    entries: usize,
    bytes: usize,
) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::with_capacity(entries, bytes / 2),
        StringBuilder::with_capacity(entries, bytes / 2),
    )
}

/// Appends one attribute value's text form without allocating for strings and scalars.
pub(super) fn append_value(b: &mut StringBuilder, v: Option<&AnyValue>, buf: &mut String) {
    use std::fmt::Write as _;
    let Some(value) = v.and_then(|v| v.value.as_ref()) else {
        b.append_null();
        return;
    };
    match value {
        Value::StringValue(s) => b.append_value(s),
        Value::BoolValue(x) => b.append_value(if *x { "true" } else { "false" }),
        Value::IntValue(i) => {
            buf.clear();
            let _ = write!(buf, "{i}");
            b.append_value(buf.as_str());
        }
        Value::DoubleValue(d) => {
            buf.clear();
            let _ = write!(buf, "{d}");
            b.append_value(buf.as_str());
        }
        _ => match v.and_then(render_value) {
            Some(text) => b.append_value(text),
            None => b.append_null(),
        },
    }
}

pub(super) fn append_map(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    attrs: &[KeyValue],
    buf: &mut String,
) -> Result<()> {
    for kv in attrs {
        b.keys().append_value(&kv.key);
        append_value(b.values(), kv.value.as_ref(), buf);
    }
    b.append(true).map_err(|e| Error::Internal(e.to_string()))
}

pub(super) fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

pub(super) fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// Days since the epoch → `YYYY-MM-DD` (proleptic Gregorian, civil-from-days).
pub(super) fn date_string(unix_nanos: i64) -> String {
    let days = unix_nanos.div_euclid(86_400_000_000_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}
