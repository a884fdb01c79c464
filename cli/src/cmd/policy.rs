//! `custos policy validate|test|reload`: the governance policies checked before they govern, and
//! put in force on a running server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{api_client, api_err, check_format, user};
use crate::flags::PolicyCommand;

/// Runs `custos policy ...`.
pub async fn run(what: PolicyCommand) -> Result<ExitCode> {
    match what {
        PolicyCommand::Validate { dir } => policy_validate(&dir),
        PolicyCommand::Test { dir, tests, format } => policy_test(&dir, tests, &format),
        PolicyCommand::Reload { server } => policy_reload(&server).await,
    }
}

async fn policy_reload(server: &str) -> Result<ExitCode> {
    let r = api_client(server)?.reload().await.map_err(api_err)?;
    println!("policy set {}", r.policy_hash);
    for (what, change) in [
        ("policies", &r.policy_change),
        ("workflows", &r.workflow_change),
    ] {
        match change {
            Some(c) => println!(
                "{what} changed: {} (audit record {})",
                c.changed.join(", "),
                c.seq
            ),
            None => println!("{what} unchanged"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Policy problems on stderr, one `error: file:line:col: message` per line.
fn print_problems(problems: &[custos_policy::Problem]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

fn policy_validate(dir: &std::path::Path) -> Result<ExitCode> {
    match custos_policy::load(dir) {
        Ok(p) => {
            println!(
                "{}: {} policies valid against the schema; policy set {}",
                dir.display(),
                p.len(),
                p.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(custos_policy::Error::Invalid(problems)) => {
            print_problems(&problems);
            eprintln!("{} problem(s) in `{}`", problems.len(), dir.display());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(user(e)),
    }
}

fn policy_test(dir: &std::path::Path, tests: Option<PathBuf>, format: &str) -> Result<ExitCode> {
    check_format(format, &["text", "junit"])?;
    let policies = match custos_policy::load(dir) {
        Ok(p) => p,
        Err(custos_policy::Error::Invalid(problems)) => {
            print_problems(&problems);
            eprintln!(
                "the policies are invalid; fix them before testing (`custos policy validate`)"
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(user(e)),
    };
    let tests = tests.unwrap_or_else(|| dir.join("tests"));
    let report = custos_policy::testing::run(&policies, &tests).map_err(user)?;
    let out = match format {
        "junit" => custos_policy::testing::render_junit(&report),
        _ => custos_policy::testing::render_text(&report),
    };
    print!("{out}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
