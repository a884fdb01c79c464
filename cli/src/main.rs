//! The `custos` command: argument parsing ([`flags`]) and dispatch to one module per command
//! ([`cmd`]). The work is in the library crates.

mod cmd;
mod flags;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cmd::UserError;
use crate::flags::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UserError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    cmd::set_token(cli.token);
    // One rustls crypto provider for every client and listener of this process (the tree holds
    // two; see custos-net).
    custos_net::tls::install_default_provider();
    cmd::set_tls(custos_net::ClientTls {
        ca: cli.ca_cert,
        cert: cli.client_cert,
        key: cli.client_key,
    });
    match cli.command {
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Sql(a) => cmd::sql::run(a).await,
        Command::Metrics(a) => cmd::metrics::run(a).await,
        Command::Thresholds(a) => cmd::thresholds::run(a).await,
        Command::Slo(a) => cmd::slo::run(a).await,
        Command::Policy { what } => cmd::policy::run(what).await,
        Command::Gate(a) => cmd::gate::run(a).await,
        Command::Run(a) => cmd::run::run(a).await,
        Command::Simulate(a) => cmd::simulate::run(a).await,
        Command::Demo(a) => cmd::demo::run(a).await,
        Command::Top(a) => cmd::top::run(a).await,
        Command::Review { what } => cmd::review::run(what).await,
        Command::Audit { what } => cmd::audit::run(what).await,
        Command::Token { what } => cmd::token::run(what).await,
        Command::Redact { what } => cmd::redact::run(what),
        Command::Erase(a) => cmd::erase::run(a).await,
        Command::Wal { what } => cmd::wal::run(what).await,
        Command::Bench { what } => cmd::bench::run(what).await,
    }
}
