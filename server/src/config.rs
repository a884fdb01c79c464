//! The configuration file (`custos.toml`) and its validation into runtime options.
//!
//! Every section and field is optional; command-line flags override the file. Unknown fields are
//! errors, so a typo never silently falls back to a default. `custos.example.toml` at the
//! repository root documents every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use custos_analytics::QueryOptions;
use custos_collector::ReceiverOptions;
use custos_store::StoreOptions;
use serde::Deserialize;

use crate::{Error, Result};

mod access;
mod executor;
pub use access::{AuthConfig, AuthOptions, TlsConfig, TlsOptions};
pub use executor::{ExecutorConfig, ExecutorSettings};

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory holding the WAL and the Delta tables (default `./custos-data`).
    pub data_dir: Option<PathBuf>,
    /// Listen addresses.
    #[serde(default)]
    pub listen: ListenConfig,
    /// OTLP receiver limits.
    #[serde(default)]
    pub receiver: ReceiverConfig,
    /// Storage: memory budget, flushing, compaction, retention.
    #[serde(default)]
    pub store: StoreConfig,
    /// SQL limits.
    #[serde(default)]
    pub query: QueryConfig,
    /// Rules files: model prices and SLOs.
    #[serde(default)]
    pub rules: RulesConfig,
    /// The reference executor: which workflows the server runs.
    #[serde(default)]
    pub executor: ExecutorConfig,
    /// Authentication: the bootstrap admin, `/metrics`, the failure limit.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS on every listener, and mutual TLS.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[rules]`: the price table and the SLO definitions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Model price table (default `rules/prices.yaml` when that file exists). A file named here
    /// must exist.
    pub prices: Option<PathBuf>,
    /// SLO definitions (default `rules/slos.yaml` when that file exists). A file named here must
    /// exist.
    pub slos: Option<PathBuf>,
    /// How often the server evaluates the SLOs for `/metrics`, in seconds (default 60).
    pub slo_interval_secs: Option<u64>,
    /// Redaction rules applied to every export before it is written (default
    /// `rules/redaction.yaml` when that file exists; without one the shipped detectors apply with
    /// their defaults). A file named here must exist. docs/privacy.md.
    pub redaction: Option<PathBuf>,
    /// Policy directory: `schema.cedarschema`, `*.cedar` and the entity store `entities.json`
    /// (default `rules/policy` when it exists). Without policies, `/api/authorize` and
    /// `/api/gate` deny everything.
    pub policies: Option<PathBuf>,
}

/// Where the rules files are, resolved.
#[derive(Debug, Clone, Default)]
pub struct RulesOptions {
    /// Price table, if any.
    pub prices: Option<PathBuf>,
    /// SLO file, if any.
    pub slos: Option<PathBuf>,
    /// SLO evaluation interval for `/metrics`.
    pub slo_interval: Duration,
    /// Policy directory, if any.
    pub policies: Option<PathBuf>,
    /// Redaction rules, if a file is configured (else the shipped defaults).
    pub redaction: Option<PathBuf>,
}

impl RulesOptions {
    /// Resolves explicit paths (which must exist) and the defaults under `rules/` (used when they
    /// exist).
    pub fn resolve(prices: Option<PathBuf>, slos: Option<PathBuf>) -> Result<Self> {
        let pick =
            |field: &str, explicit: Option<PathBuf>, default: &str| -> Result<Option<PathBuf>> {
                match explicit {
                    Some(p) if p.is_file() => Ok(Some(p)),
                    Some(p) => Err(Error::Config(format!(
                        "`{field}` = `{}` does not exist or is not a file",
                        p.display()
                    ))),
                    None => {
                        let d = PathBuf::from(default);
                        Ok(d.is_file().then_some(d))
                    }
                }
            };
        Ok(Self {
            prices: pick("rules.prices", prices, "rules/prices.yaml")?,
            slos: pick("rules.slos", slos, "rules/slos.yaml")?,
            slo_interval: Duration::from_secs(60),
            policies: None,
            redaction: Some(PathBuf::from("rules/redaction.yaml")).filter(|d| d.is_file()),
        })
    }

    /// Sets the redaction rules: an explicit file must exist (without one, the default
    /// `rules/redaction.yaml` stays when it exists).
    pub fn with_redaction(mut self, explicit: Option<PathBuf>) -> Result<Self> {
        match explicit {
            Some(p) if p.is_file() => self.redaction = Some(p),
            Some(p) => {
                return Err(Error::Config(format!(
                    "`rules.redaction` = `{}` does not exist or is not a file",
                    p.display()
                )));
            }
            None => {}
        }
        Ok(self)
    }

