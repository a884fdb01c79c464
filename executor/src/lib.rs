//! The reference executor: runs automation workflows durably and emits the telemetry custos
//! watches.
//!
//! This crate owns workflow definitions ([`workflow`]: the YAML format and its validation), the
//! run journal ([`journal`]: an embedded ACID store), models ([`model`]: seeded local models and an
//! OpenAI-compatible provider), connectors ([`connector`]: HTTP with idempotency keys, and local
//! ledger, tickets and outbox), telemetry ([`telemetry`]: OTLP spans through the OpenTelemetry SDK),
//! the run loop itself ([`run`]: routing, retries, timeouts, human review, sagas, resume after a
//! crash) and the simulator ([`simulate`]: synthetic inputs, simulated reviewers and scenarios
//! driven through the executor). Its policy checks are decided and recorded by
//! `custos-governance`.

mod appender;
pub mod batch;
pub mod connector;
pub mod erase;
pub mod journal;
pub mod model;
pub mod run;
pub mod simulate;
pub mod telemetry;
pub mod workflow;

pub use run::{Executor, ExecutorOptions};

/// Errors of the executor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A workflow definition is invalid.
    #[error(transparent)]
    Workflow(#[from] workflow::Error),
    /// The journal failed.
    #[error("journal {0}")]
    Journal(String),
    /// A run's input does not match the workflow's input schema.
    #[error("input of workflow `{workflow}` is invalid: {problems}")]
    Input {
        /// The workflow.
        workflow: String,
        /// What is wrong.
        problems: String,
    },
    /// No such run, review or workflow.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a review already decided).
    #[error("{0}")]
    Conflict(String),
    /// The policy engine denied a person's request (a review decision); it is recorded.
    #[error("denied by policy: {0}")]
    Denied(String),
    /// The audit trail could not be written: the action did not happen.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// A governance step failed (other than the audit trail, which is [`Error::Audit`]).
    #[error(transparent)]
    Governance(custos_governance::Error),
    /// Telemetry could not be set up or sent.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A file could not be read or written.
    #[error("`{path}`: {cause}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// A simulation cannot run as asked: a bad scenario, no workflow definitions.
    #[error("{0}")]
    Config(String),
    /// A simulation's task failed.
    #[error("{0}")]
    Task(String),
}

impl From<custos_governance::Error> for Error {
    fn from(e: custos_governance::Error) -> Self {
        match e {
            custos_governance::Error::Audit(a) => Self::Audit(a),
            other => Self::Governance(other),
        }
    }
}

/// Result type of the executor.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a step's attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// The error type retry policies name (`timeout`, `unavailable`, `rate_limited`,
    /// `circuit_open`, `invalid_input`, `invalid_response`, `duplicate_key`, `policy_denied`).
    pub kind: String,
    /// What happened.
    pub message: String,
    /// Whether trying again may help.
    pub retryable: bool,
    /// For `duplicate_key`: the effect the key made before.
    pub existing: Option<serde_json::Value>,
}

impl StepError {
    /// An error a retry may cure.
    pub fn retryable(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
            existing: None,
        }
    }
    /// An error no retry cures.
    pub fn fatal(kind: &str, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(kind, message)
        }
    }
    /// Attaches the effect a repeated key made before.
    pub fn with_existing(mut self, v: serde_json::Value) -> Self {
        self.existing = Some(v);
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Fault injection for crash tests (debug builds only): when `CUSTOS_EXECUTOR_CRASH` is `POINT:STEP` (points:
/// `before_intent`, `after_intent`, `after_call`, `after_result`), the process kills itself
/// with SIGKILL on reaching that point of that step, exactly like `kill -9`.
#[cfg(debug_assertions)]
pub fn crash_point(point: &str, step: &str) {
    static TARGET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("CUSTOS_EXECUTOR_CRASH").ok());
    if target.as_deref() == Some(&format!("{point}:{step}")) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // `kill` delivers SIGKILL to us; wait for it rather than go on.
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Release builds have no fault injection.
#[cfg(not(debug_assertions))]
pub fn crash_point(_: &str, _: &str) {}
