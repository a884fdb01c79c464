//! Erasure of one person's data (or of any chosen spans) across everything custos keeps: the span
//! table, memtable and WAL (`custos-store`), the executor's journal, review tasks, model cache
//! and local connectors' files (`custos-executor`), recorded in the audit log with the selection's
//! values as pseudonyms. Shared by `POST /api/erase` and `custos erase --data DIR`.

use std::collections::BTreeSet;
use std::time::Duration;

use custos_api::{EraseRequest, Erased};
use custos_audit::{AuditLog, Entry};
use custos_executor::connector::Connectors;
use custos_executor::erase::{Forget, Forgotten};
use custos_executor::journal::Journal;
use custos_redact::{Mention, Redactor};
use custos_store::{Selection, Store};
use serde_json::json;

use crate::{Error, Result};

/// Appends an erasure's (`erase`) or the journal retention's (`retention`) record.
pub(crate) fn record(
    audit: &AuditLog,
    kind: &str,
    principal: &str,
    context: serde_json::Value,
) -> Result<custos_audit::Record> {
    Ok(audit.append(Entry {
        kind: kind.into(),
        principal: principal.to_string(),
        action: "Custos::Action::\"erase\"".into(),
        resource: custos_governance::access::API.into(),
        decision: "erased".into(),
        policies: Vec::new(),
        advice: Vec::new(),
        errors: Vec::new(),
        context,
        policy_hash: String::new(),
    })?)
}

/// What an erasure works on.
pub struct Parts<'a> {
    /// The span store, open for writing.
    pub store: &'a Store,
    /// The redaction rules, for the pseudonym key.
    pub redactor: &'a Redactor,
    /// The executor's journal and connectors, when the data directory has them.
    pub executor: Option<(&'a Journal, &'a Connectors)>,
    /// Where the erasure is recorded.
    pub audit: &'a AuditLog,
    /// Who asked (a Cedar entity reference).
    pub by: &'a str,
    /// How long replaced files stay for readers in flight, unless the request says `now`.
    pub grace: Duration,
}

/// The selection a request names, and how the audit record shows it.
fn selection(req: &EraseRequest, redactor: &Redactor) -> Result<(Selection, String)> {
    let hash = |v: &str| format!("[VALUE:{}]", redactor.key().pseudonym(v.as_bytes()));
    match (req.where_.as_deref().map(str::trim), req.person.as_deref()) {
        (Some(w), None) if !w.is_empty() => Ok((
            Selection::Where(w.to_string()),
            custos_store::erase::recorded_form(w, hash),
        )),
        (None, Some(p)) => {
            let m = Mention::new(p, redactor.key()).ok_or_else(|| {
                Error::Request(format!(
                    "`person` must be at least {} characters (a shorter value would match too much)",
                    custos_redact::mention::MIN_MENTION_CHARS
                ))
            })?;
            let shown = format!("person = '[PERSON:{}]'", m.hex());
            Ok((Selection::Mentions(m), shown))
        }
        (Some(_), Some(_)) => Err(Error::Request(
            "give either `where` or `person`, not both".into(),
        )),
        _ => Err(Error::Request(
            "say what to erase: `where` (a SQL condition over the spans, e.g. `attributes['ticket.id'] = 'T-1'`) or `person` (a value as the automation sent it, e.g. `u-123`)".into(),
        )),
    }
}

/// Clears `runs` (and, with a mention, the runs whose data mentions the person) from the
/// executor's journal and connectors, when the data directory has them.
async fn forget(parts: &Parts<'_>, runs: &[String], mention: Option<Mention>) -> Result<Forgotten> {
    let Some((journal, connectors)) = parts.executor else {
        return Ok(Forgotten::default());
    };
    let what = Forget {
        runs: runs.iter().cloned().collect::<BTreeSet<_>>(),
        mention,
        finished_before_ms: None,
    };
    custos_executor::erase::forget(journal, connectors, &what)
        .await
        .map_err(Error::Executor)
}

/// Finishes the erasures a crash interrupted after their delete commit: clears their runs from
/// the journal and connectors and records them (`resumed`), as `parts.by`. Returns their audit
/// records' sequence numbers.
pub async fn finish_followups(parts: &Parts<'_>) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for f in parts.store.followups().await? {
        let forgotten = forget(parts, &f.runs, None).await?;
        let context = json!({
            "selection": f.note.get("selection").cloned().unwrap_or_default(),
            "spans": f.spans,
            "resumed": true,
            "runs": forgotten.runs,
            "runs_active": forgotten.active,
            "reviews": forgotten.reviews,
            "connector_records": forgotten.connector_records,
        });
        let r = record(parts.audit, "erase", parts.by, context)?;
        parts.store.followup_done(&f.id).await?;
        tracing::warn!(
            spans = f.spans,
            audit_seq = r.seq,
            "finished an erasure a crash had interrupted"
        );
        seqs.push(r.seq);
    }
    Ok(seqs)
}

/// Erases what `req` selects and records it.
pub async fn erase(parts: Parts<'_>, req: &EraseRequest) -> Result<Erased> {
    let (selection, recorded_as) = selection(req, parts.redactor)?;
    let grace = (!req.now).then_some(parts.grace);
    finish_followups(&parts).await?;
    let note = json!({ "selection": recorded_as });
    let spans = parts
        .store
        .erase(&selection, grace, note)
        .await
        .map_err(|e| match e {
            custos_store::Error::Predicate(m) => Error::Request(m),
            other => other.into(),
        })?;
    let mention = match &selection {
        Selection::Mentions(m) => Some(m.clone()),
        Selection::Where(_) => None,
    };
    let forgotten = forget(&parts, &spans.runs, mention).await?;
    let purge_due = spans.purge_due_unix_ms.map(|ms| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .unwrap_or_default()
            .to_rfc3339()
    });
    let context = json!({
        "selection": recorded_as,
        "spans": spans.spans,
        "files_rewritten": spans.files_rewritten,
        "table_version": spans.version,
        "purge_due": purge_due,
        "runs": forgotten.runs,
        "runs_active": forgotten.active,
        "reviews": forgotten.reviews,
        "connector_records": forgotten.connector_records,
    });
    let record = record(parts.audit, "erase", parts.by, context)?;
    if !spans.id.is_empty() {
        parts.store.followup_done(&spans.id).await?;
    }
    tracing::info!(
        spans = spans.spans,
        runs = forgotten.runs.len(),
        audit_seq = record.seq,
        "erasure done"
    );
    Ok(Erased {
        spans: spans.spans,
        files_rewritten: spans.files_rewritten,
        purge_due,
        runs: forgotten.runs,
        runs_active: forgotten.active,
        reviews: forgotten.reviews,
        connector_records: forgotten.connector_records,
        audit_seq: record.seq,
        recorded_as,
    })
}
