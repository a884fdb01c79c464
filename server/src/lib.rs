//! The custos server: wires the OTLP receivers, the span store and the SQL engine together, and
//! serves the HTTP API.
//!
//! This crate owns process-level concerns: the configuration file ([`config`]), binding the three
//! listeners, the API routes (`POST /api/sql`, the analytics answers, `POST /api/authorize`,
//! `POST /api/gate`, `GET /api/audit/verify`, `GET /healthz`, `GET /metrics`), recording policy set
//! changes and every decision in the audit log, and graceful shutdown (stop accepting, finish
//! requests in flight, flush the memtable). Decide-and-record, the deploy gate and the audit report
//! are `custos-governance`'s; the server runs them on its store (`gate_offline`, `report_offline`).

pub mod config;
pub mod runs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custos_analytics::format::{Format, render};
use custos_analytics::slo::{SloReport, SloSet};
use custos_analytics::{Analytics, PriceTable, QueryOptions};
use custos_audit::AuditLog;
use custos_collector::CollectorMetrics;
use custos_collector::grpc::GrpcReceiver;
use custos_collector::ingest::Ingest;
use custos_governance::gate;
use custos_policy::engine::{AuthzRequest, Engine};
use custos_store::Store;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, RulesOptions, ServerOptions};

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen on `{addr}` for {what}: {cause}")]
    Bind {
        /// What the listener is for.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] custos_store::Error),
    /// The SQL engine failed to start.
    #[error(transparent)]
    Analytics(#[from] custos_analytics::Error),
    /// A server task failed.
    #[error("{0}")]
    Task(String),
    /// The policies could not be loaded.
    #[error(transparent)]
    Policy(#[from] custos_policy::Error),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// The executor failed.
    #[error(transparent)]
    Executor(custos_executor::Error),
    /// A governance step failed: the deploy gate cannot run as asked (a bad change file, an
    /// unknown format) or the report cannot be made. (Its analytics and audit failures are
    /// [`Error::Analytics`] and [`Error::Audit`].)
    #[error(transparent)]
    Governance(custos_governance::Error),
}

impl From<custos_governance::Error> for Error {
    fn from(e: custos_governance::Error) -> Self {
        match e {
            custos_governance::Error::Analytics(a) => Self::Analytics(a),
            custos_governance::Error::Audit(a) => Self::Audit(a),
            other => Self::Governance(other),
        }
    }
}

/// Result type of the server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Gauges refreshed from the store on every scrape.
#[derive(Default)]
struct StoreGauges {
    wal_bytes: Counter,
    wal_syncs: Counter,
    wal_sync_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    flushes: Counter,
    flush_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    flush_errors: Counter,
    last_flush_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_flush_timestamp: Gauge,
    memtable_rows: Gauge,
    memtable_bytes: Gauge,
    compactions: Counter,
    files: Family<Vec<(String, String)>, Gauge>,
}

/// The loaded rules files.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Model prices (empty when no file is configured).
    pub prices: PriceTable,
    /// SLO definitions, if a file is configured.
    pub slos: Option<SloSet>,
    /// The policy engine, if a policy directory is configured.
    pub engine: Option<Engine>,
    /// The policy directory as configured (paths in gate annotations start with it).
    pub policy_dir: Option<std::path::PathBuf>,
}

impl Rules {
    /// Loads and validates the configured files.
    pub fn load(options: &RulesOptions) -> Result<Self> {
        Ok(Self {
            prices: match &options.prices {
                Some(p) => PriceTable::load(p)?,
                None => PriceTable::empty(),
            },
            slos: options.slos.as_deref().map(SloSet::load).transpose()?,
            engine: options.policies.as_deref().map(Engine::load).transpose()?,
            policy_dir: options.policies.clone(),
        })
    }
}

/// A session over `store` with the rules' prices; SLO queries are planned once so a broken SLO
/// file is reported before anything serves.
pub async fn analytics_with_rules(
    store: Store,
    options: QueryOptions,
    rules: &Rules,
) -> Result<Analytics> {
    let analytics = Analytics::with_prices(store, options, rules.prices.clone()).await?;
    if let Some(slos) = &rules.slos {
        slos.check_sql(&analytics).await?;
    }
    Ok(analytics)
}

struct ApiState {
    analytics: Analytics,
    /// The data directory's audit log.
    audit: Arc<AuditLog>,
    rules: Rules,
    /// The latest background SLO evaluation, for `/metrics`.
    slo_report: std::sync::Mutex<Option<SloReport>>,
    store: Store,
    registry: Registry,
    store_gauges: StoreGauges,
    sql_seconds: Histogram,
    started: Instant,
    /// The reference executor, when workflows are configured.
    runner: Option<Arc<runs::Runner>>,
    /// The receivers' counters, for `/api/status`.
    collector_metrics: CollectorMetrics,
}

/// A running server.
pub struct RunningServer {
    /// Bound OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// Bound OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// Bound API address.
    pub api: SocketAddr,
    store: Store,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<Result<()>>)>,
    runner: Option<Arc<runs::Runner>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::Bind { what, addr, cause })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the store, the receivers and the API.