    /// Resolves the policy directory: an explicit one must exist; the default `rules/policy` is
    /// used when it exists.
    pub fn with_policies(mut self, explicit: Option<PathBuf>) -> Result<Self> {
        self.policies = match explicit {
            Some(p) if p.is_dir() => Some(p),
            Some(p) => {
                return Err(Error::Config(format!(
                    "`rules.policies` = `{}` is not a directory",
                    p.display()
                )));
            }
            None => {
                let d = PathBuf::from("rules/policy");
                d.is_dir().then_some(d)
            }
        };
        Ok(self)
    }
}

/// `[listen]`: where the server listens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// OTLP/gRPC address (default `127.0.0.1:4317`).
    pub otlp_grpc: Option<String>,
    /// OTLP/HTTP address (default `127.0.0.1:4318`).
    pub otlp_http: Option<String>,
    /// HTTP API address (default `127.0.0.1:4380`).
    pub api: Option<String>,
    /// Connections each listener keeps open at once (default 4,096); at the cap it stops
    /// accepting until one closes. Keep it well under `ulimit -n` (three listeners share it).
    pub max_connections: Option<u64>,
    /// Seconds a client has to send a request's headers, or to start its first HTTP/2 request
    /// (default 10); an HTTP/1.1 keep-alive connection waiting longer for its next request is
    /// closed too.
    pub header_timeout_secs: Option<u64>,
    /// Seconds an HTTP/2 connection may move no byte before it is closed (default 60).
    pub idle_timeout_secs: Option<u64>,
}

/// `[receiver]`: OTLP request limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Largest request body in MiB, measured after decompression (default 16).
    pub max_body_mib: Option<u64>,
    /// Seconds clients are told to wait when the server is overloaded (default 1).
    pub retry_after_secs: Option<u64>,
    /// Spans one export may carry (default 65,536); more get 413 / `RESOURCE_EXHAUSTED` before
    /// anything is decoded.
    pub max_spans_per_request: Option<u64>,
    /// Attributes directly on one span, event, link, scope or resource (default 1,024).
    pub max_attributes: Option<u64>,
    /// MiB one export may take once decoded, as counted before decoding (default: half of
    /// `store.memory_budget_mib`, which it is reserved from, at most 256).
    pub max_decoded_mib: Option<u64>,
    /// Exports decoded at once, on threads apart from the async workers (default: one per core).
    pub max_decoders: Option<u64>,
    /// Days before now a span may start (default 730: two years of backfill); older spans are
    /// rejected as a partial success naming them. A clock at 1970 would otherwise make
    /// partitions and metric series of its own.
    pub max_span_age_days: Option<u64>,
    /// Seconds after now a span may start (default 3600: clocks run a little fast).
    pub max_span_future_secs: Option<u64>,
}

/// `[store]`: the span store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Memory for the memtable and requests in flight, in MiB (default 1024). When it is used up,
    /// receivers answer 503 / UNAVAILABLE until a flush frees memory.
    pub memory_budget_mib: Option<u64>,
    /// Flush the memtable to the table at least this often, in seconds (default 10).
    pub flush_interval_secs: Option<u64>,
    /// Flush as soon as the memtable holds this many MiB (default 128).
    pub flush_mib: Option<u64>,
    /// Run compaction and retention this often, in seconds (default 300).
    pub maintenance_interval_secs: Option<u64>,
    /// Compact a partition once it has this many files (default 16).
    pub compact_min_files: Option<usize>,
    /// Target size of compacted files in MiB (default 128).
    pub target_file_mib: Option<u64>,
    /// Delete spans older than this many days (default: keep everything).
    pub retention_days: Option<u32>,
    /// Seconds the files an erasure replaced stay on disk for queries still reading them, before
    /// maintenance removes them (default 3600; `custos erase --now` skips the wait).
    pub erase_grace_secs: Option<u64>,
    /// What encrypts the data directory's volume when custos cannot see it (a cloud provider's
    /// encrypted volume: `"aws-ebs-kms"`); without it the server detects dm-crypt (LUKS) and
    /// warns when it finds none. docs/privacy.md.
    pub encryption_at_rest: Option<String>,
}

/// `[query]`: SQL limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Memory one query may use, in MiB (default 512); sorts and aggregations spill past it.
    pub memory_limit_mib: Option<u64>,
    /// Seconds a query may run (default 30).
    pub timeout_secs: Option<u64>,
    /// Callers' queries (`/api/sql` and the analytics routes) that may run at once (default 2);
    /// one more gets 429 with `Retry-After: 1` rather than a place in a queue behind heavy ones.
    pub max_concurrent: Option<u64>,
    /// Rows one query may return (default 1,000,000); past it the query is stopped with 413.
    pub max_result_rows: Option<u64>,
    /// MiB of Arrow memory one query's result may take (default 64); past it, 413.
    pub max_result_mib: Option<u64>,
    /// Threads of the runtime queries run on, apart from ingest (default: one per core).
    pub threads: Option<u64>,
}

