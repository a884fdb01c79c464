//! `custos top`: the operator's terminal dashboard of a server.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use super::UserError;
use crate::flags::TopArgs;

/// Runs `custos top` until the user quits.
pub async fn run(a: TopArgs) -> Result<ExitCode> {
    if !(a.interval.is_finite() && a.interval >= 0.2) {
        return Err(UserError("`--interval` must be at least 0.2 seconds".into()).into());
    }
    let every = std::time::Duration::from_secs_f64(a.interval);
    let connection = super::connection();
    let server = a.server;
    tokio::task::spawn_blocking(move || custos_tui::run::run(&server, every, &connection))
        .await
        .context("the dashboard stopped unexpectedly")??;
    Ok(ExitCode::SUCCESS)
}
