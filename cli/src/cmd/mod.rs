//! One module per command; here what several commands share: user errors (exit 2), the API
//! client for `--server`, opening `--data` read-only, and time and format flags.

pub mod audit;
pub mod bench;
pub mod demo;
pub mod erase;
pub mod gate;
pub mod metrics;
pub mod policy;
pub mod redact;
pub mod review;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod slo;
pub mod sql;
pub mod thresholds;
pub mod token;
pub mod top;
pub mod wal;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use custos_analytics::{Analytics, QueryOptions};
use custos_server::RulesOptions;
use serde::de::DeserializeOwned;

use crate::flags::{Source, data_dir};

/// A mistake in the user's input (flags, rules, SQL): printed as `error: ...`, exit code 2.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// The user's mistake, as an error.
pub fn user(msg: impl std::fmt::Display) -> anyhow::Error {
    UserError(msg.to_string()).into()
}

/// An analytics error: the user's fault (exit 2) or not (exit 1).
pub fn analytics_err(e: custos_analytics::Error) -> anyhow::Error {
    if e.is_client_error() {
        user(e)
    } else {
        e.into()
    }
}

static TOKEN: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Keeps `--token` (or `CUSTOS_TOKEN`) for the commands of this process (`custos demo` sets
/// each step's own).
pub fn set_token(token: Option<String>) {
    if let Ok(mut t) = TOKEN.write() {
        *t = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
    }
}

/// `--token` or `CUSTOS_TOKEN`, if given.
pub fn token() -> Option<String> {
    TOKEN.read().ok().and_then(|t| t.clone())
}

static TLS: std::sync::RwLock<Option<custos_net::ClientTls>> = std::sync::RwLock::new(None);

/// Keeps `--ca-cert`, `--client-cert` and `--client-key` for the clients of this process.
pub fn set_tls(tls: custos_net::ClientTls) {
    if let Ok(mut t) = TLS.write() {
        *t = Some(tls);
    }
}

/// How to reach a `--server`: `--token` and the TLS flags.
pub fn connection() -> custos_api::Connection {
    custos_api::Connection {
        token: token(),
        tls: TLS.read().ok().and_then(|t| t.clone()).unwrap_or_default(),
        timeout: None,
    }
}

/// The API client of `--server URL` with `--token` and the TLS flags; an unusable URL or TLS
/// file is the user's mistake.
pub fn api_client(server: &str) -> Result<custos_api::Client> {
    custos_api::Client::connect(server, &connection()).map_err(user)
}

/// Who `--token` says you are on the data directory `dir` (its token file, whether or not a
/// server runs on it).
pub fn identity(dir: &Path) -> Result<custos_auth::Principal> {
    let Some(t) = token() else {
        return Err(user(
            "say who you are with --token (or CUSTOS_TOKEN): `custos token create --data DIR --principal 'Custos::User::\"NAME\"'` makes one",
        ));
    };
    let authn = custos_auth::Authenticator::open(
        custos_auth::TokenFile::new(dir),
        custos_auth::FailureLimit::default(),
    )?;
    authn
        .authenticate(Some(&format!("Bearer {t}")), None)
        .map_err(|r| user(format!("on `{}`: {r}", dir.display())))
}

/// An API error: a 4xx refusal is the user's (exit 2, the server's message), anything else
/// is an error (exit 1).
pub fn api_err(e: custos_api::Error) -> anyhow::Error {
    if e.is_client_error() {
        user(e.message())
    } else {
        anyhow::Error::new(e)
    }
}

/// `GET /api/<path>` with the query flags given, as the analytics report `T`.
pub async fn api_get<T: DeserializeOwned>(
    server: &str,
    path: &str,
    query: &[(&str, Option<&str>)],
) -> Result<T> {
    api_client(server)?
        .get(&[path], query)
        .await
        .map_err(api_err)
}

/// Refuses a format the command does not write.
pub fn check_format(format: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&format) {
        Ok(())
    } else {
        Err(user(format!(
            "unknown format `{format}`; expected {}",
            allowed.join(", ")
        )))
    }
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> Result<ExitCode> {
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `--at`: an RFC 3339 time, or now.
pub fn parse_time(at: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>> {
    custos_analytics::metrics::parse_at(at).map_err(|e| user(format!("`--at` {e}")))
}

/// A data directory that must exist (offline commands never create one).
pub fn require_dir(data: Option<PathBuf>) -> Result<PathBuf> {
    let dir = data_dir(data);
    if !dir.exists() {
        return Err(user(format!(
            "data directory `{}` does not exist; pass --data DIR",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Opens `--data` read-only with the price table and, when given, an SLO file.
pub async fn open_data(
    source: &Source,
    slos: Option<PathBuf>,
) -> Result<(Analytics, custos_server::Rules)> {
    let dir = data_dir(source.data.clone());
    if !dir.exists() {
        bail!(
            "data directory `{}` does not exist; pass --data DIR or --server URL",
            dir.display()
        );
    }
    let rules_options = RulesOptions::resolve(source.prices.clone(), slos).map_err(user)?;
    let rules = custos_server::Rules::load(&rules_options).map_err(user)?;
    match custos_server::open_offline(&dir, QueryOptions::default(), &rules).await {
        Ok(a) => Ok((a, rules)),
        Err(custos_server::Error::Analytics(e)) => Err(analytics_err(e)),
        Err(e) => Err(e.into()),
    }
}

/// What the audit log of the data directory `dir` does to every record's context: the context
/// fields `engine`'s schema marks `@sensitive` become pseudonyms, then the redaction rules
/// (`rules/redaction.yaml` when it exists, else the shipped defaults) run, with the directory's
/// pseudonym key.
pub fn scrub(
    dir: &Path,
    engine: Option<&custos_policy::engine::Engine>,
) -> Result<custos_audit::Scrub> {
    let rules = custos_server::config::RulesOptions::resolve(None, None).map_err(user)?;
    let redactor = custos_server::open_redactor(dir, rules.redaction.as_deref()).map_err(user)?;
    Ok(custos_server::audit_scrubber(
        &std::sync::Arc::new(redactor),
        engine.cloned().map(Into::into),
    ))
}

/// Loads the policy engine of `dir`; a missing directory means none (fail closed), a broken one
/// is an error.
pub fn engine(dir: &Path) -> Result<Option<custos_policy::engine::Engine>> {
    if !dir.exists() {
        eprintln!(
            "warning: no policy directory `{}`: every side effect and review will be denied",
            dir.display()
        );
        return Ok(None);
    }
    Ok(Some(
        custos_policy::engine::Engine::load(dir)
            .with_context(|| format!("cannot load policies from `{}`", dir.display()))?,
    ))
}
