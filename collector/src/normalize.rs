//! OTLP trace data → Arrow batches with the `spans` schema.
//!
//! One file on purpose (~850 lines): one mapping from OTLP to the `spans` columns, with its tests;
//! every column is filled in one pass over the spans.
//!
//! Validation rejects single spans (an invalid trace or span id, a timestamp past the year 2262)
//! and keeps the rest: the caller reports rejected spans as an OTLP partial success. Attribute
//! values are never rejected: a value of the wrong type for a typed column stays in the raw
//! attribute map and leaves the typed column null.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListArray, MapBuilder, MapFieldNames,
    StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::record_batch::RecordBatch;
use custos_schema::{
    CONVENTIONS, SERVICE_NAME_KEY, SpanId, TraceId, ValueKind, col, event_fields, event_item_field,
    link_fields, link_item_field, spans_schema,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{Span, span};

use crate::{Error, Result};

/// The spans of one export, converted, and what was rejected.
#[derive(Debug)]
pub struct Normalized {
    /// Accepted spans in the `spans` schema; `None` when no span was accepted.
    pub batch: Option<RecordBatch>,
    /// Number of spans rejected.
    pub rejected: u64,
    /// A message describing the first rejections, for `partial_success.error_message`.
    pub message: Option<String>,
}

/// Typed value extracted from an attribute.
#[derive(Debug, Clone, Copy)]
enum Typed<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn typed<'a>(v: &'a AnyValue, kind: ValueKind) -> Option<Typed<'a>> {
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
fn key_index() -> &'static HashMap<&'static str, (usize, usize)> {
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
fn first_bytes() -> &'static [bool; 256] {
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
fn lift<'a>(attrs: &'a [KeyValue], out: &mut [Option<(usize, Typed<'a>)>]) {
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

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    map_builder_with(0, 0)
}

/// A map builder with room for `entries` entries of `bytes` text in all.
fn map_builder_with(entries: usize, bytes: usize) -> MapBuilder<StringBuilder, StringBuilder> {
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
fn append_value(b: &mut StringBuilder, v: Option<&AnyValue>, buf: &mut String) {
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

fn append_map(
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

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// Days since the epoch → `YYYY-MM-DD` (proleptic Gregorian, civil-from-days).
fn date_string(unix_nanos: i64) -> String {
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

/// Why a span was rejected.
fn validate(
    span: &Span,
) -> std::result::Result<(TraceId, SpanId, Option<SpanId>, i64, i64), String> {
    let trace_id = TraceId::from_bytes(&span.trace_id).map_err(|e| e.to_string())?;
    let span_id = SpanId::from_bytes(&span.span_id).map_err(|e| e.to_string())?;
    let parent = if span.parent_span_id.is_empty() || span.parent_span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(
            SpanId::from_bytes(&span.parent_span_id)
                .map_err(|e| format!("invalid parent span id: {e}"))?,
        )
    };
    let start = i64::try_from(span.start_time_unix_nano).map_err(|_| {
        format!(
            "start_time_unix_nano `{}` is past the year 2262",
            span.start_time_unix_nano
        )
    })?;
    let end = i64::try_from(span.end_time_unix_nano).map_err(|_| {
        format!(
            "end_time_unix_nano `{}` is past the year 2262",
            span.end_time_unix_nano
        )
    })?;
    Ok((trace_id, span_id, parent, start, end))
}

struct Columns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: Int64Builder,
    name: StringBuilder,
    kind: StringBuilder,
    service_name: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    end_time: TimestampMicrosecondBuilder,
    start_nanos: Int64Builder,
    end_nanos: Int64Builder,
    duration_ms: Float64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    /// One builder per convention, in [`CONVENTIONS`] order.
    lifted: Vec<Lifted>,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    resource_attributes: MapBuilder<StringBuilder, StringBuilder>,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    events: Nested,
    links: Nested,
    dropped_attributes: Int64Builder,
    dropped_events: Int64Builder,
    dropped_links: Int64Builder,
    date: StringBuilder,
}

enum Lifted {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl Lifted {
    fn append(&mut self, v: Option<Typed<'_>>) {
        match (self, v) {
            (Lifted::Str(b), Some(Typed::Str(s))) => b.append_value(s),
            (Lifted::Int(b), Some(Typed::Int(i))) => b.append_value(i),
            (Lifted::Float(b), Some(Typed::Float(f))) => b.append_value(f),
            (Lifted::Bool(b), Some(Typed::Bool(x))) => b.append_value(x),
            (Lifted::Str(b), _) => b.append_null(),
            (Lifted::Int(b), _) => b.append_null(),
            (Lifted::Float(b), _) => b.append_null(),
            (Lifted::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Lifted::Str(b) => Arc::new(b.finish()),
            Lifted::Int(b) => Arc::new(b.finish()),
            Lifted::Float(b) => Arc::new(b.finish()),
            Lifted::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Children of the `events` or `links` list, built flat with list offsets.
struct Nested {
    offsets: Vec<i32>,
    time_or_trace: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    name_or_state: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    dropped: Int64Builder,
    flags: Int64Builder,
}

impl Nested {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            time_or_trace: Int64Builder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            name_or_state: StringBuilder::new(),
            attributes: map_builder(),
            dropped: Int64Builder::new(),
            flags: Int64Builder::new(),
        }
    }

    fn len(&self) -> i32 {
        self.offsets.last().copied().unwrap_or(0)
    }

    fn finish_events(&mut self) -> Result<ArrayRef> {
        let values = StructArray::try_new(
            event_fields(),
            vec![
                Arc::new(self.time_or_trace.finish()) as ArrayRef,
                Arc::new(self.name_or_state.finish()),
                Arc::new(self.attributes.finish()),
                Arc::new(self.dropped.finish()),
            ],
            None,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.finish_list(Arc::new(event_item_field()), Arc::new(values))
    }

    fn finish_links(&mut self) -> Result<ArrayRef> {
        let values = StructArray::try_new(
            link_fields(),
            vec![
                Arc::new(self.trace_id.finish()) as ArrayRef,
                Arc::new(self.span_id.finish()),
                Arc::new(self.name_or_state.finish()),
                Arc::new(self.attributes.finish()),
                Arc::new(self.dropped.finish()),
                Arc::new(self.flags.finish()),
            ],
            None,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.finish_list(Arc::new(link_item_field()), Arc::new(values))
    }

    fn finish_list(
        &mut self,
        field: Arc<arrow::datatypes::Field>,
        values: ArrayRef,
    ) -> Result<ArrayRef> {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let list = ListArray::try_new(field, OffsetBuffer::new(offsets.into()), values, None)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Arc::new(list))
    }
}

impl Columns {
    /// Builders sized for `n` spans whose request is `bytes` long, so they rarely reallocate.
    fn with_capacity(n: usize, bytes: usize) -> Self {
        let s = |per_row: usize| StringBuilder::with_capacity(n, n * per_row);
        let i = || Int64Builder::with_capacity(n);
        let lifted = CONVENTIONS
            .iter()
            .map(|c| match c.kind {
                ValueKind::Str => Lifted::Str(s(16)),
                ValueKind::Int => Lifted::Int(i()),
                ValueKind::Float => Lifted::Float(Float64Builder::with_capacity(n)),
                ValueKind::Bool => Lifted::Bool(BooleanBuilder::with_capacity(n)),
            })
            .collect();
        Self {
            trace_id: s(32),
            span_id: s(16),
            parent_span_id: s(16),
            trace_state: s(0),
            flags: i(),
            name: s(24),
            kind: s(8),
            service_name: s(16),
            start_time: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            end_time: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            start_nanos: i(),
            end_nanos: i(),
            duration_ms: Float64Builder::with_capacity(n),
            status_code: s(5),
            status_message: s(0),
            lifted,
            attributes: map_builder_with(n * 16, bytes),
            resource_attributes: map_builder_with(n * 4, n * 128),
            scope_name: s(16),
            scope_version: s(8),
            events: Nested::new(),
            links: Nested::new(),
            dropped_attributes: i(),
            dropped_events: i(),
            dropped_links: i(),
            date: s(10),
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let schema = spans_schema();
        let mut lifted: HashMap<&str, ArrayRef> = CONVENTIONS
            .iter()
            .zip(self.lifted.iter_mut())
            .map(|(c, b)| (c.column, b.finish()))
            .collect();
        let mut take = |name: &str| -> Result<ArrayRef> {
            lifted
                .remove(name)
                .ok_or_else(|| Error::Internal(format!("no builder for column `{name}`")))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.start_nanos.finish()),
            Arc::new(self.end_nanos.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            take(col::WORKFLOW)?,
            take(col::RUN_ID)?,
            take(col::STEP)?,
            take(col::STEP_KIND)?,
            take(col::MODEL)?,
            take(col::PROVIDER)?,
            take(col::MODEL_VERSION)?,
            take(col::PROMPT_VERSION)?,
            take(col::INPUT_TOKENS)?,
            take(col::OUTPUT_TOKENS)?,
            take(col::CACHE_READ_TOKENS)?,
            take(col::CACHE_WRITE_TOKENS)?,
            take(col::REASONING_TOKENS)?,
            take(col::COST_USD)?,
            take(col::CONFIDENCE)?,
            take(col::DECISION)?,
            take(col::HUMAN_OVERRIDE)?,
            take(col::HUMAN_REVIEWER)?,
            take(col::REVIEW_MS)?,
            take(col::OUTCOME)?,
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.events.finish_events()?,
            self.links.finish_links()?,
            Arc::new(self.dropped_attributes.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.dropped_links.finish()),
            Arc::new(self.date.finish()),
        ];
        RecordBatch::try_new(schema, columns).map_err(|e| Error::Internal(e.to_string()))
    }
}

fn opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

impl Nested {
    /// A span's events, then the offset that ends its list.
    fn append_events(&mut self, events: &[span::Event], buf: &mut String) -> Result<()> {
        for ev in events {
            self.time_or_trace
                .append_value(i64::try_from(ev.time_unix_nano).unwrap_or(i64::MAX));
            self.name_or_state.append_value(&ev.name);
            append_map(&mut self.attributes, &ev.attributes, buf)?;
            self.dropped
                .append_value(i64::from(ev.dropped_attributes_count));
        }
        let n = self.len() + events.len() as i32;
        self.offsets.push(n);
        Ok(())
    }

    /// A span's links (ids as lowercase hex), then the offset that ends its list.
    fn append_links(&mut self, links: &[span::Link], buf: &mut String) -> Result<()> {
        for link in links {
            match TraceId::from_bytes(&link.trace_id) {
                Ok(t) => {
                    let mut h = String::with_capacity(32);
                    t.write_hex(&mut h);
                    self.trace_id.append_value(&h);
                }
                Err(_) => self.trace_id.append_value(hex::encode(&link.trace_id)),
            }
            self.span_id.append_value(hex::encode(&link.span_id));
            opt_str(&mut self.name_or_state, &link.trace_state);
            append_map(&mut self.attributes, &link.attributes, buf)?;
            self.dropped
                .append_value(i64::from(link.dropped_attributes_count));
            self.flags.append_value(i64::from(link.flags));
        }
        let n = self.len() + links.len() as i32;
        self.offsets.push(n);
        Ok(())
    }
}

impl Columns {
    /// The ids as lowercase hex, written once into `hex`; returns where the trace id ends in it
    /// (the run id of a span that carries none).
    fn append_ids(
        &mut self,
        trace_id: TraceId,
        span_id: SpanId,
        parent: Option<SpanId>,
        hex: &mut String,
    ) -> usize {
        hex.clear();
        trace_id.write_hex(hex);
        self.trace_id.append_value(&*hex);
        let trace_hex_end = hex.len();
        span_id.write_hex(hex);
        self.span_id.append_value(&hex[trace_hex_end..]);
        match parent {
            Some(p) => {
                let at = hex.len();
                p.write_hex(hex);
                self.parent_span_id.append_value(&hex[at..]);
            }
            None => self.parent_span_id.append_null(),
        }
        trace_hex_end
    }

    /// The lifted columns: the span's value, else the resource's; a span without a run id gets
    /// its trace id (`trace_hex`).
    fn append_lifted(
        &mut self,
        span_lift: &[Option<(usize, Typed<'_>)>],
        res_lift: &[Option<(usize, Typed<'_>)>],
        run_id_idx: usize,
        trace_hex: &str,
    ) {
        for (ci, b) in self.lifted.iter_mut().enumerate() {
            let v = span_lift[ci].or(res_lift[ci]).map(|(_, t)| t);
            if ci == run_id_idx && v.is_none() {
                b.append(Some(Typed::Str(trace_hex)));
            } else {
                b.append(v);
            }
        }
    }

    /// The span's own fields: name, kind, service, times, status and dropped counts.
    fn append_span(&mut self, span: &Span, service: Option<Typed<'_>>, start: i64, end: i64) {
        self.dropped_attributes
            .append_value(i64::from(span.dropped_attributes_count));
        self.dropped_events
            .append_value(i64::from(span.dropped_events_count));
        self.dropped_links
            .append_value(i64::from(span.dropped_links_count));
        opt_str(&mut self.trace_state, &span.trace_state);
        self.flags.append_value(i64::from(span.flags));
        self.name.append_value(&span.name);
        self.kind.append_value(span_kind(span.kind));
        match service {
            Some(Typed::Str(s)) => self.service_name.append_value(s),
            _ => self.service_name.append_null(),
        }
        self.start_time.append_value(start.div_euclid(1000));
        self.end_time.append_value(end.div_euclid(1000));
        self.start_nanos.append_value(start);
        self.end_nanos.append_value(end);
        self.duration_ms
            .append_value((end as f64 - start as f64) / 1e6);
        let (code, message) = span
            .status
            .as_ref()
            .map(|s| (s.code, s.message.as_str()))
            .unwrap_or((0, ""));
        self.status_code.append_value(status_code(code));
        opt_str(&mut self.status_message, message);
    }

    /// The partition date of a span starting at `start` (ns), formatted once per day.
    fn append_date(&mut self, start: i64, day: &mut Option<(i64, String)>) {
        let d = start.div_euclid(86_400_000_000_000);
        match day {
            Some((cached, text)) if *cached == d => self.date.append_value(&*text),
            _ => {
                let text = date_string(start);
                self.date.append_value(&text);
                *day = Some((d, text));
            }
        }
    }
}

/// An upper estimate of the bytes an export takes once normalized: the request itself plus each
/// resource's attributes and scope once per span.
pub fn expanded_size(req: &ExportTraceServiceRequest) -> usize {
    use prost::Message as _;
    let mut total = req.encoded_len();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(0, |r| r.encoded_len());
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map_or(0, |s| s.encoded_len());
            total = total.saturating_add((resource + scope).saturating_mul(ss.spans.len()));
        }
    }
    total
}

/// The partial-success message: the first few reasons, and an ellipsis when there were more.
fn rejection_message(rejected: u64, messages: &[String]) -> Option<String> {
    (rejected > 0).then(|| {
        let mut m = format!("rejected {rejected} span(s): {}", messages.join("; "));
        if rejected as usize > messages.len() {
            m.push_str("; …");
        }
        m
    })
}

/// Converts an export request. Never fails on client data: invalid spans are counted as rejected.
pub fn normalize(req: &ExportTraceServiceRequest) -> Result<Normalized> {
    let n_spans: usize = req
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter())
        .map(|ss| ss.spans.len())
        .sum();
    let mut cols = Columns::with_capacity(n_spans, n_spans.saturating_mul(400).min(64 << 20));
    let mut accepted = 0usize;
    let mut rejected = 0u64;
    let mut messages: Vec<String> = Vec::new();
    let mut hex = String::with_capacity(32);
    let mut buf = String::with_capacity(32);
    let mut day: Option<(i64, String)> = None;
    let mut span_lift: Vec<Option<(usize, Typed<'_>)>> = vec![None; CONVENTIONS.len()];
    let mut res_lift: Vec<Option<(usize, Typed<'_>)>> = vec![None; CONVENTIONS.len()];
    let run_id_idx = CONVENTIONS
        .iter()
        .position(|c| c.column == col::RUN_ID)
        .ok_or_else(|| Error::Internal("no run_id convention".into()))?;

    for rs in &req.resource_spans {
        let res_attrs: &[KeyValue] = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        res_lift.iter_mut().for_each(|v| *v = None);
        lift(res_attrs, &mut res_lift);
        let service = res_attrs.iter().find_map(|kv| {
            (kv.key == SERVICE_NAME_KEY)
                .then(|| kv.value.as_ref().and_then(|v| typed(v, ValueKind::Str)))
                .flatten()
        });
        for ss in &rs.scope_spans {
            let (scope_name, scope_version) = ss
                .scope
                .as_ref()
                .map(|s| (s.name.as_str(), s.version.as_str()))
                .unwrap_or(("", ""));
            for (si, span) in ss.spans.iter().enumerate() {
                let (trace_id, span_id, parent, start, end) = match validate(span) {
                    Ok(v) => v,
                    Err(reason) => {
                        rejected += 1;
                        if messages.len() < 3 {
                            messages.push(format!("span {si} `{}`: {reason}", span.name));
                        }
                        continue;
                    }
                };
                accepted += 1;
                let trace_hex_end = cols.append_ids(trace_id, span_id, parent, &mut hex);
                cols.append_span(span, service, start, end);

                span_lift.iter_mut().for_each(|v| *v = None);
                lift(&span.attributes, &mut span_lift);
                let trace_hex = hex.get(..trace_hex_end).unwrap_or_default();
                cols.append_lifted(&span_lift, &res_lift, run_id_idx, trace_hex);
                append_map(&mut cols.attributes, &span.attributes, &mut buf)?;
                append_map(&mut cols.resource_attributes, res_attrs, &mut buf)?;
                opt_str(&mut cols.scope_name, scope_name);
                opt_str(&mut cols.scope_version, scope_version);

                cols.events.append_events(&span.events, &mut buf)?;
                cols.links.append_links(&span.links, &mut buf)?;
                cols.append_date(start, &mut day);
            }
        }
    }
    let message = rejection_message(rejected, &messages);
    let batch = if accepted > 0 {
        Some(cols.finish()?)
    } else {
        None
    };
    Ok(Normalized {
        batch,
        rejected,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(1_700_000_000_000_000_000), "2023-11-14");
        assert_eq!(date_string(951_782_400_000_000_000), "2000-02-29");
        assert_eq!(date_string(-1), "1969-12-31");
    }

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn req(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn span(id: u8, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            attributes,
            ..Default::default()
        }
    }

    fn column<'a>(b: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        b.column(b.schema().index_of(name).unwrap())
    }

    #[test]
    fn batch_matches_the_schema_exactly() {
        let n = normalize(&req(vec![], vec![span(1, vec![])])).unwrap();
        let batch = n.batch.unwrap();
        assert_eq!(batch.schema(), spans_schema());
    }

    #[test]
    fn preference_order_type_rules_and_resource_fallback() {
        let n = normalize(&req(
            vec![
                kv(
                    "automation.workflow",
                    Value::StringValue("from-resource".into()),
                ),
                kv(
                    "gen_ai.system",
                    Value::StringValue("resource-provider".into()),
                ),
            ],
            vec![
                span(
                    1,
                    vec![
                        kv("llm.model_name", Value::StringValue("third".into())),
                        kv("gen_ai.request.model", Value::StringValue("second".into())),
                        kv("gen_ai.usage.input_tokens", Value::StringValue("12".into())),
                        kv("llm.token_count.prompt", Value::IntValue(7)),
                        kv("automation.cost_usd", Value::IntValue(3)),
                        kv("automation.workflow", Value::StringValue("own".into())),
                        kv("gen_ai.provider.name", Value::IntValue(1)),
                    ],
                ),
                span(
                    2,
                    vec![kv(
                        "automation.human.override",
                        Value::StringValue("yes".into()),
                    )],
                ),
            ],
        ))
        .unwrap();
        let b = n.batch.unwrap();
        let model = column(&b, col::MODEL).as_string::<i32>();
        assert_eq!(model.value(0), "second");
        // A string token count is skipped; the next key of the right type fills the column.
        let tokens = column(&b, col::INPUT_TOKENS).as_primitive::<Int64Type>();
        assert_eq!(tokens.value(0), 7);
        assert!(tokens.is_null(1));
        let cost = column(&b, col::COST_USD).as_primitive::<Float64Type>();
        assert_eq!(cost.value(0), 3.0);
        let wf = column(&b, col::WORKFLOW).as_string::<i32>();
        assert_eq!(wf.value(0), "own");
        assert_eq!(wf.value(1), "from-resource");
        // An int provider on the span is the wrong type: the resource's string value is used.
        let provider = column(&b, col::PROVIDER).as_string::<i32>();
        assert_eq!(provider.value(0), "resource-provider");
        assert!(column(&b, col::HUMAN_OVERRIDE).is_null(1));
        let run = column(&b, col::RUN_ID).as_string::<i32>();
        assert_eq!(run.value(0), "ab".repeat(16));
    }

    #[test]
    fn invalid_spans_are_counted_and_explained() {
        let mut bad_trace = span(1, vec![]);
        bad_trace.trace_id = vec![0; 16];
        let mut bad_parent = span(2, vec![]);
        bad_parent.parent_span_id = vec![1, 2];
        let mut too_late = span(3, vec![]);
        too_late.end_time_unix_nano = u64::MAX;
        let n = normalize(&req(
            vec![],
            vec![bad_trace, bad_parent, too_late, span(4, vec![])],
        ))
        .unwrap();
        assert_eq!(n.rejected, 3);
        assert_eq!(n.batch.unwrap().num_rows(), 1);
        let m = n.message.unwrap();
        assert!(m.contains("rejected 3 span(s)"), "{m}");
        assert!(m.contains("all bytes are zero"), "{m}");
        assert!(m.contains("parent span id"), "{m}");
        assert!(m.contains("2262"), "{m}");
    }

    #[test]
    fn nothing_accepted_means_no_batch() {
        let n = normalize(&req(vec![], vec![])).unwrap();
        assert!(n.batch.is_none());
        assert_eq!(n.rejected, 0);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
