//! `custos gate`: the deploy gate for CI (exit 0 allow, 2 deny, 1 error).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use custos_server::RulesOptions;

use super::{api_client, parse_time};
use crate::flags::{GateArgs, data_dir};

/// Runs `custos gate`: every failure to decide is exit 1, since 2 means deny.
pub async fn run(a: GateArgs) -> Result<ExitCode> {
    let decided = gate(
        &a.change,
        a.data,
        a.server,
        &a.policies,
        a.prices,
        a.at.as_deref(),
        &a.format,
    )
    .await;
    match decided {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn gate(
    change: &std::path::Path,
    data: Option<PathBuf>,
    server: Option<String>,
    policies: &std::path::Path,
    prices: Option<PathBuf>,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_governance::gate::{ChangeFile, GateFormat, GateReport, render};
    let format = GateFormat::parse(format)?;
    let change = ChangeFile::load(change)?;
    let report: GateReport = match server {
        Some(url) => {
            let body = serde_json::json!({"change": change, "at": at});
            api_client(&url)?.post(&["gate"], &body).await?
        }
        None => {
            let dir = data_dir(data);
            if !dir.exists() {
                bail!(
                    "data directory `{}` does not exist; pass --data DIR or --server URL",
                    dir.display()
                );
            }
            let at = parse_time(at)?;
            let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, None)?)?;
            custos_server::gate_offline(&dir, policies, &change, at, &rules).await?
        }
    };
    print!("{}", render(&report, format)?);
    Ok(ExitCode::from(report.exit_code() as u8))
}
