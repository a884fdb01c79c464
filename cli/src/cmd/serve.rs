//! `custos serve`: start the server on a data directory until SIGINT or SIGTERM.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_server::Config;

use super::UserError;
use crate::flags::ServeArgs;

/// Runs `custos serve`.
pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let ServeArgs {
        data,
        config,
        otlp_grpc,
        otlp_http,
        api,
        workflows,
        policies,
        redaction,
    } = a;
    // The Delta kernel logs every snapshot at INFO; keep custos' own INFO and the libraries' warnings.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,custos=info,custos_store=info,custos_server=info,custos_collector=info",
                )
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let file = match &config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut options = file.validate()?;
    if let Some(d) = data {
        options.store.data_dir = d;
    }
    if let Some(a) = otlp_grpc {
        options.otlp_grpc = a;
    }
    if let Some(a) = otlp_http {
        options.otlp_http = a;
    }
    if let Some(a) = api {
        options.api = a;
    }
    if let Some(w) = workflows {
        if !w.is_dir() {
            return Err(UserError(format!(
                "`--workflows` `{}` is not a directory",
                w.display()
            ))
            .into());
        }
        options.executor.workflows = Some(w);
    }
    if let Some(p) = policies {
        options.rules = options
            .rules
            .with_policies(Some(p))
            .map_err(|e| UserError(e.to_string()))?;
    }
    if let Some(r) = redaction {
        options.rules = options
            .rules
            .with_redaction(Some(r))
            .map_err(|e| UserError(e.to_string()))?;
    }
    let data_dir = options.store.data_dir.clone();
    // Rules and configuration that do not load are the user's to fix (exit 2), like a bad flag.
    let server = custos_server::start(options).await.map_err(|e| match e {
        custos_server::Error::Config(_)
        | custos_server::Error::Policy(_)
        | custos_server::Error::Redact(_) => anyhow::Error::new(UserError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "custos {} serving data in {}",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    )?;
    writeln!(out, "OTLP/gRPC listening on {}", server.otlp_grpc)?;
    let scheme = if server.tls { "https" } else { "http" };
    writeln!(
        out,
        "OTLP/HTTP listening on {scheme}://{}/v1/traces",
        server.otlp_http
    )?;
    // Before the listening lines: whoever waits for those may stop reading after them.
    let audit = custos_server::audit_dir(&data_dir);
    if let Some(key) = custos_audit::public_key(&audit) {
        writeln!(
            out,
            "audit head signed with ed25519 key {key} ({}); publish it with the head hash",
            audit.join(custos_audit::PUBLIC_KEY_FILE).display()
        )?;
    }
    if let Some(path) = &server.admin_token {
        writeln!(
            out,
            "no admin had a valid token: wrote one to {} (send it as `Authorization: Bearer TOKEN`, or `--token \"$(cat {})\"`)",
            path.display(),
            path.display()
        )?;
    }
    writeln!(out, "API listening on {scheme}://{}", server.api)?;
    out.flush()?;
    drop(out);
    wait_for_signal().await?;
    eprintln!("shutting down: finishing requests in flight and flushing");
    server.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
