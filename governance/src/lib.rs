//! Governance decisions and their records: the steps that decide with the policy engine and append
//! the decision to the audit log before anyone acts on it.
//!
//! This crate owns access to custos itself ([`access`]: may an authenticated caller do an API
//! operation or send spans, each denial and allowed write recorded), token management with its records ([`tokens`]), decide-and-record for runtime authorization ([`decide`]: behind
//! `POST /api/authorize` and the executor's `execute`/`approve_review` checks, failing closed when no
//! policies are loaded), the deploy gate ([`gate`]: change files, canary measurement, evaluation of
//! the `deploy` policies, the gate record, output formats for people and CI) and the audit or
//! compliance report ([`report`]: one SQL-backed section per concern, rendered as HTML, Markdown,
//! CSV and JSON with a manifest). It asks the policy engine through `custos-policy`, measures
//! through `custos-analytics` and records through `custos-audit`; it opens no store itself.

pub mod access;
pub mod changes;
pub mod decide;
pub mod gate;
pub mod report;
pub mod tokens;

pub use decide::{authorize_and_record, deny_without_policies};

/// Errors of governance.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A measurement or a report query failed.
    #[error(transparent)]
    Analytics(#[from] custos_analytics::Error),
    /// The audit log failed: the decision is not recorded, so nothing is allowed.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// The deploy gate cannot run as asked (a bad change file, an unknown format).
    #[error("{0}")]
    Gate(String),
    /// The report cannot be made as asked (a bad period or format) or cannot be written.
    #[error("{0}")]
    Report(String),
    /// A token cannot be created or revoked as asked.
    #[error("{0}")]
    Token(String),
    /// What was asked for does not exist (a token id).
    #[error("{0}")]
    NotFound(String),
}

/// Result type of governance.
pub type Result<T, E = Error> = std::result::Result<T, E>;
