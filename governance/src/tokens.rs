//! Token management with its records: creating and revoking a token is checked against the
//! entity store and appended to the audit log, whether the CLI does it on a data directory or a
//! caller does it through `/api/tokens`.

use chrono::{DateTime, Utc};
use custos_audit::{AuditLog, Entry, Record};
use custos_auth::{TokenFile, TokenRecord, token::NewToken};
use custos_policy::engine::Engine;
use serde_json::json;

use crate::{Error, Result};

/// Why a token is asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The Cedar entity the token stands for (`Custos::User::"ana"`).
    pub principal: String,
    /// When it stops working.
    pub expires: Option<DateTime<Utc>>,
    /// A note for the list.
    pub note: String,
}

/// Checks that `principal` is an entity of the store: a token for someone the policies do not
/// know would authenticate a caller no policy can allow anything.
pub fn check_principal(engine: &Engine, principal: &str) -> Result<()> {
    match engine.has_entity(principal) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Token(format!(
            "principal `{principal}` is not in the entity store (entities.json of `{}`); add it, with the teams that give it its role, then create the token",
            engine.policies().dir.display()
        ))),
        Err(e) => Err(Error::Token(e)),
    }
}

/// Creates a token for `req.principal` on behalf of `by` and records it (kind `token`). The
/// token is in the answer only.
pub fn create(
    engine: &Engine,
    file: &TokenFile,
    audit: &AuditLog,
    by: &str,
    req: &Request,
) -> Result<(NewToken, Record)> {
    check_principal(engine, &req.principal)?;
    let new = file
        .create(&req.principal, req.expires, &req.note)
        .map_err(|e| Error::Token(e.to_string()))?;
    let record = audit.append(Entry {
        kind: "token".into(),
        principal: by.to_string(),
        action: "create_token".into(),
        resource: req.principal.clone(),
        decision: "created".into(),
        context: json!({
            "id": new.record.id,
            "expires": new.record.expires.map(|e| e.to_rfc3339()),
            "note": new.record.note,
        }),
        policy_hash: engine.hash().to_string(),
        ..Entry::default()
    })?;
    Ok((new, record))
}

/// Revokes token `id` on behalf of `by` and records it.
pub fn revoke(
    engine: &Engine,
    file: &TokenFile,
    audit: &AuditLog,
    by: &str,
    id: &str,
) -> Result<(TokenRecord, Record)> {
    let t = file.revoke(id).map_err(|e| match e {
        custos_auth::Error::UnknownId(_) => Error::NotFound(e.to_string()),
        other => Error::Token(other.to_string()),
    })?;
    let record = audit.append(Entry {
        kind: "token".into(),
        principal: by.to_string(),
        action: "revoke_token".into(),
        resource: t.principal.clone(),
        decision: "revoked".into(),
        context: json!({"id": t.id}),
        policy_hash: engine.hash().to_string(),
        ..Entry::default()
    })?;
    Ok((t, record))
}

/// Who acts when someone runs `custos token` on a data directory: not an authenticated
/// principal but whoever may write the directory, named as the operating system knows them.
pub fn local_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_for_known_principals_and_every_change_is_recorded() {
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy");
        let engine = Engine::load(&policy).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let audit = AuditLog::open(&dir.path().join("audit")).unwrap();
        let req = Request {
            principal: "Custos::User::\"mallory\"".into(),
            ..Request::default()
        };
        let e = create(&engine, &file, &audit, "local:root", &req).unwrap_err();
        assert!(e.to_string().contains("not in the entity store"), "{e}");
        let req = Request {
            principal: "Custos::User::\"ana\"".into(),
            note: "laptop".into(),
            ..Request::default()
        };
        let (new, rec) = create(&engine, &file, &audit, "local:root", &req).unwrap();
        assert_eq!(
            (rec.kind.as_str(), rec.action.as_str()),
            ("token", "create_token")
        );
        assert_eq!(rec.context["id"], new.record.id.as_str());
        let text = std::fs::read_to_string(audit.log_path()).unwrap();
        assert!(!text.contains(&new.token), "the token is never recorded");
        let (t, rec) = revoke(&engine, &file, &audit, "local:root", &new.record.id).unwrap();
        assert!(t.revoked.is_some());
        assert_eq!(rec.decision, "revoked");
        assert!(matches!(
            revoke(&engine, &file, &audit, "local:root", "nope"),
            Err(Error::NotFound(_))
        ));
    }
}
