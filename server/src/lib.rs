//! The custos server: wires the OTLP receivers, the span store and the SQL engine together, and
//! serves the HTTP API.
//!
//! This crate owns process-level concerns: the configuration file ([`config`]), binding the three
//! listeners, the API routes ([`routes`], one module per API area), the Prometheus registry ([`prom`]), recording policy set
//! changes and every decision in the audit log, and graceful shutdown (stop accepting, finish
//! requests in flight, flush the memtable), and erasure across store, journal and connectors
//! ([`erase`]). Decide-and-record, the deploy gate and the audit report
//! are `custos-governance`'s; the server runs them on its store (`gate_offline`, `report_offline`).

mod at_rest;
mod auth;
pub mod config;
pub mod erase;
mod loopback;
mod offline;
mod prom;
mod reload;
mod routes;
pub mod runs;
mod start;

use std::net::SocketAddr;

use custos_analytics::slo::SloSet;
use custos_analytics::{Analytics, PriceTable, QueryOptions};
use custos_policy::engine::Engine;
use custos_store::Store;

pub use auth::{ADMIN_TOKEN_FILE, ADMINS, EXECUTOR_PRINCIPAL};
pub use config::{AuthOptions, Config, RulesOptions, ServerOptions};
pub use offline::{
    SERVER_PRINCIPAL, audit_dir, audit_scrubber, erase_offline, gate_offline, open_audit,
    open_offline, open_redactor, query_offline, report_offline,
};
pub use routes::analytics::{metrics_request, threshold_request};
pub use routes::governance::GateRequest;
pub use routes::openapi_document;
pub use routes::tokens::token_info;
pub use start::{RunningServer, start};

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen on `{addr}` for {what}: {cause}")]
    Bind {
        /// What the listener is for.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// A request asks for something that cannot be done as asked (the caller's to fix).
    #[error("{0}")]
    Request(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] custos_store::Error),
    /// The SQL engine failed to start.
    #[error(transparent)]
    Analytics(#[from] custos_analytics::Error),
    /// A server task failed.
    #[error("{0}")]
    Task(String),
    /// The redaction rules or the pseudonym key are invalid.
    #[error(transparent)]
    Redact(#[from] custos_redact::Error),
    /// The policies could not be loaded.
    #[error(transparent)]
    Policy(#[from] custos_policy::Error),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// The executor failed.
    #[error(transparent)]
    Executor(custos_executor::Error),
    /// A governance step failed: the deploy gate cannot run as asked (a bad change file, an
    /// unknown format) or the report cannot be made. (Its analytics and audit failures are
    /// [`Error::Analytics`] and [`Error::Audit`].)
    #[error(transparent)]
    Governance(custos_governance::Error),
}

impl From<custos_governance::Error> for Error {
    fn from(e: custos_governance::Error) -> Self {
        match e {
            custos_governance::Error::Analytics(a) => Self::Analytics(a),
            custos_governance::Error::Audit(a) => Self::Audit(a),
            other => Self::Governance(other),
        }
    }
}

/// Result type of the server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The loaded rules files.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Model prices (empty when no file is configured).
    pub prices: PriceTable,
    /// SLO definitions, if a file is configured.
    pub slos: Option<SloSet>,
    /// The policy engine, if a policy directory is configured.
    pub engine: Option<Engine>,
    /// The policy directory as configured (paths in gate annotations start with it).
    pub policy_dir: Option<std::path::PathBuf>,
    /// The redaction rules file, if one is configured (else the shipped defaults apply).
    pub redaction: Option<std::path::PathBuf>,
}

impl Rules {
    /// Loads and validates the configured files.
    pub fn load(options: &RulesOptions) -> Result<Self> {
        Ok(Self {
            prices: match &options.prices {
                Some(p) => PriceTable::load(p)?,
                None => PriceTable::empty(),
            },
            slos: options.slos.as_deref().map(SloSet::load).transpose()?,
            engine: options.policies.as_deref().map(Engine::load).transpose()?,
            policy_dir: options.policies.clone(),
            redaction: options.redaction.clone(),
        })
    }
}

/// A session over `store` with the rules' prices; SLO queries are planned once so a broken SLO
/// file is reported before anything serves.
pub async fn analytics_with_rules(
    store: Store,
    options: QueryOptions,
    rules: &Rules,
) -> Result<Analytics> {
    let analytics = Analytics::with_prices(store, options, rules.prices.clone()).await?;
    if let Some(slos) = &rules.slos {
        slos.check_sql(&analytics).await?;
    }
    Ok(analytics)
}
