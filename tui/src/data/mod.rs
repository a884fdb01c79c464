//! What the dashboard shows, read from the server's API: one [`Snapshot`] per poll. The row
//! types are here; [`read`] builds them from the API's answers.

mod read;

pub use read::*;

use serde::{Deserialize, Serialize};

/// `GET /api/status`, as the API answers it.
pub use custos_api::Status;

/// The text `/` searches in a row: what the row shows, not field names.
pub trait Searchable {
    /// The row's shown fields, joined.
    fn text(&self) -> String;
}

impl Searchable for SloRow {
    fn text(&self) -> String {
        format!("{} {}% {}", self.name, self.objective_percent, self.status)
    }
}

impl Searchable for ReviewRow {
    fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.id,
            self.workflow,
            self.queue,
            self.priority,
            self.label.as_deref().unwrap_or_default()
        )
    }
}

impl Searchable for DecisionRow {
    fn text(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.seq,
            self.time,
            self.kind,
            self.principal,
            self.action,
            self.resource,
            self.decision,
            self.policies
        )
    }
}

impl Searchable for RunRow {
    fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.run_id, self.workflow, self.outcome, self.start_time
        )
    }
}

impl Searchable for SpanRow {
    fn text(&self) -> String {
        let mut t = format!(
            "{} {} {} {}",
            self.name, self.span_id, self.status, self.message
        );
        for (k, v) in &self.attributes {
            t.push(' ');
            t.push_str(k);
            t.push(' ');
            t.push_str(v);
        }
        t
    }
}

/// One workflow's metrics over the selected range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRow {
    /// Workflow name.
    pub workflow: String,
    /// Runs started.
    pub runs: i64,
    /// Success rate.
    pub success_rate: Option<f64>,
    /// Run latency p99, ms.
    pub p99_ms: Option<f64>,
    /// Error rate of steps.
    pub error_rate: Option<f64>,
    /// Override rate of reviewed decisions.
    pub override_rate: Option<f64>,
    /// Cost per successful run.
    pub cost_per_success: Option<f64>,
}

/// One point of the series behind the sparklines (a minute or an hour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Hour.
    pub key: String,
    /// Runs per hour.
    pub runs: f64,
    /// Run latency p99, ms.
    pub p99_ms: f64,
    /// Error rate.
    pub error_rate: f64,
    /// Override rate.
    pub override_rate: f64,
    /// Cost per success.
    pub cost_per_success: f64,
}

/// One SLO.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SloRow {
    /// Name.
    pub name: String,
    /// Objective in percent.
    pub objective_percent: f64,
    /// Error budget left, as a fraction.
    pub budget_left: Option<f64>,
    /// Burn rate of the shortest window.
    pub burn: Option<f64>,
    /// `ok`, `ticket`, `page`, `no_data`.
    pub status: String,
}

/// A pending review.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReviewRow {
    /// Task id.
    pub id: String,
    /// Workflow.
    pub workflow: String,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Model confidence.
    pub confidence: Option<f64>,
    /// Proposal label.
    pub label: Option<String>,
}

/// A policy decision from the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// Sequence number.
    pub seq: i64,
    /// Time (RFC 3339).
    pub time: String,
    /// `authorize`, `gate`, `review`, `policy_set`.
    pub kind: String,
    /// Who asked.
    pub principal: String,
    /// What.
    pub action: String,
    /// On what.
    pub resource: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// Determining policies.
    pub policies: String,
}

/// A recent run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// Workflow.
    pub workflow: String,
    /// Outcome.
    pub outcome: String,
    /// Duration, ms.
    pub duration_ms: Option<f64>,
    /// Spend, USD.
    pub cost_usd: Option<f64>,
    /// Start (RFC 3339).
    pub start_time: String,
}

/// One span of a run's trace, for the waterfall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanRow {
    /// Span id.
    pub span_id: String,
    /// Parent span id (none for a root).
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Start, ns since the epoch.
    pub start_ns: i64,
    /// End, ns since the epoch.
    pub end_ns: i64,
    /// `ok`, `error` or `unset`.
    pub status: String,
    /// Status message.
    pub message: String,
    /// Attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
    /// Depth in the span tree (0 for a root), set by [`waterfall`].
    pub depth: usize,
}

/// The policy decision that sent a run to review.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The step the decision was about.
    pub step: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Its advice.
    pub advice: Vec<String>,
    /// Its audit record.
    pub audit_seq: Option<u64>,
}

/// A review task with what the reviewer needs (`GET /api/reviews/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReviewDetail {
    /// Task id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// Workflow.
    pub workflow: String,
    /// The human step.
    pub step: String,
    /// Queue (the team that may decide).
    pub queue: String,
    /// Priority.
    pub priority: String,
    /// `pending`, `approved`, `rejected`, …
    pub status: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Due, ms since the epoch.
    pub due_ms: i64,
    /// The run's input, summarized, sorted by key.
    pub input: Vec<(String, String)>,
    /// The model's proposal.
    pub proposal: String,
    /// Its label.
    pub label: Option<String>,
    /// Its confidence.
    pub confidence: Option<f64>,
    /// The model.
    pub model: Option<String>,
    /// The prompt version.
    pub prompt_version: Option<String>,
    /// The decision step.
    pub decision_step: Option<String>,
    /// The policy decision that asked for review, if a policy did.
    pub policy: Option<PolicyView>,
    /// The run's trace.
    pub trace_id: Option<String>,
    /// Who started the run.
    pub started_by: Option<String>,
}

/// What the server answered to a review decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// The task.
    pub id: String,
    /// `approved` or `rejected`.
    pub decision: String,
    /// Who.
    pub reviewer: String,
    /// Its audit record.
    pub audit_seq: Option<u64>,
}

/// Everything one poll read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Server status.
    pub status: Status,
    /// Metrics per workflow.
    pub workflows: Vec<WorkflowRow>,
    /// Per-minute (range 1h) or hourly series, oldest first.
    pub series: Vec<Point>,
    /// Highest confidence PSI over the models (drift).
    pub drift_psi: Option<f64>,
    /// SLOs.
    pub slos: Vec<SloRow>,
    /// Pending reviews, most urgent first.
    pub reviews: Vec<ReviewRow>,
    /// Recent policy decisions, newest first.
    pub decisions: Vec<DecisionRow>,
    /// Recent runs, newest first.
    pub runs: Vec<RunRow>,
    /// Audit verification summary; empty when this poll did not re-verify (see
    /// [`crate::client::fetch`]).
    pub audit: String,
}

/// An audit record's context as the record view shows it: pretty-printed JSON.
pub fn context_text(r: &custos_api::AuditRecord) -> String {
    serde_json::to_string_pretty(&r.context).unwrap_or_default()
}