/// Validated runtime settings of a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// OTLP/gRPC listen address.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http: SocketAddr,
    /// API listen address.
    pub api: SocketAddr,
    /// Connection limits of every listener.
    pub connections: custos_net::serve::Limits,
    /// Store settings (including the data directory).
    pub store: StoreOptions,
    /// Receiver limits.
    pub receiver: ReceiverOptions,
    /// Query limits.
    pub query: QueryOptions,
    /// Rules files.
    pub rules: RulesOptions,
    /// The reference executor.
    pub executor: ExecutorSettings,
    /// Authentication.
    pub auth: AuthOptions,
    /// TLS.
    pub tls: TlsOptions,
    /// `[store] encryption_at_rest`: a declared volume encryption.
    pub encryption_at_rest: Option<String>,
}

fn addr(field: &str, v: Option<&str>, default: &str) -> Result<SocketAddr> {
    let s = v.unwrap_or(default);
    s.parse().map_err(|e| {
        Error::Config(format!(
            "`{field}` = `{s}` is not a socket address ({e}); write it like `127.0.0.1:4317`"
        ))
    })
}

pub(super) fn positive(field: &str, v: Option<u64>, default: u64) -> Result<u64> {
    match v {
        Some(0) => Err(Error::Config(format!("`{field}` must be greater than 0"))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file `{}`: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("invalid config file `{}`: {e}", path.display())))
    }

    /// Checks every value once and builds the runtime options.
    pub fn validate(&self) -> Result<ServerOptions> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./custos-data"));
        let store = self.store.validate(data_dir)?;
        let receiver = self.receiver.validate(store.memory_budget_bytes as u64)?;
        if store.memory_budget_bytes < receiver.max_body_bytes.saturating_mul(2) {
            return Err(Error::Config(format!(
                "`store.memory_budget_mib` ({}) must be at least twice `receiver.max_body_mib` ({}), or a large export could never be admitted",
                store.memory_budget_bytes / MIB as usize,
                receiver.max_body_bytes / MIB as usize
            )));
        }
        let decoded = receiver.census.max_decoded_bytes;
        if (store.memory_budget_bytes as u64) < decoded.saturating_mul(2) {
            return Err(Error::Config(format!(
                "`store.memory_budget_mib` ({}) must be at least twice `receiver.max_decoded_mib` \
                 ({}), or a large export could never be admitted",
                store.memory_budget_bytes / MIB as usize,
                decoded / MIB
            )));
        }
        let listen = &self.listen;
        Ok(ServerOptions {
            otlp_grpc: addr(
                "listen.otlp_grpc",
                listen.otlp_grpc.as_deref(),
                "127.0.0.1:4317",
            )?,
            otlp_http: addr(
                "listen.otlp_http",
                listen.otlp_http.as_deref(),
                "127.0.0.1:4318",
            )?,
            api: addr("listen.api", listen.api.as_deref(), "127.0.0.1:4380")?,
            connections: custos_net::serve::Limits {
                max_connections: positive("listen.max_connections", listen.max_connections, 4096)?
                    .min(1 << 20) as usize,
                header_timeout: Duration::from_secs(
                    positive("listen.header_timeout_secs", listen.header_timeout_secs, 10)?
                        .min(3600),
                ),
                idle_timeout: Duration::from_secs(
                    positive("listen.idle_timeout_secs", listen.idle_timeout_secs, 60)?.min(86_400),
                ),
            },
            store,
            receiver,
            query: self.query.validate()?,
            rules: self.rules.validate()?,
            executor: self.executor.validate()?,
            auth: self.auth.validate()?,
            tls: self.tls.validate()?,
            encryption_at_rest: match self.store.encryption_at_rest.as_deref().map(str::trim) {
                Some("") => {
                    return Err(Error::Config(
                        "`store.encryption_at_rest` must say what encrypts the volume (e.g. `aws-ebs-kms`), or be left out".into(),
                    ));
                }
                other => other.map(str::to_string),
            },
        })
    }
}

const MIB: u64 = 1 << 20;

