//! `custos redact test`: what the shipped rules change in a sample export, and a broken rules
//! file stopping with the file, rule and field named.

use super::{repo, run_in};

#[test]
fn redact_test_prints_what_the_rules_change_and_rule_errors_name_the_field() {
    let (code, out, err) = run_in(
        &repo(),
        &["redact", "test", "fixtures/otlp/personal-data.json"],
    );
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "span 0.0.0 (trace 5b8efff7…) name\n  - reply to ana.lopez@example.com\n  + reply to [EMAIL:",
        "attribute `email.body`\n  - IBAN DE89370400440532013000, call +49 30 1234567, card 4111 1111 1111 1111\n  + IBAN [IBAN], call [PHONE], card [CARD]\n",
        "attribute `http.request.header.authorization`\n  - Bearer q9Vx3Lr8Tz2Kp5Wm7Ys4\n  + (attribute dropped)\n",
        "  + aws_secret_access_key=[AWS_SECRET_KEY]\n",
        "status message\n  - card 4111 1111 1111 1111 declined\n  + card [CARD] declined\n",
        "resource 0 attribute `host.owner`",
        "attribute `user.id`\n  - u-123\n  + [PERSON:",
        "with `rules/redaction.yaml`",
        "  auth-headers: drop 1\n",
        "(pseudonyms use a throwaway key",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        !out.contains("order.ref") && !out.contains("automation.run_id"),
        "{out}"
    );
    assert!(out.contains("7 value(s) changed in 1 span(s)"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: custos/v1\nrules:\n  - {name: tickets, pattern: 'TCK-(', action: mask}\n",
    )
    .unwrap();
    let (code, _, err) = run_in(
        &repo(),
        &[
            "redact",
            "test",
            "fixtures/otlp/personal-data.json",
            "--rules",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad.yaml`: rules[0] (`tickets`), field `pattern`: regex parse error"),
        "{err}"
    );
    // A server does not start on it either, and says why the same way.
    let data = dir.path().join("data");
    let (code, _, err) = run_in(
        &repo(),
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--redaction",
            bad.to_str().unwrap(),
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("rules[0] (`tickets`), field `pattern`"),
        "{err}"
    );
    let (code, _, err) = run_in(&repo(), &["redact", "test", "Cargo.toml"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("is not an OTLP/JSON ExportTraceServiceRequest (line 1"),
        "{err}"
    );
}
