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
    /// Bytes of strings and byte fields, with the allocator's overhead for each.
    pub payload_bytes: u64,
    /// Bytes of the first allocation of each non-empty list (a `Vec` starts with room for 4).
    pub list_bytes: u64,
    /// Bytes OTLP/JSON attribute values take while decoding: serde buffers each value once per
    /// enclosing value (`AnyValue` is decoded through `serde(flatten)`).
    pub json_copies: u64,
}

/// What one allocation costs the allocator beside its bytes.
const MALLOC: u64 = 16;

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
        structs
            .saturating_mul(2)
            .saturating_add(self.payload_bytes)
            .saturating_add(self.list_bytes)
            .saturating_add(self.json_copies)
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
        if let Field::Len(b) = field
            && !b.is_empty()
        {
            self.census.payload_bytes += b.len() as u64 + MALLOC;
        }
    }

    /// The first element of list `field` in one message: the list's first allocation, room for
    /// four `child`-sized elements.
    fn list(&mut self, seen: &mut u32, field: u32, child: usize) {
        let bit = 1u32 << (field % 32);
        if *seen & bit == 0 {
            *seen |= bit;
            self.census.list_bytes += 4 * child as u64 + MALLOC;
        }
    }

    fn request(&mut self, buf: &[u8]) -> Result<(), Refused> {
        let mut seen = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => {
                w.list(&mut seen, 1, size_of::<ResourceSpans>());
                w.resource_spans(b)
            }
            _ => Ok(()),
        })
    }

    fn resource_spans(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.resources += 1;
        let (mut seen, mut attributes) = (0, 0);
        // prost merges a `resource` sent twice into one: its attributes add up.
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => w.resource(b, &mut attributes),
            (2, Field::Len(b)) => {
                w.list(&mut seen, 2, size_of::<ScopeSpans>());
                w.scope_spans(b)
            }
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })?;
        self.census
            .attributes_within(attributes, "resource", self.limits)
    }

    fn resource(&mut self, buf: &[u8], attributes: &mut u64) -> Result<(), Refused> {
        let mut seen = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => {
                *attributes += 1;
                w.list(&mut seen, 1, size_of::<KeyValue>());
                w.key_value(b, 0)
            }
            (3, Field::Len(b)) => {
                w.census.entity_refs += 1;
                w.list(&mut seen, 3, size_of::<EntityRef>());
                let mut keys = 0;
                w.fields(b, |w, n, f| {
                    // `id_keys` and `description_keys` are repeated strings: each one a `String`.
                    if matches!(n, 3 | 4) {
                        w.census.entity_refs += 1;
                        w.list(&mut keys, n, size_of::<String>());
                    }
                    w.payload(&f);
                    Ok(())
                })
            }
            _ => Ok(()),
        })
    }

    fn scope_spans(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.scopes += 1;
        let (mut seen, mut attributes) = (0, 0);
        // As with resources, a `scope` sent twice is merged into one.
        self.fields(buf, |w, n, f| match (n, f) {
            (1, Field::Len(b)) => w.holder(b, 3, &mut attributes),
            (2, Field::Len(b)) => {
                w.list(&mut seen, 2, size_of::<Span>());
                w.span(b)
            }
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })?;
        self.census
            .attributes_within(attributes, "scope", self.limits)
    }

    fn span(&mut self, buf: &[u8]) -> Result<(), Refused> {
        self.census.spans += 1;
        if self.census.spans > self.limits.max_spans {
            return self.census.within(self.limits);
        }
        let (mut seen, mut attributes) = (0, 0);
        self.fields(buf, |w, n, f| match (n, f) {
            (9, Field::Len(b)) => {
                attributes += 1;
                w.list(&mut seen, 9, size_of::<KeyValue>());
                w.key_value(b, 0)
            }
            (11, Field::Len(b)) => {
                w.census.events_links += 1;
                w.list(&mut seen, 11, size_of::<Event>());
                let mut own = 0;
                w.holder(b, 3, &mut own)?;
                w.census.attributes_within(own, "span event", w.limits)
            }
            (13, Field::Len(b)) => {
                w.census.events_links += 1;
                w.list(&mut seen, 13, size_of::<Link>());
                let mut own = 0;
                w.holder(b, 4, &mut own)?;
                w.census.attributes_within(own, "span link", w.limits)
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

    /// A scope, event or link: strings, and attributes in field `attrs` (added to `attributes`).
    fn holder(&mut self, buf: &[u8], attrs: u32, attributes: &mut u64) -> Result<(), Refused> {
        let mut seen = 0;
        self.fields(buf, |w, n, f| match (n, f) {
            (n, Field::Len(b)) if n == attrs => {
                *attributes += 1;
                w.list(&mut seen, n, size_of::<KeyValue>());
                w.key_value(b, 0)
            }
            (_, f) => {
                w.payload(&f);
                Ok(())
            }
        })
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
            (5, Field::Len(b)) => {
                let mut seen = 0;
                w.fields(b, |w, n, f| match (n, f) {
                    (1, Field::Len(b)) => {
                        w.census.array_values += 1;
                        w.list(&mut seen, 1, size_of::<AnyValue>());
                        w.any_value(b, depth + 1)
                    }
                    _ => Ok(()),
                })
            }
            (6, Field::Len(b)) => {
                let mut seen = 0;
                w.fields(b, |w, n, f| match (n, f) {
                    (1, Field::Len(b)) => {
                        w.list(&mut seen, 1, size_of::<KeyValue>());
                        w.key_value(b, depth + 1)
                    }
                    _ => Ok(()),
                })
            }
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
mod tests;
