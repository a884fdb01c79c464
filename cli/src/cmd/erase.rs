//! `custos erase`: one person's data (or chosen spans) out of the table, the WAL, the executor's
//! journal and the connectors' files, recorded in the audit log (docs/privacy.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use custos_api::{EraseRequest, Erased};

use super::{api_client, api_err, identity, require_dir, token, user};

// The arguments of `custos erase` (documented on its `Command` variant, which clap shows).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["where_", "person"])))]
#[command(group(clap::ArgGroup::new("target").args(["data", "server"])))]
pub struct EraseArgs {
    /// Data directory no server holds (a running server's is refused: use --server).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Server API URL: erase through it (needs `erase`: admins).
    #[arg(long)]
    pub server: Option<String>,
    /// A SQL condition over the `spans` columns, as readers see them (pseudonyms, not the values
    /// they replaced), e.g. "attributes['ticket.id'] = 'T-1'".
    #[arg(long = "where", id = "where_", value_name = "CONDITION")]
    pub where_: Option<String>,
    /// One person's value as the automation sent it (`u-123`, `ana@example.com`): every span,
    /// run and connector line holding it or its pseudonym.
    #[arg(long, value_name = "VALUE")]
    pub person: Option<String>,
    /// Remove the replaced files at once instead of after the grace period, for an operator who
    /// knows no query is reading them.
    #[arg(long)]
    pub now: bool,
    /// Seconds the replaced files stay for readers (offline only; a server uses
    /// `[store] erase_grace_secs`).
    #[arg(long, default_value_t = 3600, conflicts_with = "server")]
    pub grace_secs: u64,
}

/// Runs `custos erase`.
pub async fn run(a: EraseArgs) -> Result<ExitCode> {
    let req = EraseRequest {
        where_: a.where_,
        person: a.person,
        now: a.now,
    };
    let done = match &a.server {
        Some(server) => api_client(server)?.erase(&req).await.map_err(api_err)?,
        None => {
            let dir = require_dir(a.data)?;
            let by = match token() {
                Some(_) => identity(&dir)?.uid,
                None => custos_governance::tokens::local_actor(),
            };
            let rules = custos_server::config::RulesOptions::resolve(None, None).map_err(user)?;
            let rules = custos_server::Rules::load(&rules).map_err(user)?;
            let grace = Duration::from_secs(a.grace_secs);
            match custos_server::erase_offline(&dir, &rules, &req, &by, grace).await {
                Ok(done) => done,
                Err(e @ custos_server::Error::Request(_)) => {
                    return Err(user(format!("nothing was erased: {e}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    print_erased(&done);
    Ok(ExitCode::SUCCESS)
}

fn print_erased(e: &Erased) {
    println!(
        "erased {} span(s) in {} file(s); selection recorded as {}",
        e.spans, e.files_rewritten, e.recorded_as
    );
    match &e.purge_due {
        Some(at) => println!("the replaced files are removed after {at} (or run again with --now)"),
        None => println!("the replaced files are removed"),
    }
    println!(
        "runs cleared: {} ({} review task(s), {} connector line(s))",
        e.runs.len(),
        e.reviews,
        e.connector_records
    );
    if !e.runs_active.is_empty() {
        println!(
            "still running, left as they are (erase again once they finish): {}",
            e.runs_active.join(", ")
        );
    }
    println!("audit record {}", e.audit_seq);
}
