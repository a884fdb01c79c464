//! The edge of access control: every API request and every OTLP export is authenticated from
//! its headers before its body is read, then the operation is decided by the policies
//! (`custos_governance::access`); refusals become 401, 403 and 429 here and nowhere else.
//!
//! At start the server makes sure someone can get in: when no valid token of a member of
//! `Team::"admins"` exists, it writes one to `DATA/auth/admin.token` (mode 0600) and says where,
//! never what. Its own executor gets a token that lives only in the process.

use custos_net::Peer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use custos_audit::AuditLog;
use custos_auth::{Authenticator, Principal, Refusal};
use custos_collector::admit::{Admission, Rejection, Source};
use custos_governance::access::{self, Operation};
use custos_policy::engine::{Decision, Engine};
use custos_policy::live::Live;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::start::ApiState;
use crate::{Error, Result, SERVER_PRINCIPAL};

/// The principal of the server's own executor.
pub const EXECUTOR_PRINCIPAL: &str = "Custos::Service::\"executor\"";
/// The team whose members may do every operation on custos.
pub const ADMINS: &str = "Custos::Team::\"admins\"";
/// File name of the bootstrap admin token inside `DATA/auth/`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How often one principal's refused exports are recorded (the rest are counted).
const INGEST_DENIAL_RECORD_EVERY: Duration = Duration::from_secs(60);

type Labels = Vec<(String, String)>;

/// Counters of authentication failures and access decisions, for `/metrics`.
#[derive(Clone, Default)]
pub(crate) struct AccessCounters {
    /// `custos_auth_failures_total{listener, reason}`.
    pub(crate) failures: Family<Labels, Counter>,
    /// `custos_access_decisions_total{action, decision}`.
    pub(crate) decisions: Family<Labels, Counter>,
}

