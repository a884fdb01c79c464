//! Generated requests to every API operation: schemathesis (PyPI) reads the server's OpenAPI
//! document and drives each operation with the admin's token for the phase, checking that no
//! answer is a 5xx, that every answer is one the document declares (status, content type,
//! schema) and that no route ignores a missing or broken token (docs/fuzzing.md).

use std::process::Stdio;
use std::time::Duration;

use super::hostile::{Answers, count};

/// The answer key of schemathesis' failures; `not run` when it is not installed.
pub(super) const FAILURES: &str = "schemathesis failures";
/// The answer key when schemathesis is missing.
pub(super) const NOT_RUN: &str = "schemathesis not installed (pip install schemathesis==4.32.5)";

/// The longest a schemathesis run may take before it is cut off (and the phase fails).
pub(super) const BUDGET: Duration = Duration::from_secs(300);
/// The answer key of a run that checked nothing (cut off, or no report): a failure.
pub(super) const UNCHECKED: &str = "schemathesis checked nothing";

/// Runs schemathesis against `api` to its end (at most [`BUDGET`]): the phase lasts as long, so
/// its report covers every operation. Counts the operations that failed a check; a run that
/// checked no operation counts as a failure, never as a pass.
pub(super) async fn drive(api: String, token: String, answers: Answers) {
    let dir = std::env::temp_dir().join(format!("custos-faults-st-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
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
            "--report-junit-path",
            &dir.join("junit.xml").display().to_string(),
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
    if tokio::time::timeout(BUDGET, child.wait()).await.is_err() {
        let _ = child.kill().await;
        count(
            &answers,
            format!("schemathesis cut off after {}s", BUDGET.as_secs()),
        );
    }
    let report = std::fs::read_to_string(dir.join("junit.xml")).unwrap_or_default();
    let mut failures = attribute_sum(&report, "failures") + attribute_sum(&report, "errors");
    let tests = attribute_sum(&report, "tests");
    if tests == 0 {
        count(&answers, UNCHECKED.into());
        failures += 1;
    } else {
        if let Ok(mut a) = answers.lock() {
            *a.entry("schemathesis operations checked".into())
                .or_default() = tests;
        }
    }
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
