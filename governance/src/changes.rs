//! What changed between two configurations, for the change records: `policy_change` (the schema,
//! the policies and the entity store) and `workflow_change` (the deployed workflow definitions),
//! each naming the files or workflows that differ from the last record of its kind.

use std::collections::BTreeMap;

use custos_audit::{AuditLog, Entry, Record};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Result;

/// The names whose digest differs from (or is missing in) the last `kind` record's
/// `file_hashes`; every name when there is no such record. Read at start and on reload only: it
/// scans the log.
pub fn changed_files(
    audit: &AuditLog,
    kind: &str,
    now: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let records = custos_audit::read_all(audit.dir())?;
    let before: BTreeMap<String, String> = records
        .iter()
        .rev()
        .find(|r| r.kind == kind)
        .and_then(|r| r.context.get("file_hashes").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut changed: Vec<String> = now
        .iter()
        .filter(|(name, digest)| before.get(*name) != Some(*digest))
        .map(|(name, _)| name.clone())
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|name| !now.contains_key(*name))
            .map(|name| format!("{name} (removed)")),
    );
    Ok(changed)
}

/// The digest of a set of named texts: each name and text length-prefixed.
fn set_hash(texts: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, digest) in texts {
        for part in [name.as_bytes(), digest.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    hex::encode(h.finalize())
}

/// Records the deployed workflow definitions (`name` → definition text) when they differ from the
/// last `workflow_change` record: which workflows changed, each definition's SHA-256 and the set's.
/// Returns the record, when it made one.
pub fn note_workflows(
    audit: &AuditLog,
    definitions: &BTreeMap<String, String>,
    principal: &str,
    policy_hash: &str,
) -> Result<Option<Record>> {
    let digests: BTreeMap<String, String> = definitions
        .iter()
        .map(|(name, text)| (name.clone(), hex::encode(Sha256::digest(text.as_bytes()))))
        .collect();
    let hash = set_hash(&digests);
    let records = custos_audit::read_all(audit.dir())?;
    let previous = records
        .iter()
        .rev()
        .find(|r| r.kind == "workflow_change")
        .and_then(|r| {
            r.context
                .get("hash")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    if previous.as_deref() == Some(hash.as_str()) {
        return Ok(None);
    }
    let changed = changed_files(audit, "workflow_change", &digests)?;
    let record = audit.append(Entry {
        kind: "workflow_change".into(),
        principal: principal.to_string(),
        action: "deploy_workflows".into(),
        resource: "Workflows".into(),
        decision: "recorded".into(),
        context: json!({
            "previous_hash": previous, "hash": hash, "file_hashes": digests, "changed": changed,
        }),
        policy_hash: policy_hash.to_string(),
        ..Entry::default()
    })?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_changes_are_recorded_once_and_name_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(dir.path()).unwrap();
        let mut defs = BTreeMap::from([
            ("triage".to_string(), "name: triage\n".to_string()),
            ("posting".to_string(), "name: posting\n".to_string()),
        ]);
        assert!(note_workflows(&audit, &defs, "p", "h").unwrap().is_some());
        assert!(
            note_workflows(&audit, &defs, "p", "h").unwrap().is_none(),
            "unchanged"
        );
        defs.insert("triage".into(), "name: triage\nversion: 2\n".into());
        defs.remove("posting");
        assert!(note_workflows(&audit, &defs, "p", "h").unwrap().is_some());
        let records = custos_audit::read_all(dir.path()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[1].context["changed"],
            json!(["triage", "posting (removed)"])
        );
        assert_eq!(records[0].context["changed"], json!(["posting", "triage"]));
        assert_eq!(
            records[1].context["previous_hash"],
            records[0].context["hash"]
        );
    }
}
