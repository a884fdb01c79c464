//! `custos slo`: evaluate the SLOs; exit 3 when a page alert fires.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{analytics_err, api_get, check_format, open_data, parse_time, print, user};
use crate::flags::{SloArgs, Source};

/// Runs `custos slo`.
pub async fn run(a: SloArgs) -> Result<ExitCode> {
    slo(a.source, a.rules, a.at.as_deref(), &a.format).await
}

pub async fn slo(
    source: Source,
    rules: Option<PathBuf>,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_analytics::slo::{SloReport, evaluate, render_table};
    check_format(format, &["table", "json"])?;
    let report: SloReport = match &source.server {
        Some(url) => api_get(url, "slo", &[("at", at)]).await?,
        None => {
            let rules = Some(rules.unwrap_or_else(|| PathBuf::from("rules/slos.yaml")));
            let (analytics, loaded) = open_data(&source, rules).await?;
            let set = loaded
                .slos
                .ok_or_else(|| user("no SLO file; pass --rules FILE"))?;
            let at = parse_time(at)?;
            evaluate(&analytics, &set, at)
                .await
                .map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        _ => render_table(&report),
    })?;
    Ok(if report.paging() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