pub async fn start(options: ServerOptions) -> Result<RunningServer> {
    let store = Store::open(options.store.clone()).await?;
    let rules = Rules::load(&options.rules)?;
    let analytics = analytics_with_rules(store.clone(), options.query.clone(), &rules).await?;
    let audit = Arc::new(AuditLog::open(&audit_dir(&options.store.data_dir))?);
    if let Some(engine) = &rules.engine
        && gate::note_policy_set(&audit, engine, SERVER_PRINCIPAL)?
    {
        tracing::info!(
            hash = engine.hash(),
            "recorded a new policy set in the audit log"
        );
    }
    let metrics = CollectorMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let store_gauges = StoreGauges::default();
    register_store_gauges(&mut registry, &store_gauges);
    let wal_sync = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
    registry.register(
        "custos_wal_sync_duration_seconds",
        "Latency of one WAL group commit (write and fdatasync)",
        wal_sync.clone(),
    );
    let _ = store
        .stats()
        .sync_observer
        .set(Box::new(move |secs| wal_sync.observe(secs)));
    let sql_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
    registry.register(
        "custos_sql_query_duration_seconds",
        "SQL query latency",
        sql_seconds.clone(),
    );
    let collector_metrics = metrics.clone();
    let ingest = Ingest {
        store: store.clone(),
        options: options.receiver.clone(),
        metrics,
    };

    let grpc_listener = bind("OTLP/gRPC", options.otlp_grpc).await?;
    let http_listener = bind("OTLP/HTTP", options.otlp_http).await?;
    let api_listener = bind("the API", options.api).await?;
    let local = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
        l.local_addr()
            .map_err(|cause| Error::Bind { what, addr, cause })
    };
    let otlp_grpc = local(&grpc_listener, "OTLP/gRPC", options.otlp_grpc)?;
    let otlp_http = local(&http_listener, "OTLP/HTTP", options.otlp_http)?;
    let api = local(&api_listener, "the API", options.api)?;

    let (stop, rx) = watch::channel(false);
    let mut tasks: Vec<(&'static str, JoinHandle<Result<()>>)> = Vec::new();
    let receiver = GrpcReceiver::new(ingest.clone());
    let s = stopped(rx.clone());
    tasks.push((
        "OTLP/gRPC",
        tokio::spawn(async move {
            custos_collector::grpc::serve(grpc_listener, receiver, s)
                .await
                .map_err(|e| Error::Task(e.to_string()))
        }),
    ));
    let s = stopped(rx.clone());
    let http_ingest = ingest.clone();
    tasks.push((
        "OTLP/HTTP",
        tokio::spawn(async move {
            custos_collector::http::serve(http_listener, http_ingest, s)
                .await
                .map_err(|e| Error::Task(e.to_string()))
        }),
    ));
    let runner = runs::open(
        &options.executor,
        &options.store.data_dir,
        rules.engine.clone(),
        otlp_http,
    )?;
    if let Some(r) = &runner {
        let r = r.clone();
        let s = stopped(rx.clone());
        tasks.push((
            "executor",
            tokio::spawn(async move {
                runs::background(r, s).await;
                Ok(())
            }),
        ));
    }
    let state = Arc::new(ApiState {
        collector_metrics,
        runner: runner.clone(),
        analytics,
        audit,
        rules,
        slo_report: std::sync::Mutex::new(None),
        store: store.clone(),
        registry,
        store_gauges,
        sql_seconds,
        started: Instant::now(),
    });
    if state.rules.slos.is_some() {
        let st = state.clone();
        let interval = options.rules.slo_interval;
        let s = stopped(rx.clone());
        tasks.push((
            "SLO evaluation",
            tokio::spawn(async move {
                tokio::select! {
                    _ = s => {}
                    _ = evaluate_slos_forever(st, interval) => {}
                }
                Ok(())
            }),
        ));
    }
    let s = stopped(rx);
    tasks.push((
        "API",
        tokio::spawn(async move {
            axum::serve(api_listener, api_router(state))
                .with_graceful_shutdown(s)
                .await
                .map_err(|e| Error::Task(format!("API server failed: {e}")))
        }),
    ));
    Ok(RunningServer {
        otlp_grpc,
        otlp_http,
        api,
        store,
        stop,
        tasks,
        runner,
    })
}

