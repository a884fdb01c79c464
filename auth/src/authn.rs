//! The check every listener runs on a request's headers, before its body is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::Result;
use crate::file::{TokenFile, Version};
use crate::token::{Credentials, Principal, TokenRecord, credentials, digest, generate};

/// How often the token file is looked at for changes (a `stat`; it is read only when changed).
const RECHECK: Duration = Duration::from_millis(250);
/// Client addresses remembered for the failure limit; older windows are dropped past this.
const MAX_TRACKED: usize = 10_000;

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer TOKEN`.
    Malformed,
    /// A token nobody issued (or whose file entry is gone).
    Unknown,
    /// A token past its expiry.
    Expired {
        /// The token's id.
        id: String,
    },
    /// A revoked token.
    Revoked {
        /// The token's id.
        id: String,
    },
    /// No `Authorization` header, and a client certificate (verified by the client CA) whose
    /// common name the server's `[tls.clients]` table does not map to a principal.
    UnmappedCertificate {
        /// The certificate's subject common name.
        common_name: String,
    },
    /// Too many failures from this address lately.
    Throttled {
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
}

impl Refusal {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Expired { .. } => "expired",
            Self::Revoked { .. } => "revoked",
            Self::UnmappedCertificate { .. } => "certificate",
            Self::Throttled { .. } => "throttled",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HOW: &str = "send `Authorization: Bearer TOKEN` with a token from `custos token create` (a new server writes one to DATA/auth/admin.token)";
        match self {
            Self::Missing => write!(f, "authentication required: {HOW}"),
            Self::Malformed => write!(f, "the `Authorization` header is not `Bearer TOKEN`: {HOW}"),
            Self::Unknown => write!(f, "the bearer token is not valid: {HOW}"),
            Self::Expired { id } => write!(
                f,
                "token `{id}` has expired: create a new one with `custos token create`"
            ),
            Self::Revoked { id } => write!(
                f,
                "token `{id}` was revoked: create a new one with `custos token create`"
            ),
            Self::UnmappedCertificate { common_name } => write!(
                f,
                "the client certificate `{common_name}` stands for no principal: map its common name in the server's `[tls.clients]` table, or {HOW}"
            ),
            Self::Throttled { retry_after_secs } => write!(
                f,
                "too many failed authentications from this address: try again in {retry_after_secs} s"
            ),
        }
    }
}

/// How many failed attempts one client address may make in a window before it must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed per window.
    pub max_failures: u32,
    /// The window.
    pub window: Duration,
}

impl Default for FailureLimit {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    version: Option<Version>,
    by_hash: HashMap<String, TokenRecord>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Authenticates requests against a data directory's tokens and the process's own.
#[derive(Debug)]
pub struct Authenticator {
    file: TokenFile,
    snapshot: RwLock<Arc<Snapshot>>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last look at the file.
    checked_ms: AtomicU64,
    /// Tokens that live only in this process, by hash.
    process: RwLock<HashMap<String, TokenRecord>>,
    limit: FailureLimit,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Addresses in `failures`: lets the common case (no failures at all) skip the lock.
    failing: AtomicUsize,
    /// Client certificate common names (mutual TLS) and the principals they stand for.
    certificates: HashMap<String, String>,
}

impl Authenticator {
    /// An authenticator over `file`, read now: a damaged file is an error at start.
    pub fn open(file: TokenFile, limit: FailureLimit) -> Result<Self> {
        let version = file.version()?;
        let tokens = file.read()?;
        let a = Self {
            file,
            snapshot: RwLock::new(Arc::new(snapshot(version, tokens))),
            epoch: Instant::now(),
            checked_ms: AtomicU64::new(0),
            process: RwLock::new(HashMap::new()),
            limit,
            failures: Mutex::new(HashMap::new()),
            failing: AtomicUsize::new(0),
            certificates: HashMap::new(),
        };
        Ok(a)
    }

    /// The token file.
    pub fn file(&self) -> &TokenFile {
        &self.file
    }

    /// A token for `principal` that only this process knows (never written anywhere).
    pub fn process_token(&self, principal: &str, note: &str) -> Result<String> {
        let new = generate(principal, None, note, Utc::now())?;
        if let Ok(mut m) = self.process.write() {
            m.insert(new.record.sha256.clone(), new.record);
        }
        Ok(new.token)
    }

    /// Principals with a token in the file that is valid now.
    pub fn valid_principals(&self) -> Vec<String> {
        self.refresh(true);
        let now = Utc::now();
        let snap = self.current();
        let mut out: Vec<String> = snap
            .by_hash
            .values()
            .filter(|t| t.valid_at(now))
            .map(|t| t.principal.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The same authenticator, taking a client certificate whose subject common name is a key of
    /// `map` as the principal it maps to (mutual TLS; the certificate was verified against the
    /// client CA in the handshake).
    pub fn with_certificates(mut self, map: HashMap<String, String>) -> Self {
        self.certificates = map;
        self
    }

    /// Who is calling: the bearer token in `header` when there is one; otherwise the principal
    /// the client `certificate`'s common name maps to.
    pub fn identify(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
        certificate: Option<&str>,
    ) -> std::result::Result<Principal, Refusal> {
        match (header, certificate) {
            (None, Some(cn)) => match self.certificates.get(cn) {
                Some(uid) => Ok(Principal {
                    uid: uid.clone(),
                    token_id: format!("certificate:{cn}"),
                }),
                None => Err(Refusal::UnmappedCertificate {
                    common_name: cn.to_string(),
                }),
            },
            _ => self.authenticate(header, peer),
        }
    }

    /// Who sent `header` (the `Authorization` value) from `peer`.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> std::result::Result<Principal, Refusal> {
        let token = match credentials(header) {
            Credentials::Missing => return Err(Refusal::Missing),
            Credentials::Malformed => None,
            Credentials::Bearer(t) => Some(t),
        };
        if let Some(ip) = peer
            && let Some(wait) = self.throttled(ip)
        {
            return Err(Refusal::Throttled {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let result = match token {
            None => Err(Refusal::Malformed),
            Some(t) => self.check(t),
        };
        if result.is_err()
            && let Some(ip) = peer
        {
            self.failed(ip);
        }
        result
    }

    fn check(&self, token: &str) -> std::result::Result<Principal, Refusal> {
        self.refresh(false);
        let hash = digest(token);
        let from_process = self.process.read().ok().and_then(|m| m.get(&hash).cloned());
        let lookup = || self.current().by_hash.get(&hash).cloned();
        let record = match from_process {
            Some(r) => r,
            // A token made a moment ago works at once: an unknown one is looked up again after
            // a fresh look at the file (failures are limited per address, so this stays cheap).
            None => match lookup() {
                Some(r) => r,
                None => {
                    self.refresh(true);
                    lookup().ok_or(Refusal::Unknown)?
                }
            },
        };
        if record.revoked.is_some() {
            return Err(Refusal::Revoked { id: record.id });
        }
        if !record.valid_at(Utc::now()) {
            return Err(Refusal::Expired { id: record.id });
        }
        Ok(Principal {
            uid: record.principal,
            token_id: record.id,
        })
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-reads the file when it changed; at most every [`RECHECK`] unless `now`.
    fn refresh(&self, now: bool) {
        let elapsed = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked_ms.load(Ordering::Relaxed);
        let due = elapsed.saturating_sub(last) >= RECHECK.as_millis() as u64;
        if !now
            && (!due
                || self
                    .checked_ms
                    .compare_exchange(last, elapsed, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err())
        {
            return;
        }
        let version = match self.file.version() {
            Ok(v) => v,
            Err(e) => return self.fail_closed(&e),
        };
        if version == self.current().version {
            return;
        }
        match self.file.read() {
            Ok(tokens) => self.replace(snapshot(version, tokens)),
            Err(e) => self.fail_closed(&e),
        }
    }

    /// A file that cannot be read authenticates nobody (the process's own tokens still work).
    fn fail_closed(&self, e: &crate::Error) {
        tracing::error!(error = %e, "cannot read the token file; only the server's own tokens authenticate until it is fixed");
        self.replace(Snapshot::default());
    }

    fn replace(&self, s: Snapshot) {
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = Arc::new(s);
        }
    }

    fn throttled(&self, ip: IpAddr) -> Option<Duration> {
        if self.failing.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.failures.lock().ok()?;
        let f = map.get(&ip)?;
        let age = f.since.elapsed();
        if age >= self.limit.window {
            // A window over is forgotten, so an address that stops failing costs nothing.
            map.remove(&ip);
            self.failing.store(map.len(), Ordering::Relaxed);
            return None;
        }
        (f.count >= self.limit.max_failures).then(|| self.limit.window - age)
    }

    fn failed(&self, ip: IpAddr) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        let window = self.limit.window;
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, f| f.since.elapsed() < window);
        }
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            return;
        }
        let f = map.entry(ip).or_insert(Failures {
            since: Instant::now(),
            count: 0,
        });
        if f.since.elapsed() >= window {
            *f = Failures {
                since: Instant::now(),
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
        self.failing.store(map.len(), Ordering::Relaxed);
    }
}

fn snapshot(version: Option<Version>, tokens: Vec<TokenRecord>) -> Snapshot {
    Snapshot {
        version,
        by_hash: tokens.into_iter().map(|t| (t.sha256.clone(), t)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn file_tokens_authenticate_until_revoked_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let auth = Authenticator::open(file.clone(), FailureLimit::default()).unwrap();
        let ana = file.create("Custos::User::\"ana\"", None, "").unwrap();
        // A new token works at once.
        let p = auth.authenticate(Some(&bearer(&ana.token)), None).unwrap();
        assert_eq!(p.uid, "Custos::User::\"ana\"");
        assert_eq!(p.token_id, ana.record.id);
        file.revoke(&ana.record.id).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert_eq!(
            auth.authenticate(Some(&bearer(&ana.token)), None),
            Err(Refusal::Revoked {
                id: ana.record.id.clone()
            })
        );
        assert_eq!(auth.authenticate(None, None), Err(Refusal::Missing));
        assert_eq!(
            auth.authenticate(Some("Basic x"), None),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(&bearer("cst_nope")), None),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn a_mapped_certificate_identifies_and_a_token_takes_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let ana = file.create("Custos::User::\"ana\"", None, "").unwrap();
        let map = [(
            "collector-1".to_string(),
            "Custos::Service::\"otel-collector\"".to_string(),
        )];
        let auth = Authenticator::open(file, FailureLimit::default())
            .unwrap()
            .with_certificates(map.into_iter().collect());
        let p = auth.identify(None, None, Some("collector-1")).unwrap();
        assert_eq!(p.uid, "Custos::Service::\"otel-collector\"");
        assert_eq!(p.token_id, "certificate:collector-1");
        let p = auth
            .identify(Some(&bearer(&ana.token)), None, Some("collector-1"))
            .unwrap();
        assert_eq!(p.uid, "Custos::User::\"ana\"");
        let e = auth.identify(None, None, Some("mallory")).unwrap_err();
        assert_eq!(
            e,
            Refusal::UnmappedCertificate {
                common_name: "mallory".into()
            }
        );
        assert!(e.to_string().contains("`[tls.clients]`"), "{e}");
        assert_eq!(auth.identify(None, None, None), Err(Refusal::Missing));
        // A wrong token is not rescued by a good certificate.
        assert_eq!(
            auth.identify(Some("Bearer cst_nope"), None, Some("collector-1")),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn expired_tokens_are_refused_and_process_tokens_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let soon = Utc::now() + chrono::Duration::milliseconds(300);
        let t = file
            .create("Custos::User::\"ana\"", Some(soon), "")
            .unwrap();
        let auth = Authenticator::open(file.clone(), FailureLimit::default()).unwrap();
        assert!(auth.authenticate(Some(&bearer(&t.token)), None).is_ok());
        std::thread::sleep(Duration::from_millis(350));
        assert!(matches!(
            auth.authenticate(Some(&bearer(&t.token)), None),
            Err(Refusal::Expired { .. })
        ));
        assert!(auth.valid_principals().is_empty());
        let own = auth
            .process_token("Custos::Service::\"executor\"", "own")
            .unwrap();
        let p = auth.authenticate(Some(&bearer(&own)), None).unwrap();
        assert_eq!(p.uid, "Custos::Service::\"executor\"");
        assert_eq!(
            file.read().unwrap().len(),
            1,
            "process tokens stay in memory"
        );
    }

    #[test]
    fn repeated_failures_from_one_address_wait_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let good = file.create("Custos::User::\"ana\"", None, "").unwrap();
        let limit = FailureLimit {
            max_failures: 3,
            window: Duration::from_millis(400),
        };
        let auth = Authenticator::open(file, limit).unwrap();
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(
                auth.authenticate(Some("Bearer wrong"), Some(bad)),
                Err(Refusal::Unknown)
            );
        }
        let refused = auth.authenticate(Some(&bearer(&good.token)), Some(bad));
        assert!(
            matches!(refused, Err(Refusal::Throttled { .. })),
            "{refused:?}"
        );
        assert_eq!(
            auth.authenticate(None, Some(bad)),
            Err(Refusal::Missing),
            "no credentials, nothing to slow down"
        );
        assert!(
            auth.authenticate(Some(&bearer(&good.token)), Some(other))
                .is_ok()
        );
        std::thread::sleep(Duration::from_millis(450));
        assert!(
            auth.authenticate(Some(&bearer(&good.token)), Some(bad))
                .is_ok()
        );
    }

    #[test]
    fn a_damaged_file_fails_closed_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let t = file.create("Custos::User::\"ana\"", None, "").unwrap();
        let auth = Authenticator::open(file.clone(), FailureLimit::default()).unwrap();
        std::fs::write(file.path(), "not json").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert_eq!(
            auth.authenticate(Some(&bearer(&t.token)), None),
            Err(Refusal::Unknown)
        );
        std::fs::remove_file(file.path()).unwrap();
        let t2 = file.create("Custos::User::\"ana\"", None, "").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert!(auth.authenticate(Some(&bearer(&t2.token)), None).is_ok());
    }
}
