//! Redaction of whole exports, JSON and text with the shipped rules file and with rules of a
//! deployment: what is masked, hashed, dropped and truncated, where, and what is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_redact::{PseudonymKey, Redactor};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use serde_json::json;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/redaction.yaml");

fn shipped() -> Redactor {
    Redactor::load(
        std::path::Path::new(SHIPPED),
        PseudonymKey::ephemeral().unwrap(),
    )
    .unwrap()
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
        ..Default::default()
    }
}

fn get<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn text<'a>(attrs: &'a [KeyValue], k: &str) -> &'a str {
    match get(attrs, k) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("`{k}` is {other:?}"),
    }
}

fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(service)),
                    kv("host.owner", s("ops ana@example.com")),
                ],
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

const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "DE89370400440532013000";
const KEY: &str = "sk-proj-abcdefghijklmnopqrstuvwx";

#[test]
fn an_export_is_redacted_everywhere_a_value_can_hide() {
    let r = shipped();
    let span = Span {
        name: "reply to ana@example.com".into(),
        status: Some(Status {
            message: format!("card {CARD} declined"),
            code: 2,
        }),
        attributes: vec![
            kv("automation.workflow", s("support-triage")),
            kv("automation.run_id", s("run-555-123-4567")),
            kv(
                "email.body",
                s(&format!(
                    "IBAN {IBAN}, call +49 30 1234567, ssn 123-45-6789"
                )),
            ),
            kv("tool.args", s(&format!("{{\"api_key\": \"{KEY}\"}}"))),
            kv(
                "http.request.header.authorization",
                s("Bearer abcdefghijklmnop1234"),
            ),
            kv("db.password", s("hunter2")),
            kv("user.id", s("u-123")),
            kv("gen_ai.prompt.0.content", s(&"x".repeat(5000))),
            kv("order.number", s("order 4111111111111112 (fails Luhn)")),
            kv(
                "list",
                Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![s("ben@example.org").unwrap(), s("plain").unwrap()],
                    })),
                }),
            ),
            kv(
                "nested",
                Some(AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![
                            kv("secret_token", s("abc")),
                            kv("note", s("AKIAIOSFODNN7EXAMPLE")),
                        ],
                    })),
                }),
            ),
        ],
        events: vec![Event {
            name: "sent to 555-123-4567".into(),
            attributes: vec![kv("to", s("cleo@example.com"))],
            ..Default::default()
        }],
        links: vec![Link {
            attributes: vec![kv("ref", s(&format!("ghp_{}", "A".repeat(36))))],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut req = export("support-bot", vec![span]);
    r.request(&mut req);
    let rs = &req.resource_spans[0];
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(text(res, "service.name"), "support-bot");
    assert!(
        text(res, "host.owner").starts_with("ops [EMAIL:"),
        "{res:?}"
    );
    let sp = &rs.scope_spans[0].spans[0];
    let a = &sp.attributes;
    assert!(
        sp.name.starts_with("reply to [EMAIL:") && sp.name.ends_with(']'),
        "{}",
        sp.name
    );
    assert_eq!(sp.status.as_ref().unwrap().message, "card [CARD] declined");
    assert_eq!(
        text(a, "automation.run_id"),
        "run-555-123-4567",
        "identifiers are exempt"
    );
    assert_eq!(
        text(a, "email.body"),
        "IBAN [IBAN], call [PHONE], ssn [SSN]"
    );
    // The key itself is found first; the `api_key=` context would have masked it too.
    assert_eq!(text(a, "tool.args"), "{\"api_key\": \"[API_KEY]\"}");
    assert!(
        get(a, "http.request.header.authorization").is_none(),
        "dropped"
    );
    assert_eq!(text(a, "db.password"), "[SECRET]");
    let person = text(a, "user.id");
    assert!(
        person.starts_with("[PERSON:") && person.len() == "[PERSON:]".len() + 16,
        "{person}"
    );
    let prompt = text(a, "gen_ai.prompt.0.content");
    assert!(prompt.starts_with(&"x".repeat(4096)) && prompt.ends_with("[…904 bytes truncated]"));
    assert_eq!(
        text(a, "order.number"),
        "order 4111111111111112 (fails Luhn)"
    );
    let Some(any_value::Value::ArrayValue(list)) = get(a, "list") else {
        panic!()
    };
    let first = match &list.values[0].value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert!(first.starts_with("[EMAIL:"), "{first}");
    let Some(any_value::Value::KvlistValue(nested)) = get(a, "nested") else {
        panic!()
    };
    assert_eq!(text(&nested.values, "secret_token"), "[SECRET]");
    assert_eq!(text(&nested.values, "note"), "[AWS_ACCESS_KEY]");
    assert_eq!(sp.events[0].name, "sent to [PHONE]");
    assert!(text(&sp.events[0].attributes, "to").starts_with("[EMAIL:"));
    assert_eq!(text(&sp.links[0].attributes, "ref"), "[GITHUB_TOKEN]");

    // Every planted value is gone from the whole export's bytes.
    use prost::Message as _;
    let bytes = req.encode_to_vec();
    let hay = String::from_utf8_lossy(&bytes);
    for planted in [
        "ana@example.com",
        CARD,
        IBAN,
        KEY,
        "1234567",
        "123-45-6789",
        "hunter2",
        "u-123",
        "ben@example.org",
        "AKIAIOSFODNN7EXAMPLE",
        "abcdefghijklmnop1234",
        "cleo@example.com",
    ] {
        assert!(!hay.contains(planted), "`{planted}` survived");
    }
    let counts = r.counts().snapshot();
    assert!(counts.contains(&("email".into(), "hash", 4)), "{counts:?}");
    assert!(
        counts.contains(&("auth-headers".into(), "drop", 1)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("prompts".into(), "truncate", 1)),
        "{counts:?}"
    );
    assert_eq!(r.counts().total(), counts.iter().map(|c| c.2).sum::<u64>());
}

#[test]
fn pseudonyms_join_across_spans_and_keys_but_not_across_keys_of_data_directories() {
    let dir = tempfile::tempdir().unwrap();
    let key = PseudonymKey::open(dir.path()).unwrap();
    let r = Redactor::load(std::path::Path::new(SHIPPED), key.clone()).unwrap();
    let a = r.text("mail ana@example.com");
    let b = r.text("again: ana@example.com!");
    let p = a.trim_start_matches("mail ");
    assert!(b.contains(p), "{a} / {b}");
    assert!(p.contains(&key.pseudonym(b"ana@example.com")));
    let other = shipped();
    assert_ne!(other.text("mail ana@example.com"), a);
}

#[test]
fn deployment_rules_scope_by_service_and_workflow_and_come_before_detectors() {
    let rules = r#"
version: custos/v1
detectors:
  phone: { enabled: false }
rules:
  - name: ticket
    pattern: 'TCK-(?P<v>[0-9]{6})'
    action: hash
    services: ["support-*"]
  - name: invoice-amounts
    keys: [invoice.amount]
    action: drop
    workflows: [invoice-posting]
  - name: secret-email
    pattern: 'vip@example\.com'
    action: drop
"#;
    let r = Redactor::parse(rules, "r.yaml", PseudonymKey::ephemeral().unwrap()).unwrap();
    let span = |wf: &str| Span {
        name: "TCK-123456 for 555-123-4567".into(),
        attributes: vec![
            kv("automation.workflow", s(wf)),
            kv("invoice.amount", s("120.00")),
            kv("to", s("vip@example.com")),
        ],
        ..Default::default()
    };
    let mut support = export("support-bot", vec![span("invoice-posting")]);
    let mut billing = export("billing", vec![span("support-triage")]);
    r.request(&mut support);
    r.request(&mut billing);
    let sp = &support.resource_spans[0].scope_spans[0].spans[0];
    assert!(
        sp.name.starts_with("TCK-[TICKET:") && sp.name.ends_with("] for 555-123-4567"),
        "{}",
        sp.name
    );
    assert!(get(&sp.attributes, "invoice.amount").is_none());
    assert!(
        get(&sp.attributes, "to").is_none(),
        "a drop pattern removes the attribute"
    );
    let sp = &billing.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        sp.name, "TCK-123456 for 555-123-4567",
        "out of scope; phone is off"
    );
    assert_eq!(text(&sp.attributes, "invoice.amount"), "120.00");
}