impl RunningServer {
    /// The store, for in-process callers and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting, lets requests in flight finish, then flushes the memtable.
    pub async fn shutdown(self) -> Result<()> {
        // The executor's spans go to our own receiver: send them while it still listens.
        if let Some(r) = &self.runner {
            let ex = r.executor.clone();
            let sent = tokio::task::spawn_blocking(move || ex.telemetry().flush()).await;
            if let Ok(Err(e)) = sent {
                tracing::warn!(error = %e, "cannot send the executor's last spans");
            }
        }
        let _ = self.stop.send(true);
        let mut first_err = None;
        for (what, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first_err.get_or_insert(e);
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(Error::Task(format!("{what} task panicked: {e}")));
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Task(format!(
                        "{what} did not finish its requests within 30 s"
                    )));
                }
            }
        }
        self.store.shutdown().await?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn register_store_gauges(r: &mut Registry, g: &StoreGauges) {
    r.register(
        "custos_wal_bytes",
        "Bytes appended to the WAL",
        g.wal_bytes.clone(),
    );
    r.register(
        "custos_wal_syncs",
        "WAL fsyncs (one per group commit)",
        g.wal_syncs.clone(),
    );
    r.register(
        "custos_wal_sync_seconds",
        "Time spent writing and syncing the WAL",
        g.wal_sync_seconds.clone(),
    );
    r.register(
        "custos_flushes",
        "Memtable flushes committed to the table",
        g.flushes.clone(),
    );
    r.register(
        "custos_flush_seconds",
        "Time spent flushing",
        g.flush_seconds.clone(),
    );
    r.register(
        "custos_flush_errors",
        "Flushes that failed and were retried",
        g.flush_errors.clone(),
    );
    r.register(
        "custos_last_flush_duration_seconds",
        "Duration of the last flush",
        g.last_flush_seconds.clone(),
    );
    r.register(
        "custos_last_flush_timestamp_seconds",
        "Unix time of the last flush",
        g.last_flush_timestamp.clone(),
    );
    r.register(
        "custos_memtable_rows",
        "Spans in the memtable",
        g.memtable_rows.clone(),
    );
    r.register(
        "custos_memtable_bytes",
        "Bytes in the memtable",
        g.memtable_bytes.clone(),
    );
    r.register(
        "custos_compactions",
        "Compactions committed",
        g.compactions.clone(),
    );
    r.register(
        "custos_table_files",
        "Active Parquet files per date partition",
        g.files.clone(),
    );
}