impl AccessCounters {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "custos_auth_failures",
            "Requests refused before authentication succeeded, by listener and reason",
            self.failures.clone(),
        );
        r.register(
            "custos_access_decisions",
            "Access decisions on authenticated callers, by action and decision",
            self.decisions.clone(),
        );
    }

    fn failure(&self, listener: &str, reason: &str) {
        self.failures
            .get_or_create(&vec![
                ("listener".into(), listener.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }

    fn decision(&self, action: &str, decision: &str) {
        self.decisions
            .get_or_create(&vec![
                ("action".into(), action.into()),
                ("decision".into(), decision.into()),
            ])
            .inc();
    }
}

/// What access control needs at run time.
pub(crate) struct Access {
    pub(crate) authn: Arc<Authenticator>,
    /// The policies in force (a reload replaces them).
    pub(crate) engine: Live,
    pub(crate) audit: Arc<AuditLog>,
    /// `[tls.clients]`: certificate common names and the principals they stand for, checked
    /// against the entity store at start and at every reload.
    pub(crate) certificate_principals: Vec<(String, String)>,
    /// `/metrics` without a token.
    pub(crate) metrics_open: bool,
    pub(crate) counters: AccessCounters,
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

impl Caller {
    /// The caller's Cedar entity.
    pub(crate) fn uid(&self) -> &str {
        &self.0.uid
    }

    /// Whether `named` (a body's `reviewer` or `started_by`) is the caller: its Cedar reference,
    /// or a user's bare id.
    pub(crate) fn is(&self, named: &str) -> bool {
        named == self.uid() || self.user_name().is_some_and(|u| u == named)
    }

    /// A body's `field` may repeat the caller but never name someone else: the 400 that says so,
    /// if it does (`who` is what the field means: "starts a run", "reviews").
    pub(crate) fn refuse_named(
        &self,
        field: &str,
        named: Option<&str>,
        who: &str,
    ) -> Option<Response> {
        let n = named.filter(|n| !self.is(n))?;
        Some(crate::routes::json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{field}` = `{n}` is not the caller `{}`: the token says who {who}; leave the field out",
                self.uid()
            ),
        ))
    }

    /// The user's id, when the caller is a `Custos::User` (reviewers are people).
    pub(crate) fn user_name(&self) -> Option<String> {
        let rest = self.0.uid.strip_prefix("Custos::User::")?;
        serde_json::from_str::<String>(rest).ok()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthenticated(&Refusal::Missing))
    }
}

fn header_value(v: Option<&HeaderValue>) -> Option<&str> {
    // A header that is not text is still credentials, just malformed ones.
    v.map(|v| v.to_str().unwrap_or("?"))
}

/// The 401 (or 429) for a refusal.
pub(crate) fn unauthenticated(r: &Refusal) -> Response {
    let body = serde_json::json!({ "error": r.to_string() });
    if let Refusal::Throttled { retry_after_secs } = r {
        let mut res = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        return res;
    }
    let challenge = match r {
        Refusal::Missing => "Bearer realm=\"custos\"",
        _ => "Bearer realm=\"custos\", error=\"invalid_token\"",
    };
    let mut res = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

/// Whether `path` is served without a token.
pub(crate) fn open_path(path: &str, metrics_open: bool) -> bool {
    matches!(path, "/healthz" | "/readyz") || (metrics_open && path == "/metrics")
}

/// The API's authentication layer: runs before any handler, so before any body is read.
pub(crate) async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let access = &state.access;
    if open_path(req.uri().path(), access.metrics_open) {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
    let header = header_value(req.headers().get(header::AUTHORIZATION));
    let certificate = peer.and_then(|p| p.certificate.as_deref());
    match access
        .authn
        .identify(header, peer.map(|p| p.addr.ip()), certificate)
    {
        Ok(p) => {
            req.extensions_mut().insert(Caller(p));
            next.run(req).await
        }
        Err(r) => {
            access.counters.failure("api", r.reason());
            unauthenticated(&r)
        }
    }
}

impl ApiState {
    /// Lets `caller` do `op`, or answers the 403 (recorded) or the 500 that stops it. Allowed
    /// reads are decided in place; denials and writes are recorded before this returns.
    pub(crate) async fn allow(
        &self,
        caller: &Caller,
        op: Operation,
    ) -> std::result::Result<(), Response> {
        let a = &self.access;
        let d = access::decide(&a.engine.current(), caller.uid(), &op);
        a.counters.decision(op.action, &d.decision);
        if d.allowed() && !op.write {
            return Ok(());
        }
        let (audit, principal, token) = (
            a.audit.clone(),
            caller.uid().to_string(),
            caller.0.token_id.clone(),
        );
        let (op2, d2) = (op.clone(), d.clone());
        let recorded = tokio::task::spawn_blocking(move || {
            access::record(&audit, &principal, &token, &op2, &d2)
        })
        .await;
        match recorded {
            Ok(Ok(_)) if d.allowed() => Ok(()),
            Ok(Ok(record)) => Err(forbidden(caller.uid(), &op, &d, record.seq)),
            Ok(Err(e)) => Err(crate::routes::json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the access decision could not be recorded, so it is a deny: {e}"),
            )),
            Err(e) => Err(crate::routes::json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the access decision failed, so it is a deny: {e}"),
            )),
        }
    }
}

/// The 403 for a recorded denial: the action, the resource, the deciding policies.
fn forbidden(principal: &str, op: &Operation, d: &Decision, seq: u64) -> Response {
    let body = serde_json::json!({
        "error": access::denial_message(principal, op, d),
        "action": op.action,
        "resource": op.resource,
        "decision": d,
        "audit": {"seq": seq},
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// Admission of OTLP exports: a valid token whose principal may `ingest`.
pub(crate) struct IngestAdmission {
    pub(crate) authn: Arc<Authenticator>,
    pub(crate) engine: Live,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) counters: AccessCounters,
    /// Decisions by principal, for the engine generation they were made with (a reload empties
    /// the cache).
    decided: RwLock<(u64, HashMap<String, Arc<Decision>>)>,
    /// When each principal's refusal was last recorded.
    recorded: Mutex<HashMap<String, Instant>>,
}

impl IngestAdmission {
    pub(crate) fn new(a: &Access) -> Self {
        Self {
            authn: a.authn.clone(),
            engine: a.engine.clone(),
            audit: a.audit.clone(),
            counters: a.counters.clone(),
            decided: RwLock::new((0, HashMap::new())),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    fn decision(&self, p: &Principal) -> Arc<Decision> {
        // The generation is read before the engine: a decision cached under a generation was
        // made with that generation's engine or a later one, never an earlier one.
        let generation = self.engine.generation();
        if let Some(d) = self.decided.read().ok().and_then(|c| {
            (c.0 == generation)
                .then(|| c.1.get(&p.uid).cloned())
                .flatten()
        }) {
            return d;
        }
        let engine = self.engine.current();
        let d = Arc::new(access::decide(&engine, &p.uid, &Self::operation()));
        if let Ok(mut c) = self.decided.write() {
            if c.0 != generation {
                *c = (generation, HashMap::new());
            }
            c.1.insert(p.uid.clone(), d.clone());
        }
        d
    }

    fn operation() -> Operation {
        Operation::read("ingest", "OTLP export")
    }

    /// Records a refusal in the background, at most once a minute per principal.
    fn record_denial(&self, p: &Principal, d: &Decision) {
        let due = self.recorded.lock().is_ok_and(|mut m| {
            let due = m
                .get(&p.uid)
                .is_none_or(|t| t.elapsed() >= INGEST_DENIAL_RECORD_EVERY);
            if due {
                m.insert(p.uid.clone(), Instant::now());
            }
            due
        });
        if !due {
            return;
        }
        let (audit, p, d) = (self.audit.clone(), p.clone(), d.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = access::record(&audit, &p.uid, &p.token_id, &Self::operation(), &d) {
                tracing::error!(error = %e, "cannot record a refused export");
            }
        });
    }
}

impl Admission for IngestAdmission {
    fn admit(
        &self,
        authorization: Option<&str>,
        peer: Option<&Peer>,
    ) -> std::result::Result<Source, Rejection> {
        let certificate = peer.and_then(|p| p.certificate.as_deref());
        let ip = peer.map(|p| p.addr.ip());
        let p = self
            .authn
            .identify(authorization, ip, certificate)
            .map_err(|r| {
                self.counters.failure("otlp", r.reason());
                match r {
                    Refusal::Throttled { retry_after_secs } => Rejection::Throttled {
                        message: r.to_string(),
                        retry_after_secs,
                    },
                    Refusal::Missing => Rejection::Unauthenticated {
                        message: r.to_string(),
                        presented: false,
                    },
                    other => Rejection::Unauthenticated {
                        message: other.to_string(),
                        presented: true,
                    },
                }
            })?;
        let d = self.decision(&p);
        self.counters.decision("ingest", &d.decision);
        if d.allowed() {
            return Ok(Source(p.uid));
        }
        self.record_denial(&p, &d);
        Err(Rejection::Forbidden {
            message: access::denial_message(&p.uid, &Self::operation(), &d),
        })
    }
}

/// Makes sure an admin can get in: when no valid token of a member of `admins` exists, creates
/// one for `admin` and writes it alone to `DATA/auth/admin.token` (mode 0600). Returns the
/// file's path when it wrote one.
pub(crate) fn bootstrap_admin(
    authn: &Authenticator,
    engine: &Engine,
    audit: &AuditLog,
    admin: &str,
) -> Result<Option<PathBuf>> {
    if authn
        .valid_principals()
        .iter()
        .any(|p| engine.is_in(p, ADMINS))
    {
        return Ok(None);
    }
    if !engine.is_in(admin, ADMINS) || admin == ADMINS {
        return Err(Error::Config(format!(
            "no valid token of a member of `{ADMINS}` exists, and `auth.admin` = `{admin}` is not a member in `{}`: add it to that team in entities.json (or name a member in `[auth] admin`) so the server can write the first admin token",
            engine.policies().dir.join("entities.json").display()
        )));
    }
    let req = custos_governance::tokens::Request {
        principal: admin.to_string(),
        expires: None,
        note: "written at start to DATA/auth/admin.token: no admin had a valid token".into(),
    };
    let (new, _) =
        custos_governance::tokens::create(engine, authn.file(), audit, SERVER_PRINCIPAL, &req)?;
    let path = authn.file().dir().join(ADMIN_TOKEN_FILE);
    custos_auth::file::write_secret(&path, format!("{}\n", new.token).as_bytes())
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_and_an_opened_metrics_route_go_without_a_token() {
        assert!(open_path("/healthz", false));
        assert!(open_path("/readyz", false));
        assert!(!open_path("/metrics", false));
        assert!(open_path("/metrics", true));
        assert!(!open_path("/api/sql", true));
        assert!(!open_path("/healthz/", false));
    }

    #[test]
    fn reviewers_are_users() {
        let c = |uid: &str| {
            Caller(Principal {
                uid: uid.into(),
                token_id: "t".into(),
            })
        };
        assert_eq!(
            c("Custos::User::\"ana\"").user_name().as_deref(),
            Some("ana")
        );
        assert_eq!(c("Custos::Service::\"ci\"").user_name(), None);
        assert!(c("Custos::User::\"ana\"").is("ana"));
        assert!(c("Custos::User::\"ana\"").is("Custos::User::\"ana\""));
        assert!(!c("Custos::User::\"ana\"").is("ben"));
        assert!(!c("Custos::Service::\"ana\"").is("ana"));
    }
}
