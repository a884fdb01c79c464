//! Policy tests in the JSON format of `cedar run-tests`, run against a loaded policy set.
//!
//! A test file is a JSON array of cases:
//!
//! ```json
//! [{"name": "a healthy canary from CI is allowed",
//!   "request": {"principal": "Custos::Service::\"ci\"", "action": "Custos::Action::\"deploy\"",
//!               "resource": "Custos::Workflow::\"invoice-posting\"", "context": {}},
//!   "entities": [],
//!   "decision": "allow",
//!   "reason": ["deploy-by-ci-or-owner"],
//!   "num_errors": 0}]
//! ```
//!
//! `reason` is the set of determining policy ids (order does not matter) and `num_errors` the number
//! of policies that failed to evaluate (0 when absent). Each case sees only its own entities. One
//! difference from Cedar: custos fails closed, so a case with evaluation errors expects `deny`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{AuthzRequest, Engine, ErrorKind};
use crate::junit;
use crate::{Error, Policies, Result};

/// The request part of a test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The principal.
    pub principal: Value,
    /// The action.
    pub action: Value,
    /// The resource.
    pub resource: Value,
    /// The context.
    #[serde(default)]
    pub context: Option<Value>,
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case checks.
    pub name: String,
    /// The request.
    pub request: TestRequest,
    /// The entities the request sees.
    #[serde(default)]
    pub entities: Vec<Value>,
    /// Expected decision: `allow` or `deny`.
    pub decision: String,
    /// Expected determining policies.
    #[serde(default)]
    pub reason: Vec<String>,
    /// Expected number of evaluation errors.
    #[serde(default)]
    pub num_errors: usize,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The file the case is in.
    pub file: PathBuf,
    /// The case's name.
    pub name: String,
    /// Why it failed; empty when it passed.
    pub failures: Vec<String>,
    /// How long the decision took.
    pub elapsed: Duration,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of a test run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// The directory the tests came from.
    pub dir: PathBuf,
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
}

impl TestReport {
    /// Number of failed cases.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count()
    }

    /// Whether every case passed (and there was at least one).
    pub fn ok(&self) -> bool {
        !self.cases.is_empty() && self.failed() == 0
    }
}

/// Reads every `*.json` test file in `dir`, sorted by name.
pub fn read_tests(dir: &Path) -> Result<Vec<(PathBuf, Vec<TestCase>)>> {
    let mut out = Vec::new();
    for path in crate::files_with_extension(dir, "json")? {
        let text = std::fs::read_to_string(&path).map_err(|cause| Error::Read {
            path: path.clone(),
            cause,
        })?;
        let cases: Vec<TestCase> = serde_json::from_str(&text).map_err(|e| Error::TestFile {
            path: path.clone(),
            message: format!(
                "line {}, column {}: {e}; expected a JSON array of cases with `name`, `request`, `entities`, `decision`, `reason`, `num_errors`",
                e.line(),
                e.column()
            ),
        })?;
        for c in &cases {
            if c.decision != "allow" && c.decision != "deny" {
                return Err(Error::TestFile {
                    path: path.clone(),
                    message: format!(
                        "case `{}`: decision `{}` must be `allow` or `deny`",
                        c.name, c.decision
                    ),
                });
            }
        }
        out.push((path, cases));
    }
    Ok(out)
}

/// Runs one case.
pub fn run_case(engine: &Engine, file: &Path, case: &TestCase) -> CaseResult {
    let req = AuthzRequest {
        principal: case.request.principal.clone(),
        action: case.request.action.clone(),
        resource: case.request.resource.clone(),
        context: case
            .request
            .context
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default())),
        entities: case.entities.clone(),
    };
    let started = Instant::now();
    let d = engine.authorize(&req);
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    if d.request_error() {
        for e in d.errors.iter().filter(|e| e.kind == ErrorKind::Request) {
            failures.push(format!("the request cannot be evaluated: {}", e.message));
        }
    } else {
        if d.decision != case.decision {
            failures.push(format!(
                "expected `{}`, got `{}`",
                case.decision, d.decision
            ));
        }
        let got: BTreeSet<String> = d.policy_ids().into_iter().collect();
        let want: BTreeSet<String> = case.reason.iter().cloned().collect();
        if got != want {
            let list = |s: &BTreeSet<String>| {
                if s.is_empty() {
                    "none".to_string()
                } else {
                    s.iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            failures.push(format!(
                "expected determining policies {}, got {}",
                list(&want),
                list(&got)
            ));
        }
        if d.errors.len() != case.num_errors {
            let detail: Vec<&str> = d.errors.iter().map(|e| e.message.as_str()).collect();
            failures.push(format!(
                "expected {} evaluation error(s), got {}{}",
                case.num_errors,
                d.errors.len(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", detail.join("; "))
                }
            ));
        }
    }
    CaseResult {
        file: file.to_path_buf(),
        name: case.name.clone(),
        failures,
        elapsed,
    }
}

/// Runs every test file in `dir` against `policies` (each case with only its own entities).
pub fn run(policies: &Policies, dir: &Path) -> Result<TestReport> {
    let engine = Engine::new(policies.clone(), None)?;
    let mut report = TestReport {
        dir: dir.to_path_buf(),
        cases: Vec::new(),
    };
    for (file, cases) in read_tests(dir)? {
        for case in &cases {
            report.cases.push(run_case(&engine, &file, case));
        }
    }
    Ok(report)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Plain text, like `cargo test`.
pub fn render_text(r: &TestReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "running {} policy test(s) from {}",
        r.cases.len(),
        r.dir.display()
    );
    for c in &r.cases {
        let status = if c.passed() { "ok" } else { "FAILED" };
        let _ = writeln!(out, "test {}: {} ... {status}", file_name(&c.file), c.name);
    }
    let failed: Vec<&CaseResult> = r.cases.iter().filter(|c| !c.passed()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailures:");
        for c in &failed {
            let _ = writeln!(out, "  {}: {}", file_name(&c.file), c.name);
            for f in &c.failures {
                let _ = writeln!(out, "    {f}");
            }
        }
    }
    if r.cases.is_empty() {
        let _ = writeln!(
            out,
            "\ntest result: FAILED. no test cases found (write `*.json` files in the `cedar run-tests` format)"
        );
    } else {
        let _ = writeln!(
            out,
            "\ntest result: {}. {} passed; {} failed",
            if r.ok() { "ok" } else { "FAILED" },
            r.cases.len() - r.failed(),
            r.failed()
        );
    }
    out
}

/// JUnit XML: one `testsuite` per test file, one `testcase` per case.
pub fn render_junit(r: &TestReport) -> String {
    let mut files: Vec<&PathBuf> = Vec::new();
    for c in &r.cases {
        if !files.contains(&&c.file) {
            files.push(&c.file);
        }
    }
    let suites = files.into_iter().map(|file| {
        let name = file_name(file);
        let classname = format!("policy.{}", name.trim_end_matches(".json"));
        let cases = r.cases.iter().filter(|c| &c.file == file);
        let cases = cases.map(|c| junit::Case {
            name: c.name.clone(),
            classname: classname.clone(),
            time: c.elapsed,
            failure: (!c.passed()).then(|| junit::Failure {
                message: c.failures.first().cloned().unwrap_or_default(),
                text: Some(c.failures.join("\n")),
            }),
            ..junit::Case::default()
        });
        junit::Suite {
            cases: cases.collect(),
            name,
        }
    });
    junit::render(&junit::Report {
        name: "custos policy tests".into(),
        timed: true,
        suites: suites.collect(),
    })
}
