//! What redaction changed in an export: every value that differs between the request before and
//! after, for `custos redact test` (writing rules against a sample without sending data).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// One changed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where: `resource 0`, `span 0.0.3 (trace 5b8e…, name "…")`, then the field.
    pub place: String,
    /// The value before.
    pub before: String,
    /// The value after; `None` when the attribute was dropped.
    pub after: Option<String>,
}

/// A value as text: strings as they are, everything else in OTLP/JSON form.
fn show(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => serde_json::to_string(&AnyValue {
            value: Some(other.clone()),
        })
        .unwrap_or_default(),
        None => String::new(),
    }
}

fn attributes(place: &str, before: &[KeyValue], after: &[KeyValue], out: &mut Vec<Change>) {
    for b in before {
        let a = after.iter().find(|a| a.key == b.key);
        let (bv, av) = (show(b.value.as_ref()), a.map(|a| show(a.value.as_ref())));
        if av.as_deref() != Some(bv.as_str()) {
            out.push(Change {
                place: format!("{place} attribute `{}`", b.key),
                before: bv,
                after: av,
            });
        }
    }
}

fn text(place: String, before: &str, after: &str, out: &mut Vec<Change>) {
    if before != after {
        out.push(Change {
            place,
            before: before.to_string(),
            after: Some(after.to_string()),
        });
    }
}

/// Every value of `before` that differs in `after` (the same request, redacted).
pub fn changes(
    before: &ExportTraceServiceRequest,
    after: &ExportTraceServiceRequest,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (r, (rb, ra)) in before
        .resource_spans
        .iter()
        .zip(&after.resource_spans)
        .enumerate()
    {
        let attrs = |rs: &opentelemetry_proto::tonic::trace::v1::ResourceSpans| {
            rs.resource
                .as_ref()
                .map(|x| x.attributes.clone())
                .unwrap_or_default()
        };
        attributes(&format!("resource {r}"), &attrs(rb), &attrs(ra), &mut out);
        for (s, (sb, sa)) in rb.scope_spans.iter().zip(&ra.scope_spans).enumerate() {
            for (i, (b, a)) in sb.spans.iter().zip(&sa.spans).enumerate() {
                let place = format!(
                    "span {r}.{s}.{i} (trace {}…)",
                    hex::encode(b.trace_id.get(..4).unwrap_or(&b.trace_id))
                );
                text(format!("{place} name"), &b.name, &a.name, &mut out);
                let msg = |x: &opentelemetry_proto::tonic::trace::v1::Span| {
                    x.status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .unwrap_or_default()
                };
                text(
                    format!("{place} status message"),
                    &msg(b),
                    &msg(a),
                    &mut out,
                );
                attributes(&place, &b.attributes, &a.attributes, &mut out);
                for (e, (eb, ea)) in b.events.iter().zip(&a.events).enumerate() {
                    let at = format!("{place} event {e}");
                    text(format!("{at} name"), &eb.name, &ea.name, &mut out);
                    attributes(&at, &eb.attributes, &ea.attributes, &mut out);
                }
                for (l, (lb, la)) in b.links.iter().zip(&a.links).enumerate() {
                    attributes(
                        &format!("{place} link {l}"),
                        &lb.attributes,
                        &la.attributes,
                        &mut out,
                    );
                }
            }
        }
    }
    out
}
