//! `custos thresholds`: tune a workflow's confidence threshold from reviewed decisions.

use std::process::ExitCode;

use anyhow::Result;

use super::{analytics_err, api_get, check_format, open_data, print, user};
use crate::flags::{Source, ThresholdsArgs};

/// Runs `custos thresholds`.
pub async fn run(a: ThresholdsArgs) -> Result<ExitCode> {
    thresholds(
        a.source,
        &a.workflow,
        a.step.as_deref(),
        a.target_error,
        &a.window,
        a.at.as_deref(),
        &a.format,
    )
    .await
}

async fn thresholds(
    source: Source,
    workflow: &str,
    step: Option<&str>,
    target_error: f64,
    window: &str,
    at: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    use custos_analytics::thresholds::{ThresholdReport, compute, render_table};
    check_format(format, &["table", "json"])?;
    let report: ThresholdReport = match &source.server {
        Some(url) => {
            let target_error = target_error.to_string();
            let q = [
                ("workflow", Some(workflow)),
                ("step", step),
                ("target_error", Some(target_error.as_str())),
                ("window", Some(window)),
                ("at", at),
            ];
            api_get(url, "thresholds", &q).await?
        }
        None => {
            let req = custos_server::threshold_request(
                workflow,
                step,
                Some(target_error),
                Some(window),
                at,
            )
            .map_err(user)?;
            let (analytics, _) = open_data(&source, None).await?;
            compute(&analytics, &req).await.map_err(analytics_err)?
        }
    };
    print(&match format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        _ => render_table(&report),
    })
}
