//! OTLP attribute and request builders shared by the workloads.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub(crate) fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

/// An integer attribute.
pub(crate) fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// A floating-point attribute.
pub(crate) fn f(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

/// A boolean attribute.
pub(crate) fn b(key: &str, v: bool) -> KeyValue {
    kv(key, Value::BoolValue(v))
}

/// One export of `spans` from one resource (`resource` attributes) and one scope
/// (`scope` = name, version).
pub(crate) fn export(
    resource: Vec<KeyValue>,
    (name, version): (&str, &str),
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: name.into(),
                    version: version.into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
