//! OTLP attribute builders shared by the workloads.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

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