async fn evaluate_slos_forever(state: Arc<ApiState>, interval: Duration) {
    let Some(set) = state.rules.slos.clone() else {
        return;
    };
    loop {
        let started = Instant::now();
        match custos_analytics::slo::evaluate(&state.analytics, &set, chrono::Utc::now()).await {
            Ok(report) => {
                if let Ok(mut slot) = state.slo_report.lock() {
                    *slot = Some(report);
                }
            }
            Err(e) => tracing::warn!("SLO evaluation failed: {e}"),
        }
        // On a large store an evaluation takes a while; wait at least four times as long as it
        // took, so SLO gauges never use more than a fifth of the query capacity.
        tokio::time::sleep(interval.max(started.elapsed() * 4)).await;
    }
}

fn api_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/sql", post(sql))
        .route("/api/metrics", get(api_metrics))
        .route("/api/thresholds", get(api_thresholds))
        .route("/api/slo", get(api_slo))
        .route("/api/slo/{name}/runs", get(api_slo_runs))
        .route("/api/authorize", post(api_authorize))
        .route("/api/gate", post(api_gate))
        .route("/api/audit/verify", get(api_audit_verify))
        .route("/api/runs", post(runs::start_run))
        .route("/api/runs/{id}", get(runs::get_run))
        .route("/api/reviews", get(runs::list_reviews))
        .route("/api/reviews/{id}", get(runs::get_review))
        .route("/api/reviews/{id}/approve", post(runs::approve))
        .route("/api/reviews/{id}/reject", post(runs::reject))
        .route("/api/status", get(api_status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

async fn sql(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: custos_api::SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("request body must be JSON like {{\"sql\": \"SELECT ...\"}}: {e}"),
            );
        }
    };
    let format = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(Format::from_accept)
        .unwrap_or(Format::Json);
    let started = Instant::now();
    let result = state.analytics.query(&req.sql).await;
    state.sql_seconds.observe(started.elapsed().as_secs_f64());
    match result.and_then(|r| render(&r, format)) {
        Ok(bytes) => {
            let mut res = (StatusCode::OK, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            res
        }
        Err(e) => {
            let status = if e.is_client_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            json_error(status, e.to_string())
        }
    }
}

