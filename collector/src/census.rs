//! What an export holds, counted on its bytes before anything is decoded.
//!
//! Decoding materialises every message: an empty span is 2 bytes of protobuf (or 3 of JSON) and
//! a few hundred bytes once decoded, so a 16 MiB body can ask for gigabytes. The census walks the
//! body without building anything, counts spans, attributes and every other message the decoder
//! would allocate, and refuses the export ([`Refused`]) when it holds more spans or attributes
//! than allowed or would decode to more than the budget. Only an export that passes is decoded,
//! and its [`Census::decoded_bytes`] is what it reserves of the memory budget.
//!
//! The protobuf walk reads the wire format directly (a varint key, then a varint, a fixed 32- or
//! 64-bit value or a length-delimited field): it is small, fixed by the protobuf specification,
//! and prost offers no supported API for it. A proptest checks its counts against prost's own
//! decoding. The JSON walk is serde over the same paths, ignoring every value it does not count.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// How much one export may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Spans in one export.
    pub max_spans: u64,
    /// Attributes directly on one span, event, link, scope or resource.
    pub max_attributes: u64,
    /// Bytes the decoded export may take in memory.
    pub max_decoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_spans: 65_536,
            max_attributes: 1_024,
            max_decoded_bytes: 256 << 20,
        }
    }
}

/// Nesting of array and key-value-list values deeper than this is refused (prost stops at 100).
pub const MAX_DEPTH: usize = 32;

/// Why an export is refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The body is not a well-formed message (HTTP 400, gRPC `INVALID_ARGUMENT`).
    Invalid(String),
    /// The export holds more than the limits allow (HTTP 413, gRPC `RESOURCE_EXHAUSTED`).
    TooMuch(String),
}

/// The messages an export holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Spans.
    pub spans: u64,
    /// `ResourceSpans` and their `Resource`s.
    pub resources: u64,
    /// `ScopeSpans` and their scopes.
    pub scopes: u64,
    /// Key-value pairs anywhere (attributes, nested lists).
    pub key_values: u64,
    /// Values inside arrays.
    pub array_values: u64,
    /// Events and links.
    pub events_links: u64,
    /// Entity references and their repeated strings.
    pub entity_refs: u64,
    /// Bytes of strings and byte fields.
    pub payload_bytes: u64,
}

impl Census {
    /// Memory the decoded export takes, about: every message's struct (twice, for the slack a
    /// growing `Vec` leaves) plus its strings.
    pub fn decoded_bytes(&self) -> u64 {
        // A span holds its status inline.
        let structs = self.spans * size_of::<Span>() as u64
            + self.resources * (size_of::<ResourceSpans>() + size_of::<Resource>()) as u64
            + self.scopes * (size_of::<ScopeSpans>() + size_of::<InstrumentationScope>()) as u64
            // A key-value holds its value inline (a nested list or array is a `Vec` in it).
            + self.key_values * size_of::<KeyValue>() as u64
            + self.array_values * size_of::<AnyValue>() as u64
            + self.events_links * size_of::<Event>().max(size_of::<Link>()) as u64
            + self.entity_refs * size_of::<EntityRef>() as u64;
        structs.saturating_mul(2).saturating_add(self.payload_bytes)
    }

    pub(crate) fn within(&self, limits: &Limits) -> Result<(), Refused> {
        if self.spans > limits.max_spans {
            return Err(Refused::TooMuch(format!(
                "the export holds more than {} spans, the most one request may carry; send \
                 smaller batches (the OpenTelemetry SDK's default batch is 512)",
                limits.max_spans
            )));
        }
        let decoded = self.decoded_bytes();
        if decoded > limits.max_decoded_bytes {
            return Err(Refused::TooMuch(format!(
                "the export would take about {decoded} bytes once decoded, over the limit of {} \
                 bytes; send smaller batches",
                limits.max_decoded_bytes
            )));
        }
        Ok(())
    }

