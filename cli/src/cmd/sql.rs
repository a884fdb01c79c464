//! `custos sql`: one read-only query against a data directory or a server.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use custos_analytics::QueryOptions;
use custos_analytics::format::{Format, render};
use custos_server::RulesOptions;

use super::{analytics_err, api_client, user};
use crate::flags::SqlArgs;

/// Runs `custos sql`.
pub async fn run(a: SqlArgs) -> Result<ExitCode> {
    sql(a.data, a.server, a.prices, &a.format, &a.query).await
}

async fn sql(
    data: Option<PathBuf>,
    server: Option<String>,
    prices: Option<PathBuf>,
    format: &str,
    query: &str,
) -> Result<ExitCode> {
    let format: Format = format.parse().map_err(anyhow::Error::msg)?;
    if format == Format::Arrow {
        bail!(
            "`--format arrow` writes binary; use the API with `Accept: application/vnd.apache.arrow.stream` instead"
        );
    }
    let bytes = match server {
        Some(url) => match api_client(&url)?.sql_as(query, format.content_type()).await {
            Ok(body) => body,
            // Every refusal of a query is reported as the user's (exit 2), as before.
            Err(e @ custos_api::Error::Refused { .. }) => return Err(user(e.message())),
            Err(e) => return Err(e.into()),
        },
        None => {
            let dir = crate::flags::data_dir(data);
            if !dir.exists() {
                bail!(
                    "data directory `{}` does not exist; pass --data DIR or --server URL",
                    dir.display()
                );
            }
            let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, None)?)?;
            match custos_server::query_offline(&dir, query, QueryOptions::default(), &rules).await {
                Ok(r) => render(&r, format)?,
                Err(custos_server::Error::Analytics(e)) => return Err(analytics_err(e)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}
