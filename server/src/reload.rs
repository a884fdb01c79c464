//! Reloading what decides while the server runs: the policy directory (schema, policies,
//! `entities.json`) and the executor's workflow definitions, on `POST /api/reload` (action
//! `reload`: admins) or `SIGHUP`.
//!
//! All or nothing: every file is loaded and checked (strict Cedar validation, every workflow
//! definition, the `[tls.clients]` principals against the new entity store) before anything is
//! replaced, so a reload that fails leaves everything in force and says what is wrong. A change is
//! recorded (`policy_change`, `workflow_change`, by whoever asked) before the first decision the
//! new set makes. Tokens need no reload (the server watches their file); prices and SLOs are read
//! at start only.

use std::sync::Arc;

use custos_api::{ChangeRecord, Reloaded};
use custos_policy::engine::Engine;
use serde_json::Value;

use crate::start::ApiState;
use crate::{Error, Result, runs};

fn change(r: custos_audit::Record) -> ChangeRecord {
    let changed = r
        .context
        .get("changed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    ChangeRecord {
        seq: r.seq,
        changed,
    }
}

/// Loads, checks and puts in force the policy directory and the workflow definitions; `by` is
/// recorded as who made the change. Reloads run one at a time.
pub(crate) fn reload(state: &ApiState, by: &str) -> Result<Reloaded> {
    let _one_at_a_time = state
        .reloading
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = state
        .rules
        .policy_dir
        .as_ref()
        .ok_or_else(|| Error::Config("no policy directory is configured".into()))?;
    let engine = Engine::load(dir)?;
    for (cn, principal) in &state.access.certificate_principals {
        custos_governance::tokens::check_principal(&engine, principal).map_err(|e| {
            Error::Config(format!(
                "`tls.clients` `{cn}` would no longer name a principal: {e}"
            ))
        })?;
    }
    let workflows = match &state.runner {
        Some(r) => Some((r, runs::load_workflows(&r.dir)?)),
        None => None,
    };
    let audit = &state.audit;
    let policy_change = custos_governance::gate::note_policy_set(audit, &engine, by)?;
    let policy_hash = engine.hash().to_string();
    state.access.engine.replace(engine);
    let mut workflow_change = None;
    if let Some((runner, workflows)) = workflows {
        workflow_change = custos_governance::changes::note_workflows(
            audit,
            &runs::definitions(&workflows),
            by,
            &policy_hash,
        )?;
        runner.replace_workflows(workflows);
    }
    Ok(Reloaded {
        policy_hash,
        policy_change: policy_change.map(change),
        workflow_change: workflow_change.map(change),
    })
}

/// Reloads on every `SIGHUP` until the process ends; the server itself is recorded as who
/// changed the set (a signal carries no identity beyond the right to signal the process).
#[cfg(unix)]
pub(crate) async fn on_hangup(state: Arc<ApiState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: reload through POST /api/reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let st = state.clone();
        let done = tokio::task::spawn_blocking(move || reload(&st, crate::SERVER_PRINCIPAL)).await;
        match done {
            Ok(Ok(r)) => log_reloaded("SIGHUP", &r),
            Ok(Err(e)) => tracing::error!(error = %e, "reload on SIGHUP failed; nothing changed"),
            Err(e) => tracing::error!(error = %e, "reload on SIGHUP failed; nothing changed"),
        }
    }
}

/// Logs what a reload changed.
pub(crate) fn log_reloaded(trigger: &str, r: &Reloaded) {
    tracing::info!(
        trigger,
        hash = %r.policy_hash,
        policies_changed = r.policy_change.is_some(),
        workflows_changed = r.workflow_change.is_some(),
        "reloaded the policies and workflows"
    );
}
