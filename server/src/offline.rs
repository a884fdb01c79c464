//! Offline use of a data directory, for the CLI's `--data DIR` modes: open it read-only, run
//! one query, run the deploy gate or build the audit report on it.

use custos_analytics::{Analytics, QueryOptions};
use custos_audit::AuditLog;
use custos_governance::gate;
use custos_policy::engine::Engine;
use custos_store::Store;

use crate::{Result, Rules, analytics_with_rules};

/// The principal of records the server makes on its own (policy set changes).
pub const SERVER_PRINCIPAL: &str = "Custos::Service::\"custos-server\"";

/// The audit directory of a data directory.
pub fn audit_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("audit")
}

/// The redaction rules `file` (else the shipped defaults) with the pseudonym key of `data_dir`,
/// made when it has none yet.
pub fn open_redactor(
    data_dir: &std::path::Path,
    file: Option<&std::path::Path>,
) -> Result<custos_redact::Redactor> {
    let key = custos_redact::PseudonymKey::open(data_dir)?;
    Ok(match file {
        Some(path) => custos_redact::Redactor::load(path, key)?,
        None => custos_redact::Redactor::defaults(key)?,
    })
}

/// What the audit log does to every record's context before chaining it: the context fields the
/// policy schema marks `@sensitive` for the record's action become pseudonyms (with the engine
/// in force when the record is written), then the redaction rules run on the rest.
pub fn audit_scrubber(
    redactor: &std::sync::Arc<custos_redact::Redactor>,
    engine: Option<custos_policy::live::Live>,
) -> custos_audit::Scrub {
    let redactor = std::sync::Arc::clone(redactor);
    std::sync::Arc::new(move |action: &str, v: &mut serde_json::Value| {
        if let Some(live) = &engine {
            let e = live.current();
            for s in e.sensitive(action) {
                redactor.pseudonymize_at(v, &s.path, &s.label);
            }
        }
        redactor.json(v);
    })
}

/// The audit log of `data_dir`, every record's context scrubbed by [`audit_scrubber`] before it
/// is chained.
pub fn open_audit(
    data_dir: &std::path::Path,
    redactor: &std::sync::Arc<custos_redact::Redactor>,
    engine: Option<custos_policy::live::Live>,
) -> Result<AuditLog> {
    Ok(AuditLog::open(&audit_dir(data_dir))?.scrubbing(audit_scrubber(redactor, engine)))
}

/// Runs the deploy gate on a data directory (read-only for spans) and records the decision in its
/// audit log: `custos gate --data DIR`.
pub async fn gate_offline(
    data_dir: &std::path::Path,
    policy_dir: &std::path::Path,
    change: &gate::ChangeFile,
    at: chrono::DateTime<chrono::Utc>,
    rules: &Rules,
) -> Result<gate::GateReport> {
    let engine = Engine::load(policy_dir)?;
    let analytics = open_offline(data_dir, QueryOptions::default(), rules).await?;
    let mut report = gate::evaluate(
        &analytics,
        &engine,
        change,
        at,
        &policy_dir.display().to_string(),
    )
    .await?;
    let redactor = std::sync::Arc::new(open_redactor(data_dir, rules.redaction.as_deref())?);
    let audit = open_audit(data_dir, &redactor, Some(engine.clone().into()))?;
    gate::note_policy_set(&audit, &engine, "Custos::Service::\"custos-cli\"")?;
    gate::record(&audit, &mut report)?;
    Ok(report)
}

/// Builds the audit report of a data directory (read-only for spans): `custos audit report`.
pub async fn report_offline(
    data_dir: &std::path::Path,
    rules: &Rules,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<custos_governance::report::AuditReport> {
    let analytics = open_offline(data_dir, QueryOptions::default(), rules).await?;
    Ok(custos_governance::report::build(
        &analytics,
        data_dir,
        &audit_dir(data_dir),
        rules.slos.as_ref(),
        rules.engine.as_ref(),
        from,
        to,
    )
    .await?)
}

/// Erases what `req` selects in a data directory no server holds (`custos erase --data DIR`):
/// takes the directory's lock (a running server's holding it is an error that says to use
/// `--server`), erases from the table, the WAL, the journal and the connectors' files, records
/// it as `by`, flushes and lets go.
pub async fn erase_offline(
    data_dir: &std::path::Path,
    rules: &Rules,
    req: &custos_api::EraseRequest,
    by: &str,
    grace: std::time::Duration,
) -> Result<custos_api::Erased> {
    let mut options = custos_store::StoreOptions::new(data_dir);
    options.erase_grace = grace;
    let store = Store::open(options).await.map_err(|e| match e {
        custos_store::Error::Locked(dir) => crate::Error::Request(format!(
            "data directory `{}` is held by a running server; erase through it with `custos erase --server URL` (or stop it first)",
            dir.display()
        )),
        other => other.into(),
    })?;
    let redactor = std::sync::Arc::new(open_redactor(data_dir, rules.redaction.as_deref())?);
    let audit = open_audit(data_dir, &redactor, rules.engine.clone().map(Into::into))?;
    let journal_path = custos_executor::run::journal_path(data_dir);
    let journal = if journal_path.exists() {
        Some(
            custos_executor::journal::Journal::open(&journal_path)
                .map_err(crate::Error::Executor)?,
        )
    } else {
        None
    };
    let connectors =
        custos_executor::connector::Connectors::for_files(&data_dir.join("connectors"))
            .map_err(crate::Error::Executor)?;
    let parts = crate::erase::Parts {
        store: &store,
        redactor: &redactor,
        executor: journal.as_ref().map(|j| (j, &connectors)),
        audit: &audit,
        by,
        grace,
    };
    let result = crate::erase::erase(parts, req).await;
    let closed = store.shutdown().await;
    let erased = result?;
    closed?;
    Ok(erased)
}

/// Opens a data directory read-only with the rules' prices: for the CLI's `--data DIR`.
pub async fn open_offline(
    data_dir: &std::path::Path,
    options: QueryOptions,
    rules: &Rules,
) -> Result<Analytics> {
    let store = Store::open_read_only(data_dir).await?;
    analytics_with_rules(store, options, rules).await
}

/// Opens a data directory read-only and runs one query: for `custos sql --data DIR`.
pub async fn query_offline(
    data_dir: &std::path::Path,
    sql: &str,
    options: QueryOptions,
    rules: &Rules,
) -> Result<custos_analytics::QueryResult> {
    let analytics = open_offline(data_dir, options, rules).await?;
    Ok(analytics.query(sql).await?)
}
