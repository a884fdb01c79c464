//! `custos metrics`: the standard metrics of a window, grouped.

use std::process::ExitCode;

use anyhow::Result;

use super::{analytics_err, api_get, check_format, open_data, print, user};
use crate::flags::{MetricsArgs, Source};

/// Runs `custos metrics`.
pub async fn run(a: MetricsArgs) -> Result<ExitCode> {
    metrics(a.source, &a.window, &a.by, &a.format, a.at.as_deref()).await
}

pub async fn metrics(
    source: Source,
    window: &str,
    by: &str,
    format: &str,
    at: Option<&str>,
) -> Result<ExitCode> {
    use custos_analytics::metrics::{MetricsReport, compute, render_csv, render_table};
    check_format(format, &["table", "json", "csv"])?;
    let report: MetricsReport = match &source.server {
        Some(url) => {
            let q = [("window", Some(window)), ("by", Some(by)), ("at", at)];
            api_get(url, "metrics", &q).await?
        }
        None => {
            let req = custos_server::metrics_request(Some(window), Some(by), at).map_err(user)?;
            let (analytics, _) = open_data(&source, None).await?;
            compute(&analytics, &req).await.map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        "csv" => render_csv(&report),
        _ => render_table(&report),
    })
}