/// `GET /api/status`: what an operator's header shows (`custos top`): ingest counters (a client
/// derives rates from two readings), memtable, WAL, last flush, policy set, executor.
async fn api_status(State(state): State<Arc<ApiState>>) -> Response {
    use custos_collector::metrics::TransportLabels;
    let count = |f: &Family<TransportLabels, Counter>| -> u64 {
        ["grpc", "http"]
            .iter()
            .map(|t| f.get_or_create(&TransportLabels { transport: t }).get())
            .sum()
    };
    let s = state.store.stats();
    let pending_reviews = state
        .runner
        .as_ref()
        .and_then(|r| r.executor.pending_reviews().ok())
        .map(|v| v.len());
    let body = custos_api::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        spans_accepted: count(&state.collector_metrics.spans_accepted),
        spans_rejected: count(&state.collector_metrics.spans_rejected),
        memtable_rows: state.store.memtable_rows() as u64,
        memtable_bytes: state.store.memtable_bytes() as u64,
        wal_bytes: s.wal_bytes.load(Ordering::Relaxed),
        flushes: s.flushes.load(Ordering::Relaxed),
        last_flush_unix: match s.last_flush_unix.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        },
        flush_errors: s.flush_errors.load(Ordering::Relaxed),
        policy_hash: state.rules.engine.as_ref().map(|e| e.hash().to_string()),
        workflows: state
            .runner
            .as_ref()
            .map(|r| r.workflows.keys().cloned().collect()),
        pending_reviews,
    };
    axum::Json(body).into_response()
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "memtable_rows": state.store.memtable_rows(),
    });
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let s = state.store.stats();
    let g = &state.store_gauges;
    let set_counter = |c: &Counter, v: u64| {
        let cur = c.get();
        if v > cur {
            c.inc_by(v - cur);
        }
    };
    set_counter(&g.wal_bytes, s.wal_bytes.load(Ordering::Relaxed));
    set_counter(&g.wal_syncs, s.wal_syncs.load(Ordering::Relaxed));
    set_counter(&g.flushes, s.flushes.load(Ordering::Relaxed));
    set_counter(&g.flush_errors, s.flush_errors.load(Ordering::Relaxed));
    set_counter(&g.compactions, s.compactions.load(Ordering::Relaxed));
    let set_f = |c: &Counter<f64, std::sync::atomic::AtomicU64>, micros: u64| {
        let v = micros as f64 / 1e6;
        let cur = c.get();
        if v > cur {
            c.inc_by(v - cur);
        }
    };
    set_f(
        &g.wal_sync_seconds,
        s.wal_sync_micros.load(Ordering::Relaxed),
    );
    set_f(&g.flush_seconds, s.flush_micros.load(Ordering::Relaxed));
    g.last_flush_seconds
        .set(s.last_flush_micros.load(Ordering::Relaxed) as f64 / 1e6);
    g.last_flush_timestamp
        .set(s.last_flush_unix.load(Ordering::Relaxed) as i64);
    g.memtable_rows.set(state.store.memtable_rows() as i64);
    g.memtable_bytes.set(state.store.memtable_bytes() as i64);
    // Rebuilt on every scrape, so partitions removed by retention disappear.
    let partitions = state.store.files_per_partition().await;
    g.files.clear();
    for (date, n) in partitions {
        g.files
            .get_or_create(&vec![("date".to_string(), date)])
            .set(n as i64);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    // SLO gauges (Sloth's names) from the latest background evaluation, before `# EOF`.
    if let (Some(set), Ok(slot)) = (&state.rules.slos, state.slo_report.lock())
        && let Some(report) = slot.as_ref()
    {
        let gauges = custos_analytics::slo::render_prometheus(report, set);
        match text.rfind("# EOF") {
            Some(i) => text.insert_str(i, &gauges),
            None => text.push_str(&gauges),
        }
    }
    let mut res = (StatusCode::OK, text).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// The principal of records the server makes on its own (policy set changes).
pub const SERVER_PRINCIPAL: &str = "Custos::Service::\"custos-server\"";

/// The audit directory of a data directory.
pub fn audit_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("audit")
}

fn deny_body(message: &str) -> serde_json::Value {
    serde_json::json!({
        "decision": "deny",
        "determining_policies": [],
        "advice": [],
        "errors": [{"kind": "evaluation", "message": message}],
        "error": message,
    })
}

async fn api_authorize(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: AuthzRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "request body must be a JSON object with `principal`, `action`, `resource`, `context` and optionally `entities` (docs/governance.md): {e}"
            );
            return (StatusCode::BAD_REQUEST, axum::Json(deny_body(&msg))).into_response();
        }
    };
    let Some(engine) = state.rules.engine.clone() else {
        let msg = "no policies are loaded (set `[rules] policies` or create rules/policy); every request is denied";
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(deny_body(msg))).into_response();
    };
    let audit = state.audit.clone();
    let done = tokio::task::spawn_blocking(move || {
        custos_governance::authorize_and_record(&engine, &audit, &req)
    })
    .await;
    match done {
        Ok(Ok((d, record))) => {
            let status = if d.request_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            let mut body = serde_json::to_value(&d).unwrap_or_default();
            body["audit"] = serde_json::json!({"seq": record.seq, "hash": record.hash});
            (status, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => {
            let msg = format!("the decision could not be recorded, so it is a deny: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(deny_body(&msg)),
            )
                .into_response()
        }
        Err(e) => {
            let msg = format!("the decision failed, so it is a deny: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(deny_body(&msg)),
            )
                .into_response()
        }
    }
}

/// Body of `POST /api/gate`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// The change file's content.
    pub change: gate::ChangeFile,
    /// Evaluation time, RFC 3339 (default now).
    #[serde(default)]
    pub at: Option<String>,
}