    pub(crate) fn attributes_within(
        &self,
        n: u64,
        of: &str,
        limits: &Limits,
    ) -> Result<(), Refused> {
        if n > limits.max_attributes {
            return Err(Refused::TooMuch(format!(
                "a {of} has more than {} attributes, the most allowed; drop attributes at the \
                 source (the OpenTelemetry SDK keeps 128 by default)",
                limits.max_attributes
            )));
        }
        Ok(())
    }
}

/// Counts a protobuf `ExportTraceServiceRequest`.
pub fn protobuf(body: &[u8], limits: &Limits) -> Result<Census, Refused> {
    let mut w = Walk {
        census: Census::default(),
        limits,
        base: body.as_ptr() as usize,
    };
    w.request(body)?;
    w.census.within(limits)?;
    Ok(w.census)
}

/// Counts an OTLP/JSON `ExportTraceServiceRequest`.
pub fn json(body: &[u8], limits: &Limits) -> Result<Census, Refused> {
    crate::census_json::count(body, limits)
}

/// One field of a protobuf message.
enum Field<'a> {
    /// A varint or fixed-width scalar (nothing allocated).
    Scalar,
    /// A length-delimited field: a string, bytes or a nested message.
    Len(&'a [u8]),
}

struct Walk<'l> {
    census: Census,
    limits: &'l Limits,
    base: usize,
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

