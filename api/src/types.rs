//! The request and answer bodies of `/api/*`, as they travel.
//!
//! Requests are strict (`deny_unknown_fields`: a misspelt field is an error, not a silent
//! default); answers are read leniently (unknown fields ignored, missing optional ones empty), so
//! a newer server does not break an older client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of every error answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// `POST /api/sql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One read-only statement.
    pub sql: String,
}

/// `GET /api/status`: what an operator's header shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Status {
    /// Server version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Spans accepted since start (both transports).
    pub spans_accepted: u64,
    /// Spans rejected since start.
    pub spans_rejected: u64,
    /// Rows not yet flushed to the table (ingest lag).
    pub memtable_rows: u64,
    /// Their bytes.
    pub memtable_bytes: u64,
    /// WAL bytes written since start.
    pub wal_bytes: u64,
    /// Flushes since start.
    pub flushes: u64,
    /// Last flush, seconds since the epoch.
    pub last_flush_unix: Option<u64>,
    /// Flushes that failed since start.
    pub flush_errors: u64,
    /// Policy set hash.
    pub policy_hash: Option<String>,
    /// Deployed workflows.
    pub workflows: Option<Vec<String>>,
    /// Pending reviews.
    pub pending_reviews: Option<usize>,
    /// Values redacted before they were stored, since start.
    pub redactions: Option<u64>,
    /// What encrypts the data directory at rest: `dm-crypt (dm-0)`, `declared: …`, or
    /// `none detected`.
    pub encryption_at_rest: Option<String>,
}

/// `POST /api/reload`: what the reload put in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// The policy set's hash now.
    pub policy_hash: String,
    /// The `policy_change` record, when the policy set changed.
    pub policy_change: Option<ChangeRecord>,
    /// The `workflow_change` record, when the workflow definitions changed.
    pub workflow_change: Option<ChangeRecord>,
}

/// `POST /api/erase`: which spans (and the runs they belong to) to erase. Exactly one of
/// `where` and `person`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// A SQL condition over the `spans` columns as readers see them (pseudonyms, not the values
    /// they replaced): `attributes['ticket.id'] = 'T-1'`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// One person's value as the automation sent it (`u-123`, `ana@example.com`): every span,
    /// run and connector line holding it or its pseudonym.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// Remove the replaced files at once instead of after the grace period (for an operator who
    /// knows no query is reading them).
    #[serde(default)]
    pub now: bool,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Erased {
    /// Spans deleted.
    pub spans: u64,
    /// Data files rewritten without them.
    pub files_rewritten: usize,
    /// When the replaced files leave the disk (RFC 3339); `None` when they already have.
    pub purge_due: Option<String>,
    /// Runs whose journaled data (input, outputs, reviews, connector lines) was cleared.
    pub runs: Vec<String>,
    /// Selected runs still running, left as they are: erase again once they finish.
    pub runs_active: Vec<String>,
    /// Review tasks cleared.
    pub reviews: usize,
    /// Local connectors' lines cleared.
    pub connector_records: usize,
    /// The audit record of the erasure.
    pub audit_seq: u64,
    /// The selection as recorded: its literal values replaced by pseudonyms.
    pub recorded_as: String,
}

/// A change record of a reload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeRecord {
    /// The audit record's sequence number.
    pub seq: u64,
    /// The files (policies) or workflows that differ from the previous record of the kind;
    /// removed ones end in ` (removed)`.
    pub changed: Vec<String>,
}

/// `POST /api/runs`: start a run of a deployed workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The deployed workflow's name.
    pub workflow: String,
    /// The run's input: a JSON object with the fields the workflow's `input` declares.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Starting twice with one key starts one run.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Who starts it: the authenticated caller. A body may repeat the caller (its Cedar
    /// reference, or a user's id) but never name someone else (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// The answer to [`StartRun`]: 202 for a new run, 200 for the run a repeated key started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Started {
    /// The run.
    pub run_id: String,
    /// Whether the idempotency key had already started it.
    pub existing: bool,
    /// `started` or `existing`.
    pub status: String,
}

/// `POST /api/reviews/{id}/approve|reject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    /// Who decides: the authenticated caller. A body may repeat the caller's user id but never
    /// name someone else (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// Why.
    pub reason: String,
}

/// One audit record, whole, as the log holds it (`GET /api/audit/records/{seq}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
    /// `gate`, `authorize`, `review` or `policy_change`.
    pub kind: String,
    /// Who asked.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Advice given.
    pub advice: Vec<String>,
    /// Errors met.
    pub errors: Vec<String>,
    /// The evaluated context.
    pub context: serde_json::Value,
    /// The deciding policy set's hash.
    pub policy_hash: String,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// A human review task (`GET /api/reviews/{id}`, items of `GET /api/reviews`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ReviewTask {
    /// Task id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// The human step's id.
    pub step: String,
    /// Queue (the team that may decide).
    pub queue: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Times out at (ms since the epoch).
    pub due_ms: i64,
    /// `pending`, `approved`, `rejected` or `timed_out`.
    pub status: String,
    /// What the reviewer needs: input summary, model and prompt version, confidence, the
    /// proposal, the policy decision that asked for review and its advice, the trace id.
    pub context: Value,
    /// Who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// Their reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Decided (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<i64>,
    /// Sequence number of the audit record of the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// `GET /api/reviews[?status=pending|all]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Reviews {
    /// The tasks, most urgent first.
    pub reviews: Vec<ReviewTask>,
}