async fn api_gate(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: GateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body must be JSON like {{\"change\": {{...change file...}}, \"at\": \"2026-11-21T12:00:00Z\"}}: {e}"
                ),
            );
        }
    };
    let change = match serde_json::to_string(&req.change)
        .map_err(|e| custos_governance::Error::Gate(e.to_string()))
        .and_then(|t| gate::ChangeFile::parse(&t, "request body"))
    {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let at = match parse_at(req.at.as_deref()) {
        Ok(t) => t,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    let Some(engine) = state.rules.engine.clone() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no policies are loaded (set `[rules] policies` or create rules/policy); the gate cannot allow anything",
        );
    };
    let dir = state
        .rules
        .policy_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut report = match gate::evaluate(&state.analytics, &engine, &change, at, &dir).await {
        Ok(r) => r,
        Err(custos_governance::Error::Analytics(e)) => return analytics_error(e),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let audit = state.audit.clone();
    let recorded =
        tokio::task::spawn_blocking(move || gate::record(&audit, &mut report).map(|_| report))
            .await;
    match recorded {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the gate decision could not be recorded, so nothing is allowed: {e}"),
        ),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn api_audit_verify(State(state): State<Arc<ApiState>>) -> Response {
    let dir = state.audit.dir().to_path_buf();
    match tokio::task::spawn_blocking(move || custos_audit::verify(&dir)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
    let audit = AuditLog::open(&audit_dir(data_dir))?;
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
        from,
        to,
    )
    .await?)
}

fn parse_at(at: Option<&str>) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    match at {
        None => Ok(chrono::Utc::now()),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                format!("`at` = `{s}` is not an RFC 3339 time like 2026-11-21T12:00:00Z: {e}")
            }),
    }
}

fn analytics_error(e: custos_analytics::Error) -> Response {
    let status = if e.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json_error(status, e.to_string())
}

type QueryParams<T> =
    std::result::Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// The parsed query parameters, or the message of a 400 naming the parameters the route knows.
fn query_params<T>(params: QueryParams<T>, known: &str) -> std::result::Result<T, String> {
    params
        .map(|p| p.0)
        .map_err(|e| format!("invalid query parameters: {e}; known: {known}"))
}

/// Query parameters of `GET /api/metrics`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsParams {
    window: Option<String>,
    by: Option<String>,
    at: Option<String>,
}

/// Builds a metrics request from user-facing parameters (CLI flags or API query).
pub fn metrics_request(
    window: Option<&str>,
    by: Option<&str>,
    at: Option<&str>,
) -> std::result::Result<custos_analytics::metrics::MetricsRequest, String> {
    use custos_analytics::metrics::{GroupBy, MetricsRequest, parse_duration};
    Ok(MetricsRequest {
        window: parse_duration(window.unwrap_or("24h")).map_err(|e| e.to_string())?,
        by: GroupBy::parse(by.unwrap_or("workflow")).map_err(|e| e.to_string())?,
        at: parse_at(at)?,
    })
}

async fn api_metrics(
    State(state): State<Arc<ApiState>>,
    params: QueryParams<MetricsParams>,
) -> Response {
    let p = match query_params(params, "window, by, at") {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let req = match metrics_request(p.window.as_deref(), p.by.as_deref(), p.at.as_deref()) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    match custos_analytics::metrics::compute(&state.analytics, &req).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => analytics_error(e),
    }
}

/// Query parameters of `GET /api/thresholds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdParams {
    workflow: Option<String>,
    step: Option<String>,
    target_error: Option<f64>,
    window: Option<String>,
    at: Option<String>,
}

/// Builds a threshold request from user-facing parameters.
pub fn threshold_request(
    workflow: &str,
    step: Option<&str>,
    target_error: Option<f64>,
    window: Option<&str>,
    at: Option<&str>,
) -> std::result::Result<custos_analytics::thresholds::ThresholdRequest, String> {
    let window = custos_analytics::metrics::parse_duration(window.unwrap_or("30d"))
        .map_err(|e| e.to_string())?;
    let end = parse_at(at)?;
    let start = end - chrono::Duration::from_std(window).map_err(|e| e.to_string())?;
    Ok(custos_analytics::thresholds::ThresholdRequest {
        workflow: workflow.to_string(),
        step: step.map(String::from),
        target_error: target_error.unwrap_or(0.03),
        start,
        end,
    })
}