impl StoreConfig {
    fn validate(&self, data_dir: PathBuf) -> Result<StoreOptions> {
        let mut store = StoreOptions::new(data_dir);
        store.memory_budget_bytes =
            (positive("store.memory_budget_mib", self.memory_budget_mib, 1024)? * MIB) as usize;
        store.flush_interval = Duration::from_secs(positive(
            "store.flush_interval_secs",
            self.flush_interval_secs,
            10,
        )?);
        store.flush_bytes = (positive("store.flush_mib", self.flush_mib, 128)? * MIB) as usize;
        if store.flush_bytes > store.memory_budget_bytes {
            return Err(Error::Config(format!(
                "`store.flush_mib` ({}) must not exceed `store.memory_budget_mib` ({}), or the store would refuse writes before it flushes",
                store.flush_bytes / MIB as usize,
                store.memory_budget_bytes / MIB as usize
            )));
        }
        store.maintenance_interval = Duration::from_secs(positive(
            "store.maintenance_interval_secs",
            self.maintenance_interval_secs,
            300,
        )?);
        store.compact_min_files = self.compact_min_files.unwrap_or(16).max(2);
        store.target_file_bytes =
            positive("store.target_file_mib", self.target_file_mib, 128)? * MIB;
        store.retention_days = self.retention_days;
        store.erase_grace = Duration::from_secs(positive(
            "store.erase_grace_secs",
            self.erase_grace_secs,
            3600,
        )?);
        if self.retention_days == Some(0) {
            return Err(Error::Config(
                "`store.retention_days` must be at least 1; omit it to keep everything".into(),
            ));
        }
        Ok(store)
    }
}

impl ReceiverConfig {
    fn validate(&self, memory_budget: u64) -> Result<ReceiverOptions> {
        // Unless set, an export may decode to half the memory budget, at most 256 MiB.
        let decoded_default = (memory_budget / 2 / MIB).clamp(1, 256);
        Ok(ReceiverOptions {
            max_body_bytes: (positive("receiver.max_body_mib", self.max_body_mib, 16)?.min(1 << 12)
                * MIB) as usize,
            retry_after: Duration::from_secs(positive(
                "receiver.retry_after_secs",
                self.retry_after_secs,
                1,
            )?),
            census: custos_collector::census::Limits {
                max_spans: positive(
                    "receiver.max_spans_per_request",
                    self.max_spans_per_request,
                    65_536,
                )?,
                max_attributes: positive("receiver.max_attributes", self.max_attributes, 1_024)?,
                max_decoded_bytes: positive(
                    "receiver.max_decoded_mib",
                    self.max_decoded_mib,
                    decoded_default,
                )?
                .min(1 << 16)
                    * MIB,
            },
            max_decoders: positive("receiver.max_decoders", self.max_decoders, 0)?.min(1024)
                as usize,
            span_window: Some((
                Duration::from_secs(
                    positive("receiver.max_span_age_days", self.max_span_age_days, 730)?
                        .min(106_000)
                        * 86_400,
                ),
                Duration::from_secs(
                    positive(
                        "receiver.max_span_future_secs",
                        self.max_span_future_secs,
                        3600,
                    )?
                    .min(100 * 365 * 86_400),
                ),
            )),
        })
    }
}

impl QueryConfig {
    fn validate(&self) -> Result<QueryOptions> {
        Ok(QueryOptions {
            memory_limit_bytes: (positive("query.memory_limit_mib", self.memory_limit_mib, 512)?
                * MIB) as usize,
            timeout: Duration::from_secs(positive("query.timeout_secs", self.timeout_secs, 30)?),
            target_partitions: 0,
            threads: positive("query.threads", self.threads, 0)?.min(1024) as usize,
            result: custos_analytics::exec::ResultLimits {
                max_rows: positive("query.max_result_rows", self.max_result_rows, 1_000_000)?
                    as usize,
                max_bytes: (positive("query.max_result_mib", self.max_result_mib, 64)?.min(1 << 20)
                    * MIB) as usize,
            },
            max_concurrent: positive("query.max_concurrent", self.max_concurrent, 2)?.min(1024)
                as usize,
        })
    }
}

impl RulesConfig {
    fn validate(&self) -> Result<RulesOptions> {
        let mut r = RulesOptions::resolve(self.prices.clone(), self.slos.clone())?
            .with_policies(self.policies.clone())?
            .with_redaction(self.redaction.clone())?;
        r.slo_interval = Duration::from_secs(positive(
            "rules.slo_interval_secs",
            self.slo_interval_secs,
            60,
        )?);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let text = include_str!("../../custos.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        let o = c.validate().unwrap();
        assert_eq!(o.otlp_grpc.port(), 4317);
        assert_eq!(o.store.retention_days, Some(30));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        let e = toml::from_str::<Config>("[store]\nflush_intervall_secs = 3\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown field `flush_intervall_secs`"),
            "{e}"
        );
        let c: Config = toml::from_str("[listen]\napi = \"localhost\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`listen.api` = `localhost`"), "{e}");
        let c: Config = toml::from_str("[store]\nflush_mib = 2048\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("flush_mib"));
    }
}