/// A policy decision as the API answers it (`POST /api/authorize`, the reviewer check).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct PolicyDecision {
    /// `allow` or `deny`.
    pub decision: String,
    /// The policies that determined it.
    pub determining_policies: Vec<DeterminingPolicy>,
    /// What to do now.
    pub advice: Vec<String>,
    /// Problems met while deciding.
    pub errors: Vec<DecisionProblem>,
    /// Hash of the policy set that decided.
    pub policy_hash: String,
}

/// A policy that determined a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DeterminingPolicy {
    /// The policy's `@id`.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Its `@advice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// Its file, relative to the policy directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line of its `@id` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// A problem met while deciding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DecisionProblem {
    /// `request`, `evaluation` or `measurement`.
    pub kind: String,
    /// The policy that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// The answer to a [`ReviewDecision`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Decided {
    /// The task after the decision.
    pub task: ReviewTask,
    /// The policy decision on the reviewer's request.
    pub decision: PolicyDecision,
    /// The audit record's sequence number.
    pub audit_seq: u64,
}

/// `GET /api/audit/verify`: the hash chain checked end to end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Verification {
    /// The log file on the server.
    pub path: String,
    /// Records read.
    pub records: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// Hash of the last record: the value to anchor elsewhere.
    pub last_hash: String,
    /// Whether the log ends in a partial record left by a crash.
    pub partial_tail: bool,
    /// The ed25519 public key (hex) that signed the head; absent for a log from before signing.
    pub signed_by: Option<String>,
    /// The anchor checked, when one was asked for.
    pub anchor: Option<String>,
    /// The first problem, if any.
    pub finding: Option<Finding>,
}

/// The first problem an audit verification found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Finding {
    /// `modified`, `deleted`, `inserted`, `reordered`, `head_signature`, `anchor_missing`
    pub tamper: String,
    /// The record (`seq`) it concerns.
    pub seq: u64,
    /// The 1-based line of the log where it was noticed.
    pub line: usize,
    /// A full sentence for people.
    pub message: String,
}

/// `GET /api/whoami`: who the token says the caller is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct WhoAmI {
    /// The caller's Cedar entity (`Custos::User::"ana"`).
    pub principal: String,
    /// The id of the token it presented.
    pub token_id: String,
}

/// `POST /api/tokens`: a token for a principal of the entity store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The Cedar entity it stands for (`Custos::User::"ana"`).
    pub principal: String,
    /// How long it works (`90d`, `12h`); forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Why it exists.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// One token as lists show it: everything but the secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TokenInfo {
    /// Public id, for revoking.
    pub id: String,
    /// Who it stands for.
    pub principal: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When it stops working (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Why it exists.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// When it was revoked (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// The answer to [`CreateToken`]: the token, shown this once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TokenCreated {
    /// The token's id.
    pub id: String,
    /// The token: send it as `Authorization: Bearer TOKEN`.
    pub token: String,
    /// Who it stands for.
    pub principal: String,
    /// When it stops working (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The audit record of its creation.
    pub audit_seq: u64,
}

/// `GET /api/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Tokens {
    /// Every token, revoked and expired ones included.
    pub tokens: Vec<TokenInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields() {
        let e = serde_json::from_str::<ReviewDecision>(
            r#"{"reviewer": "ana", "reason": "ok", "approve": true}"#,
        );
        assert!(e.is_err(), "a misspelt field must not be ignored");
        let r: StartRun = serde_json::from_str(r#"{"workflow": "triage"}"#).unwrap();
        assert_eq!((r.input, r.started_by), (Value::Null, None));
    }

    #[test]
    fn answers_tolerate_missing_and_unknown_fields() {
        let s: Status =
            serde_json::from_str(r#"{"version": "0.1.0", "new_counter": 3, "flushes": 2}"#)
                .unwrap();
        assert_eq!(
            (s.version.as_str(), s.flushes, s.pending_reviews),
            ("0.1.0", 2, None)
        );
        let d: Decided = serde_json::from_str(
            r#"{"task": {"id": "t1", "status": "approved", "reviewer": "ana"}, "audit_seq": 7,
                "decision": {"decision": "allow", "determining_policies": [{"id": "p", "effect": "permit"}]}}"#,
        )
        .unwrap();
        assert_eq!((d.task.status.as_str(), d.audit_seq), ("approved", 7));
        assert_eq!(d.decision.determining_policies[0].id, "p");
    }
}