#[test]
fn json_contexts_are_redacted_by_key_and_by_value() {
    let r = shipped();
    let mut v = json!({
        "workflow": "invoice-posting",
        "customer": {"email": "ana@example.com", "password": "p4ss", "iban": IBAN},
        "notes": ["call +49 30 1234567", 42],
        "user.id": "u-9",
    });
    r.json(&mut v);
    assert_eq!(v["workflow"], "invoice-posting");
    assert!(
        v["customer"]["email"]
            .as_str()
            .unwrap()
            .starts_with("[EMAIL:")
    );
    assert_eq!(v["customer"]["password"], "[SECRET]");
    assert_eq!(v["customer"]["iban"], "[IBAN]");
    assert_eq!(v["notes"], json!(["call [PHONE]", 42]));
    assert!(v["user.id"].as_str().unwrap().starts_with("[PERSON:"));
    assert_eq!(
        r.text("no personal data here, order 12345"),
        "no personal data here, order 12345"
    );
}

#[test]
fn a_pattern_catastrophic_for_backtracking_engines_runs_in_linear_time() {
    // `(a+)+$` on "aaaa…!" takes 2^n steps in a backtracking engine; this finishes at once here.
    let text = "version: custos/v1\nrules:\n  - {name: evil, pattern: '(a+)+$', action: mask}\n";
    let r = Redactor::parse(text, "r.yaml", PseudonymKey::ephemeral().unwrap()).unwrap();
    let hostile = format!("{}!", "a".repeat(200_000));
    assert_eq!(r.text(&hostile), hostile);
    assert_eq!(r.text("baaa"), "b[EVIL]");
}

