//! `custos token create|list|revoke`: tokens of a data directory (the token file, shared with a
//! server running on it, which sees changes within a second) or of a server (`/api/tokens`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_audit::AuditLog;
use custos_auth::TokenFile;
use custos_governance::tokens;

use super::{api_client, api_err, user};
use crate::flags::data_dir;

/// Where token commands act.
#[derive(clap::Args)]
pub struct TokenSource {
    /// Data directory whose tokens to manage (created if it does not exist)
    /// [default: ./custos-data].
    #[arg(long, conflicts_with = "server")]
    data: Option<PathBuf>,
    /// Policy directory whose entity store the principal must be in, for `--data`.
    #[arg(long, conflicts_with = "server", default_value = "rules/policy")]
    policies: PathBuf,
    /// Server API URL: manage the server's tokens through its API (needs `manage_tokens`).
    #[arg(long)]
    server: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token: prints `id ID` first and the token, alone, on the last line.
    Create {
        /// The Cedar entity the token stands for, e.g. 'Custos::User::"ana"'.
        #[arg(long)]
        principal: String,
        /// How long it works (`90d`, `12h`) [default: until revoked].
        #[arg(long)]
        expires: Option<String>,
        /// Why it exists (shown by `list`).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        source: TokenSource,
    },
    /// Every token, revoked and expired ones included (never a secret).
    List {
        #[command(flatten)]
        source: TokenSource,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Revoke a token by id: it stops working within a second.
    Revoke {
        /// The token's id (`custos token list`).
        id: String,
        #[command(flatten)]
        source: TokenSource,
    },
}

struct Local {
    engine: custos_policy::engine::Engine,
    file: TokenFile,
    audit: AuditLog,
}

fn local(source: &TokenSource) -> Result<Local> {
    let dir = data_dir(source.data.clone());
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data directory `{}`", dir.display()))?;
    let engine = custos_policy::engine::Engine::load(&source.policies).map_err(|e| {
        user(format!(
            "cannot load the entity store from `{}` (pass --policies DIR): {e}",
            source.policies.display()
        ))
    })?;
    let audit = AuditLog::open(&custos_server::audit_dir(&dir))?
        .scrubbing(super::scrub(&dir, Some(&engine))?);
    Ok(Local {
        engine,
        file: TokenFile::new(&dir),
        audit,
    })
}

fn governance_err(e: custos_governance::Error) -> anyhow::Error {
    match e {
        custos_governance::Error::Token(_) | custos_governance::Error::NotFound(_) => user(e),
        other => other.into(),
    }
}

fn expiry(v: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(v) = v else { return Ok(None) };
    let d = custos_analytics::duration::parse(v).map_err(|e| user(format!("`--expires` {e}")))?;
    let d = chrono::Duration::from_std(d).map_err(|e| user(format!("`--expires` {e}")))?;
    Ok(Some(chrono::Utc::now() + d))
}

fn print_list(tokens: &[custos_api::TokenInfo], format: &str) -> Result<()> {
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(tokens)?);
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339();
    println!(
        "{:<14} {:<34} {:<10} {:<26} NOTE",
        "ID", "PRINCIPAL", "STATE", "EXPIRES"
    );
    for t in tokens {
        let state = match (&t.revoked, &t.expires) {
            (Some(_), _) => "revoked",
            (None, Some(e)) if *e <= now => "expired",
            _ => "valid",
        };
        println!(
            "{:<14} {:<34} {:<10} {:<26} {}",
            t.id,
            t.principal,
            state,
            t.expires.as_deref().unwrap_or("never"),
            t.note
        );
    }
    Ok(())
}

pub async fn run(what: TokenCommand) -> Result<ExitCode> {
    match what {
        TokenCommand::Create {
            principal,
            expires,
            note,
            source,
        } => {
            let (id, token, expires) = match &source.server {
                Some(server) => {
                    let req = custos_api::CreateToken {
                        principal,
                        expires,
                        note,
                    };
                    let t = api_client(server)?
                        .create_token(&req)
                        .await
                        .map_err(api_err)?;
                    (t.id, t.token, t.expires)
                }
                None => {
                    let l = local(&source)?;
                    let req = tokens::Request {
                        principal,
                        expires: expiry(expires.as_deref())?,
                        note,
                    };
                    let (new, _) =
                        tokens::create(&l.engine, &l.file, &l.audit, &tokens::local_actor(), &req)
                            .map_err(governance_err)?;
                    let expires = new.record.expires.map(|e| e.to_rfc3339());
                    (new.record.id, new.token, expires)
                }
            };
            println!("id {id}");
            println!("expires {}", expires.as_deref().unwrap_or("never"));
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { source, format } => {
            super::check_format(&format, &["text", "json"])?;
            let list = match &source.server {
                Some(server) => api_client(server)?.tokens().await.map_err(api_err)?.tokens,
                None => {
                    let file = TokenFile::new(&data_dir(source.data.clone()));
                    file.read()?
                        .into_iter()
                        .map(custos_server::token_info)
                        .collect()
                }
            };
            print_list(&list, &format)?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id, source } => {
            match &source.server {
                Some(server) => api_client(server)?
                    .revoke_token(&id)
                    .await
                    .map_err(api_err)?,
                None => {
                    let l = local(&source)?;
                    tokens::revoke(&l.engine, &l.file, &l.audit, &tokens::local_actor(), &id)
                        .map_err(governance_err)?;
                }
            }
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
