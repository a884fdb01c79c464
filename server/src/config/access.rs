//! `[tls]` and `[auth]`: who may connect, and how they prove it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::positive;
use crate::{Error, Result};

/// `[tls]`: TLS (rustls) on every listener: the API, OTLP/HTTP and OTLP/gRPC.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain, leaf first. With `key`, every listener
    /// speaks only TLS.
    pub cert: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, RSA or EC).
    pub key: Option<PathBuf>,
    /// PEM file of the CA(s) that sign client certificates. With it every client must present
    /// a certificate they signed (mutual TLS), on every listener.
    pub client_ca: Option<PathBuf>,
    /// Client certificates that stand for a principal: subject common name = Cedar entity
    /// (`"collector-1" = 'Custos::Service::"otel-collector"'`). A client presenting a mapped
    /// certificate needs no token; one sending a token is the token's principal.
    #[serde(default)]
    pub clients: std::collections::BTreeMap<String, String>,
}

/// TLS settings, loaded.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The listeners' TLS, when configured.
    pub server: Option<custos_net::ServerTls>,
    /// Certificate common name → principal.
    pub clients: std::collections::HashMap<String, String>,
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<TlsOptions> {
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                if self.client_ca.is_some() || !self.clients.is_empty() {
                    return Err(Error::Config(
                        "`tls.client_ca` and `tls.clients` need the server's own `tls.cert` and `tls.key`".into(),
                    ));
                }
                return Ok(TlsOptions::default());
            }
            _ => {
                return Err(Error::Config(
                    "`tls.cert` and `tls.key` go together: set both (or neither, for plain TCP)"
                        .into(),
                ));
            }
        };
        if self.client_ca.is_none() && !self.clients.is_empty() {
            return Err(Error::Config(
                "`tls.clients` maps client certificates, which are asked for only with `tls.client_ca`: set it".into(),
            ));
        }
        let server = custos_net::ServerTls::load(cert, key, self.client_ca.as_deref())
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(TlsOptions {
            server: Some(server),
            clients: self.clients.clone().into_iter().collect(),
        })
    }
}

/// `[auth]`: every listener authenticates with bearer tokens (docs/governance.md); these are
/// the knobs around it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Serve `GET /metrics` without a token, for a scraper that cannot send one (default false:
    /// Prometheus sends `authorization: Bearer` with `authorization.credentials_file`).
    pub metrics_open: Option<bool>,
    /// The member of `Team::"admins"` the server writes a token for at start, to
    /// `DATA/auth/admin.token`, when no admin has a valid token (default `Custos::User::"admin"`).
    pub admin: Option<String>,
    /// Failed authentications one client address may make per window before its requests are
    /// refused with 429 until the window ends (default 20).
    pub max_failures: Option<u32>,
    /// The failure window in seconds (default 60).
    pub failure_window_secs: Option<u64>,
}

/// Authentication settings, resolved.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// `/metrics` without a token.
    pub metrics_open: bool,
    /// The bootstrap admin principal.
    pub admin: String,
    /// Failures per address and window.
    pub limit: custos_auth::FailureLimit,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            metrics_open: false,
            admin: "Custos::User::\"admin\"".into(),
            limit: custos_auth::FailureLimit::default(),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<AuthOptions> {
        let d = AuthOptions::default();
        let max_failures = match self.max_failures {
            Some(0) => {
                return Err(Error::Config(
                    "`auth.max_failures` must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => d.limit.max_failures,
        };
        let window = positive("auth.failure_window_secs", self.failure_window_secs, 60)?;
        Ok(AuthOptions {
            metrics_open: self.metrics_open.unwrap_or(false),
            admin: self.admin.clone().unwrap_or(d.admin),
            limit: custos_auth::FailureLimit {
                max_failures,
                window: Duration::from_secs(window),
            },
        })
    }
}
