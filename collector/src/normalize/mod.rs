//! OTLP trace data → Arrow batches with the `spans` schema.
//!
//! `values` converts attribute values and `columns` holds the builders and their appends; this
//! module validates the spans and fills every column in one pass over them.
//!
//! Validation rejects single spans (an invalid trace or span id, a timestamp past the year 2262)
//! and keeps the rest: the caller reports rejected spans as an OTLP partial success. Attribute
//! values are never rejected: a value of the wrong type for a typed column stays in the raw
//! attribute map and leaves the typed column null.

mod columns;
mod values;

use arrow::record_batch::RecordBatch;
use custos_schema::{CONVENTIONS, SERVICE_NAME_KEY, SpanId, TraceId, ValueKind, col};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::{Error, Result};

use columns::*;
use values::*;

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

/// The start times a receiver accepts: nanoseconds since 1970, inclusive. A client's clock far
/// off (1970, 2262) would otherwise create partitions, files and metric series of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The earliest start time.
    pub from_ns: i64,
    /// The latest start time.
    pub to_ns: i64,
}

impl Window {
    /// From `past` before now to `future` after it.
    pub fn around_now(past: std::time::Duration, future: std::time::Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self {
            from_ns: now.saturating_sub(ns(past)),
            to_ns: now.saturating_add(ns(future)),
        }
    }

    fn check(&self, start: i64) -> std::result::Result<(), String> {
        if (self.from_ns..=self.to_ns).contains(&start) {
            return Ok(());
        }
        let at = |ns: i64| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        Err(format!(
            "start time {} is outside the accepted window {} to {} (check the sender's clock; \
             `receiver.max_span_age_days` and `receiver.max_span_future_secs` set the window)",
            at(start),
            at(self.from_ns),
            at(self.to_ns)
        ))
    }
}

/// Converts an export request sent by `source` (the admitted principal; `None` outside a
/// receiver). Never fails on client data: invalid spans are counted as rejected.
pub fn normalize(req: &ExportTraceServiceRequest, source: Option<&str>) -> Result<Normalized> {
    normalize_within(req, source, None)
}

/// [`normalize`], also rejecting spans whose start time is outside `window`.
pub fn normalize_within(
    req: &ExportTraceServiceRequest,
    source: Option<&str>,
    window: Option<Window>,
) -> Result<Normalized> {
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
                let valid = validate(span).and_then(|v| match &window {
                    Some(w) => w.check(v.3).map(|()| v),
                    None => Ok(v),
                });
                let (trace_id, span_id, parent, start, end) = match valid {
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
        Some(cols.finish(source)?)
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
    use arrow::array::ArrayRef;
    use custos_schema::spans_schema;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

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
        let n = normalize(&req(vec![], vec![span(1, vec![])]), None).unwrap();
        let batch = n.batch.unwrap();
        assert_eq!(batch.schema(), spans_schema());
    }

    #[test]
    fn preference_order_type_rules_and_resource_fallback() {
        let n = normalize(
            &req(
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
            ),
            None,
        )
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
        let n = normalize(
            &req(
                vec![],
                vec![bad_trace, bad_parent, too_late, span(4, vec![])],
            ),
            None,
        )
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
        let n = normalize(&req(vec![], vec![]), None).unwrap();
        assert!(n.batch.is_none());
        assert_eq!(n.rejected, 0);
    }

    #[test]
    fn durations_are_exact_at_todays_times() {
        // 2026-11-02T10:00:00.123456789Z: an f64 holds such a time to 256 ns only.
        let start = 1_793_613_600_123_456_789u64;
        let mut s = span(1, vec![]);
        s.start_time_unix_nano = start;
        s.end_time_unix_nano = start + 250_000_000;
        let n = normalize(&req(vec![], vec![s]), None).unwrap();
        let batch = n.batch.unwrap();
        let d = column(&batch, "duration_ms").as_primitive::<Float64Type>();
        assert_eq!(d.value(0), 250.0);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
