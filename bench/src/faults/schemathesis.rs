//! Generated requests to every API operation: schemathesis (PyPI) reads the server's OpenAPI
//! document and drives each operation with the admin's token for the phase, checking that no
//! answer is a 5xx, that every answer is one the document declares (status, content type,
//! schema) and that no route ignores a missing or broken token (docs/fuzzing.md).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::hostile::{Answers, count};

/// The answer key of schemathesis' failures; `not run` when it is not installed.
pub(super) const FAILURES: &str = "schemathesis failures";
/// The answer key when schemathesis is missing.
pub(super) const NOT_RUN: &str = "schemathesis not installed (pip install schemathesis==4.32.5)";

/// Runs schemathesis against `api` until `stop` (or its own time budget) and counts the
/// operations that failed a check.
pub(super) async fn drive(api: String, token: String, answers: Answers, stop: Arc<AtomicBool>) {
    let dir = std::env::temp_dir().join(format!("custos-faults-st-{}", std::process::id()));
    let child = tokio::process::Command::new("st")
        .args(["run", &format!("{api}/api/openapi.json"), "--url", &api])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,ignored_auth",
        ])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "20",
        ])
        .args([
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
        ])
        .args([
            "--report-dir",
            &dir.display().to_string(),
            "--report",
            "junit",
        ])
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        count(&answers, NOT_RUN.into());
        return;
    };
    loop {
        match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            Ok(_) => break,
            Err(_) if stop.load(Ordering::Relaxed) => {
                // The phase is over: what schemathesis checked so far is in its report.
                let _ = child.kill().await;
                break;
            }
            Err(_) => {}
        }
    }
    let report = std::fs::read_to_string(dir.join("junit.xml")).unwrap_or_default();
    let failures = attribute_sum(&report, "failures") + attribute_sum(&report, "errors");
    let tests = attribute_sum(&report, "tests");
    count(&answers, format!("schemathesis operations: {tests}"));
    if let Ok(mut a) = answers.lock() {
        *a.entry(FAILURES.into()).or_default() += failures;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sum of the `name="N"` attributes of the report's `<testsuite>` elements.
fn attribute_sum(xml: &str, name: &str) -> u64 {
    xml.split("<testsuite ")
        .skip(1)
        .filter_map(|s| {
            let tag = s.split('>').next()?;
            let v = tag.split(&format!(" {name}=\"")).nth(1)?;
            v.split('"').next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_attributes_are_summed_over_suites() {
        let xml = r#"<?xml version="1.0"?><testsuites><testsuite name="a" tests="3" failures="1" errors="0"><testcase/></testsuite><testsuite name="b" tests="2" failures="2" errors="1"></testsuite></testsuites>"#;
        assert_eq!(super::attribute_sum(xml, "tests"), 5);
        assert_eq!(super::attribute_sum(xml, "failures"), 3);
        assert_eq!(super::attribute_sum(xml, "errors"), 1);
    }
}
