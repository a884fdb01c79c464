//! The benchmarks behind `custos bench`: they measure the other crates, they are not part of them.
//!
//! This crate owns the benchmark runners and their figures: end-to-end ingest against a
//! `custos serve` child process ([`ingest`]), the standard metrics and a trace lookup over a large
//! store, compared with DuckDB over the same Parquet files ([`analytics`], with
//! `bench/duckdb_compare.py`), policy decision latency in process, recorded and over HTTP
//! ([`policy`], [`decisions`]), executor throughput with a durable journal ([`executor`]) and a
//! fault suite under load ([`faults`]: slow clients, hostile exports, heavy queries, `kill -9`). The
//! workloads come from `custos-synth`; the `custos` command parses the arguments and prints.

pub mod analytics;
pub mod decisions;
pub mod executor;
pub mod faults;
pub mod ingest;
pub mod policy;

/// Errors of the benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A benchmark step failed (a child process, a client, an unexpected answer).
    #[error("{0}")]
    Task(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] custos_store::Error),
    /// The SQL engine failed.
    #[error(transparent)]
    Analytics(#[from] custos_analytics::Error),
    /// The policies could not be loaded or do not fit the request mix.
    #[error(transparent)]
    Policy(#[from] custos_policy::Error),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// The executor failed.
    #[error(transparent)]
    Executor(custos_executor::Error),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] custos_server::Error),
    /// A decision could not be recorded.
    #[error(transparent)]
    Governance(#[from] custos_governance::Error),
}

/// Result type of the benchmarks.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A token for `principal` on the data directory `data` (made before its server starts, so the
/// server reads it at once), checked against the policies of `policies`.
pub fn token_for(
    data: &std::path::Path,
    policies: &std::path::Path,
    principal: &str,
) -> Result<String> {
    let engine = custos_policy::engine::Engine::load(policies)?;
    let audit = custos_audit::AuditLog::open(&custos_server::audit_dir(data))?;
    let req = custos_governance::tokens::Request {
        principal: principal.into(),
        expires: None,
        note: "custos bench".into(),
    };
    let file = custos_auth::TokenFile::new(data);
    Ok(
        custos_governance::tokens::create(&engine, &file, &audit, "custos-bench", &req)?
            .0
            .token,
    )
}
