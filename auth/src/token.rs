//! Tokens: how they are made, stored and read from a request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Prefix of every token, so scanners and people recognize one.
pub const PREFIX: &str = "cst_";
/// Random bytes in a token (256 bits).
const SECRET_BYTES: usize = 32;
/// Random bytes in a token id (shown in lists and audit records; not a secret).
const ID_BYTES: usize = 6;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The Cedar entity the caller is, in Cedar syntax (`Custos::User::"ana"`).
    pub uid: String,
    /// The id of the token it presented.
    pub token_id: String,
}

/// One stored token: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id, for listing and revoking.
    pub id: String,
    /// The Cedar entity the token stands for.
    pub principal: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made (RFC 3339).
    pub created: DateTime<Utc>,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// Why it exists.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// Whether the token authenticates at `now`.
    pub fn valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| now < e)
    }
}

/// A fresh token and the record that stores it.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The record (no secret in it).
    pub record: TokenRecord,
    /// The token itself: shown once, never stored.
    pub token: String,
}

fn random(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(buf)
}

/// Base64url without padding (RFC 4648 §5): URL- and header-safe.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of `token`.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes a token for `principal`.
pub fn generate(
    principal: &str,
    expires: Option<DateTime<Utc>>,
    note: &str,
    now: DateTime<Utc>,
) -> Result<NewToken> {
    let token = format!("{PREFIX}{}", base64url(&random(SECRET_BYTES)?));
    let record = TokenRecord {
        id: hex::encode(random(ID_BYTES)?),
        principal: principal.to_string(),
        sha256: digest(&token),
        created: now,
        expires,
        note: note.to_string(),
        revoked: None,
    };
    Ok(NewToken { record, token })
}

/// What an `Authorization` header (or gRPC `authorization` metadata) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No header.
    Missing,
    /// A header that is not `Bearer TOKEN`.
    Malformed,
    /// A bearer token.
    Bearer(&'a str),
}

/// Reads a header value: `Bearer TOKEN`, the scheme case-insensitive (RFC 7235).
pub fn credentials(header: Option<&str>) -> Credentials<'_> {
    let Some(value) = header else {
        return Credentials::Missing;
    };
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                Credentials::Malformed
            } else {
                Credentials::Bearer(token)
            }
        }
        _ => Credentials::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_are_long_random_and_stored_only_as_a_hash() {
        let now = Utc::now();
        let a = generate("Custos::User::\"ana\"", None, "laptop", now).unwrap();
        let b = generate("Custos::User::\"ana\"", None, "laptop", now).unwrap();
        assert!(a.token.starts_with(PREFIX));
        assert_eq!(a.token.len(), PREFIX.len() + 43, "256 bits in base64url");
        assert_ne!(a.token, b.token);
        assert_ne!(a.record.id, b.record.id);
        assert_eq!(a.record.sha256, digest(&a.token));
        let stored = serde_json::to_string(&a.record).unwrap();
        assert!(!stored.contains(&a.token[PREFIX.len()..]), "{stored}");
    }

    #[test]
    fn expiry_and_revocation_end_validity() {
        let now = Utc::now();
        let mut r = generate(
            "Custos::User::\"ana\"",
            Some(now),
            "",
            now - chrono::Duration::days(1),
        )
        .unwrap()
        .record;
        assert!(r.valid_at(now - chrono::Duration::seconds(1)));
        assert!(!r.valid_at(now));
        r.expires = None;
        assert!(r.valid_at(now));
        r.revoked = Some(now);
        assert!(!r.valid_at(now));
    }

    #[test]
    fn credentials_read_bearer_headers() {
        assert_eq!(credentials(None), Credentials::Missing);
        assert_eq!(credentials(Some("Bearer abc")), Credentials::Bearer("abc"));
        assert_eq!(
            credentials(Some("bearer  abc ")),
            Credentials::Bearer("abc")
        );
        assert_eq!(
            credentials(Some("Basic YWxhZGRpbg==")),
            Credentials::Malformed
        );
        assert_eq!(credentials(Some("Bearer")), Credentials::Malformed);
        assert_eq!(credentials(Some("Bearer a b")), Credentials::Malformed);
        assert_eq!(credentials(Some("abc")), Credentials::Malformed);
    }

    proptest! {
        #[test]
        fn base64url_has_the_right_length_and_alphabet(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = base64url(&bytes);
            prop_assert_eq!(s.len(), (bytes.len() * 4).div_ceil(3));
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }

        #[test]
        fn any_header_reads_without_panicking(h in ".{0,80}") {
            let _ = credentials(Some(&h));
        }
    }
}
