//! The census against prost's and serde's decoding, and its limits.

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
fn a_resource_sent_many_times_counts_its_attributes_together() {
    // prost merges repeated `resource` fields into one resource: 3 x 400 attributes is one
    // resource with 1,200.
    let resource = Resource {
        attributes: (0..400).map(|i| kv(format!("k{i}"), 0)).collect(),
        ..Default::default()
    };
    let mut rs = Vec::new();
    for _ in 0..3 {
        let r = resource.encode_to_vec();
        rs.push(0x0a);
        push_len(&mut rs, r.len());
        rs.extend_from_slice(&r);
    }
    let mut body = vec![0x0a];
    push_len(&mut body, rs.len());
    body.extend_from_slice(&rs);
    let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let attrs = decoded.resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .len();
    assert_eq!(attrs, 1200);
    let err = protobuf(&body, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Refused::TooMuch(m) if m.contains("resource")),
        "{err:?}"
    );
}

#[test]
fn json_values_nested_in_attributes_are_charged_once_per_enclosing_value() {
    // serde buffers an attribute value whole, once per enclosing value: zeros under unknown
    // keys, 20 arrays deep, cost 20 copies each.
    let mut value = format!("{{\"x\":[{}0]}}", "0,".repeat(20_000));
    for _ in 0..20 {
        value = format!("{{\"arrayValue\":{{\"values\":[{value}]}}}}");
    }
    let body = format!(
        "{{\"resourceSpans\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"a\",\"value\":{value}}}]}}}}]}}"
    );
    let limits = Limits {
        max_decoded_bytes: 16 << 20,
        ..Limits::default()
    };
    let counted = json(body.as_bytes(), &unlimited()).unwrap();
    // 20,000 zeros, each held 21 times at 64 bytes.
    assert!(counted.json_copies >= 20_000 * 21 * 64, "{counted:?}");
    let err = json(body.as_bytes(), &limits).unwrap_err();
    assert!(matches!(&err, Refused::TooMuch(_)), "{err:?}");
}

#[test]
fn a_truncated_body_is_invalid_with_its_offset() {
    let err = protobuf(&[0x0a, 0x05, 0x12], &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Refused::Invalid(m) if m.contains("past the end") && m.contains("byte 0")),
        "{err:?}"
    );
}