fn planted() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just(("ana.l@example.com".to_string(), "[EMAIL:".to_string())),
        Just((CARD.to_string(), "[CARD]".to_string())),
        Just((IBAN.to_string(), "[IBAN]".to_string())),
        Just((KEY.to_string(), "[API_KEY]".to_string())),
        Just(("123-45-6789".to_string(), "[SSN]".to_string())),
    ]
}

proptest! {
    #[test]
    fn planted_values_never_survive_in_any_surrounding_text(
        before in "[a-z ,.;:()]{0,40}",
        after in "[a-z ,.;:()]{0,40}",
        (value, label) in planted(),
    ) {
        let r = shipped();
        let out = r.text(&format!("{before} {value} {after}"));
        prop_assert!(!out.contains(&value), "{}", out);
        prop_assert!(out.contains(&label), "{}", out);
        prop_assert!(out.starts_with(&before) && out.ends_with(&after), "{}", out);
    }

    #[test]
    fn text_without_personal_data_is_left_exactly_as_it_was(t in "[a-zA-Z ,.;()!?-]{0,200}") {
        let r = shipped();
        prop_assert_eq!(r.text(&t), t);
    }

    #[test]
    fn any_text_is_handled_without_panicking(t in any::<String>()) {
        let r = shipped();
        let _ = r.text(&t);
    }
}

#[test]
fn the_off_rules_change_nothing() {
    let r = Redactor::parse(
        &custos_redact::off_rules(),
        "off.yaml",
        PseudonymKey::ephemeral().unwrap(),
    )
    .unwrap();
    assert!(r.is_off());
    let text = format!("mail ana@example.com card {CARD} key {KEY}");
    assert_eq!(r.text(&text), text);
    let mut req = export(
        "svc",
        vec![Span {
            name: text.clone(),
            ..Default::default()
        }],
    );
    r.request(&mut req);
    assert_eq!(req.resource_spans[0].scope_spans[0].spans[0].name, text);
    assert!(!shipped().is_off());
}
