//! The OpenAPI document (`GET /api/openapi.json`, docs/openapi.json) and schemathesis driving
//! every route it describes with generated requests (issue 16): no answer outside the document,
//! no 5xx, no route that ignores its token.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{admin, authed, start_triage, start_with};

const WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/workflows");
const SLOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/slos.yaml");
const PUBLISHED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

fn document() -> Value {
    serde_json::to_value(custos_server::openapi_document()).unwrap()
}

/// docs/openapi.json is the document the code generates; `CUSTOS_UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_published_document_is_the_generated_one() {
    let mut text = serde_json::to_string_pretty(&document()).unwrap();
    text.push('\n');
    if std::env::var_os("CUSTOS_UPDATE_OPENAPI").is_some() {
        std::fs::write(PUBLISHED, &text).unwrap();
    }
    let published = std::fs::read_to_string(PUBLISHED).unwrap_or_default();
    assert!(
        published == text,
        "docs/openapi.json differs from the generated document; run \
         `CUSTOS_UPDATE_OPENAPI=1 cargo test -p custos-server --test integration published` \
         and review the diff"
    );
}

#[test]
fn every_authenticated_operation_declares_its_refusals_and_the_open_ones_take_no_token() {
    let doc = document();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{:?}", paths.keys());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let answers = op["responses"].as_object().unwrap();
            assert!(answers.contains_key("500"), "{method} {path}");
            let open = path == "/healthz" || path == "/readyz";
            for code in ["401", "403"] {
                assert_eq!(answers.contains_key(code), !open, "{method} {path} {code}");
            }
            // An empty requirement is "no token needed"; every other route inherits the bearer.
            let security = &op["security"];
            assert_eq!(
                security
                    .as_array()
                    .is_some_and(|s| s == &[serde_json::json!({})]),
                open,
                "{method} {path}: {security}"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// Every `$ref` names a schema the document holds.
#[test]
fn every_reference_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "`{r}` resolves to nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_to_a_caller_with_a_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), "").await;
    let url = format!("http://{}/api/openapi.json", server.api);
    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let res = authed(&server).get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.json::<Value>().await.unwrap(), document());
    server.shutdown().await.unwrap();
}

/// schemathesis (PyPI, installed by `.ci/run`) generates requests from the served document for
/// every operation, with the admin's token, against a server with workflows, reviews, SLOs and
/// spans: every answer must be one the document declares, with its content type and schema,
/// none may be a 5xx, and a route must refuse a request whose token is removed or broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let st = std::env::var("CUSTOS_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let version = Command::new(&st).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "schemathesis is needed: `pip install schemathesis==4.32.5` (or set CUSTOS_SCHEMATHESIS)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        dir.path(),
        &format!("[rules]\nslos = {SLOS:?}\n[executor]\nworkflows = {WORKFLOWS:?}\n"),
    )
    .await;
    // Something to read: runs (some waiting for a review) and their spans.
    for n in 0..6 {
        start_triage(
            &server,
            &format!("e-{n}"),
            "where is my parcel",
            "it is late",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = format!("http://{}", server.api);
    let token = admin(&server);
    let report = dir.path().join("schemathesis");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &format!("{base}/api/openapi.json")])
            .args(["--url", &base])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance,ignored_auth",
            ])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "30", "--workers", "2", "--seed", "16"])
            .args(["--request-timeout", "20", "--suppress-health-check", "all"])
            .args([
                "--report-dir",
                &report.display().to_string(),
                "--report",
                "junit",
            ])
            .env("NO_COLOR", "1")
            // Its example database goes into the working directory, not the checkout.
            .current_dir(report.parent().unwrap())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // It drove the operations (a run that tested nothing also exits 0).
    assert!(out.contains("passed"), "{out}");
    // The server is still serving (asked without the admin's token, whose rate limit
    // schemathesis has spent).
    let res = reqwest::get(format!("http://{}/healthz", server.api))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shutdown().await.unwrap();
}
