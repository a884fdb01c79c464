//! The signed head: `audit.head` names the last record (`seq`, `hash`) and is signed with the
//! data directory's ed25519 key, so a log cut at the end and continued is caught.
//!
//! - `audit.key` (mode 0600): the PKCS#8 ed25519 key, made by the first append that finds none;
//!   `audit.pub`: its public key (hex), to publish beside the head hash.
//! - The signed message is `custos-audit-head-v1\n{seq}\n{hash}`.
//! - Once a key exists every head is signed: a head without a valid signature fails
//!   verification. A log from before signing verifies as before and is signed from its next
//!   record on.
//! - An append refuses a log shorter than its head says, or whose record at the head's `seq` is
//!   not the one the head names: the records after it were cut, and continuing would hide that.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{Error, HEAD_FILE, Result};

/// The private key file inside the audit directory.
pub const KEY_FILE: &str = "audit.key";
/// The public key file (hex) inside the audit directory.
pub const PUBLIC_KEY_FILE: &str = "audit.pub";

/// `audit.head`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: String,
    /// Hex ed25519 public key that signed it (absent in heads written before signing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_key: Option<String>,
    /// Hex ed25519 signature of [`message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<String>,
}

fn message(seq: u64, hash: &str) -> Vec<u8> {
    format!("custos-audit-head-v1\n{seq}\n{hash}").into_bytes()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The public key (hex) of the audit directory `dir`, if it has one.
pub fn public_key(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(PUBLIC_KEY_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The directory's signing key, made (with its public key file) when there is none. Called under
/// the log's lock, so two writers never make two keys.
fn signing_key(dir: &Path) -> Result<Ed25519KeyPair> {
    let path = dir.join(KEY_FILE);
    let bad = |m: String| Error::Key {
        path: path.clone(),
        message: m,
    };
    let pkcs8 = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| bad("cannot generate a key".into()))?;
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(doc.as_ref())
                .and_then(|_| f.sync_all())
                .map_err(io(&path))?;
            let key = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|e| bad(format!("the new key does not load: {e}")))?;
            let public = hex::encode(key.public_key().as_ref());
            let pub_path = dir.join(PUBLIC_KEY_FILE);
            std::fs::write(&pub_path, format!("{public}\n")).map_err(io(&pub_path))?;
            tracing::info!(public_key = %public, path = %pub_path.display(), "made the audit head signing key");
            return Ok(key);
        }
        Err(cause) => return Err(Error::Io { path, cause }),
    };
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| bad(format!("not an ed25519 PKCS#8 key: {e}")))
}

/// The head, if the file exists.
pub(crate) fn read(dir: &Path) -> Result<Option<Head>> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                message: format!("the head is not readable: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(Error::Io { path, cause }),
    }
}

/// Writes a signed head for the record `seq` with `hash`, atomically.
pub(crate) fn write(dir: &Path, seq: u64, hash: &str) -> Result<()> {
    let key = signing_key(dir)?;
    let head = Head {
        seq,
        hash: hash.to_string(),
        public_key: Some(hex::encode(key.public_key().as_ref())),
        signature: Some(hex::encode(key.sign(&message(seq, hash)).as_ref())),
    };
    let path = dir.join(HEAD_FILE);
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let body = serde_json::to_vec(&head).map_err(|e| Error::Serialize(e.to_string()))?;
    std::fs::write(&tmp, body).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(())
}

/// Whether `head` is signed by the directory's key: `Ok(Some(key))` signed and valid,
/// `Ok(None)` unsigned in a directory without a key (a log from before signing), `Err` why not.
pub(crate) fn check(dir: &Path, head: &Head) -> std::result::Result<Option<String>, String> {
    let known = public_key(dir);
    let (Some(signature), Some(signer)) = (&head.signature, &head.public_key) else {
        return match known {
            None => Ok(None),
            Some(k) => Err(format!(
                "the head is not signed, but this log is signed with key {k}: the head was replaced"
            )),
        };
    };
    let Some(known) = known else {
        return Err(format!(
            "the head is signed by {signer}, but `{PUBLIC_KEY_FILE}` is missing: the key was removed"
        ));
    };
    if &known != signer {
        return Err(format!(
            "the head is signed by {signer}, not by this log's key {known}: the head was replaced"
        ));
    }
    let (Ok(pk), Ok(sig)) = (hex::decode(&known), hex::decode(signature)) else {
        return Err("the head's key or signature is not hex".into());
    };
    UnparsedPublicKey::new(&ED25519, pk)
        .verify(&message(head.seq, &head.hash), &sig)
        .map(|_| Some(known))
        .map_err(|_| "the head's signature does not verify: the head was forged or altered".into())
}

/// Refuses to extend a log whose last complete record (`seq`, `hash`) is behind its head: records
/// were cut, and appending would overwrite the evidence. A head one record behind is a crash
/// between the record and the head, and fine.
pub(crate) fn check_before_append(dir: &Path, seq: u64, hash: &str) -> Result<()> {
    let Some(head) = read(dir)? else {
        if seq > 0 && public_key(dir).is_some() {
            return Err(Error::Truncated(format!(
                "the head `{HEAD_FILE}` is missing from a signed log of {seq} record(s)"
            )));
        }
        return Ok(());
    };
    if let Err(why) = check(dir, &head) {
        return Err(Error::Truncated(why));
    }
    if head.seq > seq {
        return Err(Error::Truncated(format!(
            "the log ends at record {seq} but its signed head names record {}: records {} to {} were cut",
            head.seq,
            seq + 1,
            head.seq
        )));
    }
    if head.seq == seq && head.hash != hash {
        return Err(Error::Truncated(format!(
            "record {seq} is not the one the head names: the log was cut and rewritten from there"
        )));
    }
    Ok(())
}