async fn api_thresholds(
    State(state): State<Arc<ApiState>>,
    params: QueryParams<ThresholdParams>,
) -> Response {
    let p = match query_params(params, "workflow, step, target_error, window, at") {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(workflow) = p.workflow.as_deref() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the `workflow` query parameter is required",
        );
    };
    let req = match threshold_request(
        workflow,
        p.step.as_deref(),
        p.target_error,
        p.window.as_deref(),
        p.at.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    match custos_analytics::thresholds::compute(&state.analytics, &req).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => analytics_error(e),
    }
}

/// Query parameters of `GET /api/slo`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SloParams {
    at: Option<String>,
    max_age: Option<String>,
}

async fn api_slo(State(state): State<Arc<ApiState>>, params: QueryParams<SloParams>) -> Response {
    let p = match query_params(params, "at, max_age") {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(set) = &state.rules.slos else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no SLO file is configured; set `rules.slos` in the config file or add rules/slos.yaml",
        );
    };
    let at = match parse_at(p.at.as_deref()) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    if let Some(max_age) = &p.max_age {
        let max_age = match custos_analytics::metrics::parse_duration(max_age) {
            Ok(d) => d,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("`max_age`: {e}")),
        };
        // The background evaluation (every `rules.slo_interval_secs`) serves callers that accept
        // its age: dashboards polling every few seconds then cost no evaluation at all.
        if p.at.is_none()
            && let Some(report) = cached_slo_report(&state, max_age)
        {
            return axum::Json(report).into_response();
        }
    }
    match custos_analytics::slo::evaluate(&state.analytics, set, at).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => analytics_error(e),
    }
}

/// Query parameters of `GET /api/slo/{name}/runs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SloRunsParams {
    window: Option<String>,
    at: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/slo/{name}/runs`: the runs the SLO's error query counts over its period (or
/// `window`) ending `at`, slowest first; the SQL used is part of the answer.
async fn api_slo_runs(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    params: QueryParams<SloRunsParams>,
) -> Response {
    let p = match query_params(params, "window, at, limit") {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(set) = &state.rules.slos else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no SLO file is configured; set `rules.slos` in the config file or add rules/slos.yaml",
        );
    };
    let Some(slo) = set.slos.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = set.slos.iter().map(|s| s.name.as_str()).collect();
        return json_error(
            StatusCode::NOT_FOUND,
            format!("no SLO `{name}`; known: {}", known.join(", ")),
        );
    };
    let end = match parse_at(p.at.as_deref()) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let window = match p.window.as_deref() {
        None => slo.period,
        Some(w) => match custos_analytics::metrics::parse_duration(w) {
            Ok(d) => d,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("`window`: {e}")),
        },
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let start = end - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
    let sql = match custos_analytics::slo::burning_runs_sql(slo, start, end, limit) {
        Ok(s) => s,
        Err(e) => return analytics_error(e),
    };
    let rows = match state
        .analytics
        .query(&sql)
        .await
        .and_then(|r| render(&r, Format::Json))
    {
        Ok(bytes) => {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or(serde_json::Value::Null)
        }
        Err(e) => return analytics_error(e),
    };
    axum::Json(serde_json::json!({
        "slo": slo.name,
        "window_start": start.to_rfc3339(),
        "window_end": end.to_rfc3339(),
        "sql": sql,
        "runs": rows,
    }))
    .into_response()
}

/// The server's latest SLO evaluation when it is at most `max_age` old.
fn cached_slo_report(state: &ApiState, max_age: Duration) -> Option<SloReport> {
    let report = state.slo_report.lock().ok()?.clone()?;
    let at = chrono::DateTime::parse_from_rfc3339(&report.at).ok()?;
    let age = chrono::Utc::now()
        .signed_duration_since(at)
        .to_std()
        .unwrap_or_default();
    (age <= max_age).then_some(report)
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
