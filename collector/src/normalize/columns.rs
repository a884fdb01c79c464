//! The Arrow builders of one batch, one per `spans` column, and the appends that fill them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListArray, MapBuilder, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::record_batch::RecordBatch;
use custos_schema::{
    CONVENTIONS, SpanId, TraceId, ValueKind, col, event_fields, event_item_field, link_fields,
    link_item_field, spans_schema,
};
use opentelemetry_proto::tonic::trace::v1::{Span, span};

use crate::{Error, Result};

use super::values::*;

pub(super) struct Columns {
    pub(super) trace_id: StringBuilder,
    pub(super) span_id: StringBuilder,
    pub(super) parent_span_id: StringBuilder,
    pub(super) trace_state: StringBuilder,
    pub(super) flags: Int64Builder,
    pub(super) name: StringBuilder,
    pub(super) kind: StringBuilder,
    pub(super) service_name: StringBuilder,
    pub(super) start_time: TimestampMicrosecondBuilder,
    pub(super) end_time: TimestampMicrosecondBuilder,
    pub(super) start_nanos: Int64Builder,
    pub(super) end_nanos: Int64Builder,
    pub(super) duration_ms: Float64Builder,
    pub(super) status_code: StringBuilder,
    pub(super) status_message: StringBuilder,
    /// One builder per convention, in [`CONVENTIONS`] order.
    pub(super) lifted: Vec<Lifted>,
    pub(super) attributes: MapBuilder<StringBuilder, StringBuilder>,
    pub(super) resource_attributes: MapBuilder<StringBuilder, StringBuilder>,
    pub(super) scope_name: StringBuilder,
    pub(super) scope_version: StringBuilder,
    pub(super) events: Nested,
    pub(super) links: Nested,
    pub(super) dropped_attributes: Int64Builder,
    pub(super) dropped_events: Int64Builder,
    pub(super) dropped_links: Int64Builder,
    pub(super) date: StringBuilder,
}

pub(super) enum Lifted {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl Lifted {
    pub(super) fn append(&mut self, v: Option<Typed<'_>>) {
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

    pub(super) fn finish(&mut self) -> ArrayRef {
        match self {
            Lifted::Str(b) => Arc::new(b.finish()),
            Lifted::Int(b) => Arc::new(b.finish()),
            Lifted::Float(b) => Arc::new(b.finish()),
            Lifted::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Children of the `events` or `links` list, built flat with list offsets.
pub(super) struct Nested {
    pub(super) offsets: Vec<i32>,
    pub(super) time_or_trace: Int64Builder,
    pub(super) trace_id: StringBuilder,
    pub(super) span_id: StringBuilder,
    pub(super) name_or_state: StringBuilder,
    pub(super) attributes: MapBuilder<StringBuilder, StringBuilder>,
    pub(super) dropped: Int64Builder,
    pub(super) flags: Int64Builder,
}

impl Nested {
    pub(super) fn new() -> Self {
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

    pub(super) fn len(&self) -> i32 {
        self.offsets.last().copied().unwrap_or(0)
    }

    pub(super) fn finish_events(&mut self) -> Result<ArrayRef> {
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

    pub(super) fn finish_links(&mut self) -> Result<ArrayRef> {
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

    pub(super) fn finish_list(
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
    pub(super) fn with_capacity(n: usize, bytes: usize) -> Self {
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

    /// The batch, every row's `source` being `source`.
    pub(super) fn finish(mut self, source: Option<&str>) -> Result<RecordBatch> {
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
        let date = self.date.finish();
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
            take(col::REVIEW_OF)?,
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.events.finish_events()?,
            self.links.finish_links()?,
            Arc::new(self.dropped_attributes.finish()),
            Arc::new(self.dropped_events.finish()),
            Arc::new(self.dropped_links.finish()),
            source_column(source, arrow::array::Array::len(&date)),
            Arc::new(date),
        ];
        RecordBatch::try_new(schema, columns).map_err(|e| Error::Internal(e.to_string()))
    }
}

pub(super) fn opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

impl Nested {
    /// A span's events, then the offset that ends its list.
    pub(super) fn append_events(&mut self, events: &[span::Event], buf: &mut String) -> Result<()> {
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
    pub(super) fn append_links(&mut self, links: &[span::Link], buf: &mut String) -> Result<()> {
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
    pub(super) fn append_ids(
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
    pub(super) fn append_lifted(
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
    pub(super) fn append_span(
        &mut self,
        span: &Span,
        service: Option<Typed<'_>>,
        start: i64,
        end: i64,
    ) {
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
        // Integers first: nanosecond times near 1.7e18 lose 256 ns each as an f64.
        self.duration_ms
            .append_value(end.saturating_sub(start) as f64 / 1e6);
        let (code, message) = span
            .status
            .as_ref()
            .map(|s| (s.code, s.message.as_str()))
            .unwrap_or((0, ""));
        self.status_code.append_value(status_code(code));
        opt_str(&mut self.status_message, message);
    }

    /// The partition date of a span starting at `start` (ns), formatted once per day.
    pub(super) fn append_date(&mut self, start: i64, day: &mut Option<(i64, String)>) {
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

/// The `source` column: one value for every row of an export.
fn source_column(source: Option<&str>, rows: usize) -> ArrayRef {
    match source {
        Some(s) => Arc::new(arrow::array::StringArray::from_iter_values(
            std::iter::repeat_n(s, rows),
        )),
        None => arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, rows),
    }
}