impl Walk<'_> {
    fn at(&self, buf: &[u8]) -> usize {
        (buf.as_ptr() as usize).saturating_sub(self.base)
    }

    /// Calls `f` with each field of the message in `buf`.
    fn fields<'a>(
        &mut self,
        mut buf: &'a [u8],
        mut f: impl FnMut(&mut Self, u32, Field<'a>) -> Result<(), Refused>,
    ) -> Result<(), Refused> {
        while !buf.is_empty() {
            let offset = self.at(buf);
            let bad = |what: &str| {
                Refused::Invalid(format!(
                    "cannot decode protobuf ExportTraceServiceRequest: {what} at byte {offset}"
                ))
            };
            let key = varint(&mut buf).ok_or_else(|| bad("a truncated field key"))?;
            let number = u32::try_from(key >> 3).map_err(|_| bad("a field number too large"))?;
            if number == 0 {
                return Err(bad("field number 0"));
            }
            let field = match key & 7 {
                0 => {
                    varint(&mut buf).ok_or_else(|| bad("a truncated varint"))?;
                    Field::Scalar
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    buf = buf
                        .get(n..)
                        .ok_or_else(|| bad("a truncated fixed-width value"))?;
                    Field::Scalar
                }
                2 => {
                    let len = varint(&mut buf).ok_or_else(|| bad("a truncated length"))?;
                    let len = usize::try_from(len).map_err(|_| bad("a length too large"))?;
                    if len > buf.len() {
                        return Err(bad("a length past the end of the message"));
                    }
                    let (inner, rest) = buf.split_at(len);
                    buf = rest;
                    Field::Len(inner)
                }
                t => return Err(bad(&format!("wire type {t}, which OTLP does not use"))),
            };
            f(self, number, field)?;
        }
        Ok(())
    }

    fn payload(&mut self, field: &Field<'_>) {
        if let Field::Len(b) = field {
            self.census.payload_bytes += b.len() as u64;
        }
    }

    fn request(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => w.resource_spans(b),
            _ => Ok(()),
        })
    }

    fn resource_spans(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.resources += 1;
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => w.resource(b),
            (2, Field::Len(b)) => w.scope_spans(b),
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })
    }

    fn resource(&mut self, buf: &[u8]) -> Result<(), Refused> {
        let mut attributes = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => {
                attributes += 1;
                w.key_value(b, 0)
            }
            (3, Field::Len(b)) => {
                w.census.entity_refs += 1;
                w.fields(b, |w, n, f| {
                    // `id_keys` and `description_keys` are repeated strings: each one a `String`.
                    if matches!(n, 3 | 4) {
                        w.census.entity_refs += 1;
                    }
                    w.payload(&f);
                    Ok(())
                })
            }
            _ => Ok(()),
        })?;
        self.census
            .attributes_within(attributes, "resource", self.limits)
    }

    fn scope_spans(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.scopes += 1;
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => w.holder(b, "scope", 3),
            (2, Field::Len(b)) => w.span(b),
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })
    }

    fn span(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.spans += 1;
        if self.census.spans > self.limits.max_spans {
            return self.census.within(self.limits);
        }
        let mut attributes = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (9, Field::Len(b)) => {
                attributes += 1;
                w.key_value(b, 0)
            }
            (11, Field::Len(b)) => {
                w.census.events_links += 1;
                w.holder(b, "span event", 3)
            }
            (13, Field::Len(b)) => {
                w.census.events_links += 1;
                w.holder(b, "span link", 4)
            }
            // `status` (15) is counted with the span; its message is a string.
            (15, Field::Len(b)) => w.fields(b, |w, _, f| {
                w.payload(&f);
                Ok(())
            }),
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })?;
        self.census
            .attributes_within(attributes, "span", self.limits)
    }

    /// A scope, event or link: strings and attributes in field `attrs`.
    fn holder(&mut self, buf: &[u8], what: &str, attrs: u32) -> Result<(), Refused> {
        let mut attributes = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (n, Field::Len(b)) if n == attrs => {
                attributes += 1;
                w.key_value(b, 0)
            }
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })?;
        self.census.attributes_within(attributes, what, self.limits)
    }

    fn key_value(&mut self, buf: &[u8], depth: usize) -> Result<(), Refused> {
        self.census.key_values += 1;
        self.fields(buf, |w, n, f| match (n, f) {
            (2, Field::Len(b)) => w.any_value(b, depth),
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })
    }

    fn any_value(&mut self, buf: &[u8], depth: usize) -> Result<(), Refused> {
        if depth >= MAX_DEPTH {
            return Err(Refused::Invalid(format!(
                "an attribute value nests arrays or lists deeper than {MAX_DEPTH} levels"
            )));
        }
        self.fields(buf, |w, n, f| match (n, f) {
            (5, Field::Len(b)) => w.fields(b, |w, n, f| match (n, f) {
                (1, Field::Len(b)) => {
                    w.census.array_values += 1;
                    w.any_value(b, depth + 1)
                }
                _ => Ok(()),
            }),
            (6, Field::Len(b)) => w.fields(b, |w, n, f| match (n, f) {
                (1, Field::Len(b)) => w.key_value(b, depth + 1),
                _ => Ok(()),
            }),
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })?;
        // Every 64 KiB of nested values, see whether the budget is already gone.
        if self.census.key_values.is_multiple_of(65_536) {
            self.census.within(self.limits)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{KeyValueList, any_value};
    use proptest::prelude::*;
    use prost::Message as _;

    fn unlimited() -> Limits {
        Limits {
            max_spans: u64::MAX,
            max_attributes: u64::MAX,
            max_decoded_bytes: u64::MAX,
        }
    }

    /// What prost decodes, counted the census's way.
    fn counted(req: &ExportTraceServiceRequest) -> (u64, u64, u64) {
        fn kvs(v: &[KeyValue]) -> u64 {
            v.iter()
                .map(|kv| {
                    1 + match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::KvlistValue(l)) => kvs(&l.values),
                        _ => 0,
                    }
                })
                .sum()
        }
        let mut spans = 0;
        let mut key_values = 0;
        let mut events_links = 0;
        for rs in &req.resource_spans {
            key_values += rs.resource.as_ref().map_or(0, |r| kvs(&r.attributes));
            for ss in &rs.scope_spans {
                key_values += ss.scope.as_ref().map_or(0, |s| kvs(&s.attributes));
                for s in &ss.spans {
                    spans += 1;
                    key_values += kvs(&s.attributes);
                    events_links += (s.events.len() + s.links.len()) as u64;
                    key_values += s.events.iter().map(|e| kvs(&e.attributes)).sum::<u64>();
                    key_values += s.links.iter().map(|l| kvs(&l.attributes)).sum::<u64>();
                }
            }
        }
        (spans, key_values, events_links)
    }

    fn kv(key: String, nested: usize) -> KeyValue {
        let mut value = any_value::Value::StringValue(key.clone());
        for _ in 0..nested {
            value = any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(AnyValue { value: Some(value) }),
                    ..Default::default()
                }],
            });
        }
        KeyValue {
            key,
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn arb_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let span = (
            proptest::collection::vec(("[a-z]{0,6}", 0usize..3), 0..4),
            0usize..3,
            0usize..3,
        )
            .prop_map(|(attrs, events, links)| Span {
                name: "s".into(),
                attributes: attrs.into_iter().map(|(k, n)| kv(k, n)).collect(),
                events: (0..events)
                    .map(|_| Event {
                        attributes: vec![kv("e".into(), 0)],
                        ..Default::default()
                    })
                    .collect(),
                links: (0..links).map(|_| Link::default()).collect(),
                ..Default::default()
            });
        let scope = proptest::collection::vec(span, 0..5).prop_map(|spans| ScopeSpans {
            spans,
            scope: Some(InstrumentationScope {
                attributes: vec![kv("scope".into(), 0)],
                ..Default::default()
            }),
            ..Default::default()
        });
        proptest::collection::vec(proptest::collection::vec(scope, 0..3), 0..3).prop_map(|rs| {
            ExportTraceServiceRequest {
                resource_spans: rs
                    .into_iter()
                    .map(|scope_spans| ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![kv("service.name".into(), 1)],
                            ..Default::default()
                        }),
                        scope_spans,
                        ..Default::default()
                    })
                    .collect(),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The protobuf and JSON walks count what prost and serde decode.
        #[test]
        fn counts_match_the_decoders(req in arb_request()) {
            let want = counted(&req);
            let pb = protobuf(&req.encode_to_vec(), &unlimited()).unwrap();
            prop_assert_eq!((pb.spans, pb.key_values, pb.events_links), want);
            let js = json(&serde_json::to_vec(&req).unwrap(), &unlimited()).unwrap();
            prop_assert_eq!((js.spans, js.key_values, js.events_links), want);
        }

        /// Arbitrary bytes are counted or refused, never a panic; what the census accepts with
        /// limits, it accepts without them.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let limits = Limits { max_spans: 4, max_attributes: 2, max_decoded_bytes: 1 << 16 };
            if protobuf(&body, &limits).is_ok() {
                prop_assert!(protobuf(&body, &unlimited()).is_ok());
            }
            let _ = json(&body, &limits);
        }
    }

    #[test]
    fn empty_spans_are_refused_by_count_before_decoding() {
        // 2 bytes per span: one million empty spans in 2 MB.
        let mut scope = Vec::new();
        for _ in 0..1_000_000 {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut rs = vec![0x12];
        push_len(&mut rs, scope.len());
        rs.extend_from_slice(&scope);
        let mut body = vec![0x0a];
        push_len(&mut body, rs.len());
        body.extend_from_slice(&rs);
        let err = protobuf(&body, &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::TooMuch(m) if m.contains("65536 spans")),
            "{err:?}"
        );
        let json_body = format!(
            "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
            "{},".repeat(1_000_000)
        );
        let err = json(json_body.as_bytes(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::TooMuch(m) if m.contains("spans")),
            "{err:?}"
        );
    }

    fn push_len(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    #[test]
    fn attributes_per_span_and_nesting_are_bounded() {
        let span = Span {
            attributes: (0..2_000).map(|i| kv(format!("k{i}"), 0)).collect(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let err = protobuf(&req.encode_to_vec(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::TooMuch(m) if m.contains("1024 attributes")),
            "{err:?}"
        );
        let err = json(&serde_json::to_vec(&req).unwrap(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::TooMuch(m) if m.contains("1024 attributes")),
            "{err:?}"
        );
        let deep = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("deep".into(), 40)],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let err = protobuf(&deep.encode_to_vec(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::Invalid(m) if m.contains("deeper than 32")),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_body_is_invalid_with_its_offset() {
        let err = protobuf(&[0x0a, 0x05, 0x12], &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, Refused::Invalid(m) if m.contains("past the end") && m.contains("byte 0")),
            "{err:?}"
        );
    }
}
