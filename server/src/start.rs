//! Starting and stopping the process: the store, the three listeners, the background SLO
//! evaluation and the executor's runner, and a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custos_analytics::Analytics;
use custos_analytics::slo::SloReport;
use custos_audit::AuditLog;
use custos_auth::{Authenticator, TokenFile};
use custos_collector::CollectorMetrics;
use custos_collector::grpc::GrpcReceiver;
use custos_collector::ingest::Ingest;
use custos_net::Listener;
use custos_store::Store;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use custos_governance::gate;

use crate::auth::{Access, AccessCounters, EXECUTOR_PRINCIPAL, IngestAdmission, bootstrap_admin};
use crate::prom::{StoreGauges, register_store_gauges};
use crate::routes::api_router;
use crate::{
    Error, Result, Rules, SERVER_PRINCIPAL, ServerOptions, analytics_with_rules, open_audit,
    open_redactor, runs,
};

/// What every handler reads.
pub(crate) struct ApiState {
    pub(crate) analytics: Analytics,
    /// The data directory's audit log.
    pub(crate) audit: Arc<AuditLog>,
    /// Prices, SLOs and the policy directory; its engine is in `access.engine`, where a reload
    /// replaces it.
    pub(crate) rules: Rules,
    /// Held while a reload runs: one at a time.
    pub(crate) reloading: std::sync::Mutex<()>,
    /// The redaction rules every export goes through (and audit contexts, and run inputs).
    pub(crate) redactor: Arc<custos_redact::Redactor>,
    /// What encrypts the data directory at rest, as found at start.
    pub(crate) at_rest: crate::at_rest::AtRest,
    /// The latest background SLO evaluation, for `/metrics`.
    pub(crate) slo_report: std::sync::Mutex<Option<SloReport>>,
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) store_gauges: StoreGauges,
    pub(crate) sql_seconds: Histogram,
    pub(crate) started: Instant,
    /// The reference executor, when workflows are configured.
    pub(crate) runner: Option<Arc<runs::Runner>>,
    /// The receivers' counters, for `/api/status`.
    pub(crate) collector_metrics: CollectorMetrics,
    /// Who is calling and what they may do.
    pub(crate) access: Access,
}

/// A running server.
pub struct RunningServer {
    /// Bound OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// Bound OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// Bound API address.
    pub api: SocketAddr,
    /// Where the server wrote an admin token at start (no admin had a valid one).
    pub admin_token: Option<std::path::PathBuf>,
    /// Whether the listeners speak TLS (`https://`).
    pub tls: bool,
    store: Store,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<Result<()>>)>,
    runner: Option<Arc<runs::Runner>>,
}

/// Binds `addr`, speaking TLS when `[tls]` says so.
async fn bind(what: &'static str, addr: SocketAddr, options: &ServerOptions) -> Result<Listener> {
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::Bind { what, addr, cause })?;
    Listener::new(tcp, options.tls.server.as_ref()).map_err(|cause| Error::Bind {
        what,
        addr,
        cause,
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The Prometheus registry with the collector's and the store's metrics, the WAL sync
/// histogram (fed by the store) and the SQL latency histogram (fed by the SQL route).
fn metrics_registry(store: &Store) -> (Registry, CollectorMetrics, StoreGauges, Histogram) {
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
    (registry, metrics, store_gauges, sql_seconds)
}

/// A background task of the server, named for the error it reports at shutdown.
type Task = (&'static str, JoinHandle<Result<()>>);

/// The OTLP receivers, each stopping when `rx` says so.
fn spawn_receivers(
    grpc: Listener,
    http: Listener,
    ingest: &Ingest,
    limits: custos_net::serve::Limits,
    rx: &watch::Receiver<bool>,
) -> Vec<Task> {
    let receiver = GrpcReceiver::new(ingest.clone());
    let s = stopped(rx.clone());
    let grpc = tokio::spawn(async move {
        custos_collector::grpc::serve(grpc, receiver, limits, s)
            .await
            .map_err(|e| Error::Task(e.to_string()))
    });
    let s = stopped(rx.clone());
    let ingest = ingest.clone();
    let http = tokio::spawn(async move {
        custos_collector::http::serve(http, ingest, limits, s)
            .await
            .map_err(|e| Error::Task(e.to_string()))
    });
    vec![("OTLP/gRPC", grpc), ("OTLP/HTTP", http)]
}

/// The API, reloads on `SIGHUP` and, with an SLO file, the periodic SLO evaluation behind
/// `/metrics`.
fn spawn_api(
    state: Arc<ApiState>,
    listener: Listener,
    limits: custos_net::serve::Limits,
    slo_interval: Duration,
    rx: watch::Receiver<bool>,
) -> Vec<Task> {
    let mut tasks = Vec::new();
    if state.rules.slos.is_some() {
        let st = state.clone();
        let s = stopped(rx.clone());
        tasks.push((
            "SLO evaluation",
            tokio::spawn(async move {
                tokio::select! {
                    _ = s => {}
                    _ = evaluate_slos_forever(st, slo_interval) => {}
                }
                Ok(())
            }),
        ));
    }
    #[cfg(unix)]
    {
        let st = state.clone();
        let s = stopped(rx.clone());
        tasks.push((
            "reload on SIGHUP",
            tokio::spawn(async move {
                tokio::select! {
                    _ = s => {}
                    _ = crate::reload::on_hangup(st) => {}
                }
                Ok(())
            }),
        ));
    }
    let s = stopped(rx);
    tasks.push((
        "API",
        tokio::spawn(async move {
            custos_net::serve::serve(listener, api_router(state), limits, false, s)
                .await
                .map_err(|e| Error::Task(format!("API server failed: {e}")))
        }),
    ));
    tasks
}

/// Starts the store, the receivers and the API.
pub async fn start(options: ServerOptions) -> Result<RunningServer> {
    let store = Store::open(options.store.clone()).await?;
    let mut rules = Rules::load(&options.rules)?;
    let analytics = analytics_with_rules(store.clone(), options.query.clone(), &rules).await?;
    let redactor = Arc::new(open_redactor(
        &options.store.data_dir,
        options.rules.redaction.as_deref(),
    )?);
    let Some(engine) = rules.engine.take() else {
        return Err(Error::Config(
            "no policy directory: who may call every port is decided by the policies; set `[rules] policies` or run where `rules/policy` exists (custos ships one: docs/governance.md)".into(),
        ));
    };
    let engine = custos_policy::live::Live::new(engine);
    let audit = Arc::new(open_audit(
        &options.store.data_dir,
        &redactor,
        Some(engine.clone()),
    )?);
    let (mut registry, metrics, store_gauges, sql_seconds) = metrics_registry(&store);
    let (access, admin_token) = open_access(&options, engine, &audit)?;
    access.counters.register(&mut registry);
    let collector_metrics = metrics.clone();
    let ingest = Ingest {
        store: store.clone(),
        options: options.receiver.clone(),
        metrics,
        admission: Arc::new(IngestAdmission::new(&access)),
        redactor: redactor.clone(),
        decoders: Ingest::decoders(&options.receiver),
    };
    let executor_token = access
        .authn
        .process_token(EXECUTOR_PRINCIPAL, "the server's own executor")
        .map_err(|e| Error::Config(e.to_string()))?;

    let grpc_listener = bind("OTLP/gRPC", options.otlp_grpc, &options).await?;
    let http_listener = bind("OTLP/HTTP", options.otlp_http, &options).await?;
    let api_listener = bind("the API", options.api, &options).await?;
    let otlp_grpc = grpc_listener.local_addr();
    let otlp_http = http_listener.local_addr();
    let api = api_listener.local_addr();

    if let Some(w) =
        custos_net::serve::open_files_warning(options.connections.max_connections.saturating_mul(3))
    {
        tracing::warn!("{w}");
    }
    let (stop, rx) = watch::channel(false);
    let mut tasks = spawn_receivers(
        grpc_listener,
        http_listener,
        &ingest,
        options.connections,
        &rx,
    );
    let runner = runs::open(
        &options.executor,
        &options.store.data_dir,
        Some(access.engine.clone()),
        Arc::new(crate::loopback::InProcess::new(
            custos_collector::http::router(ingest.clone()),
        )),
        &executor_token,
        crate::audit_scrubber(&redactor, Some(access.engine.clone())),
    )?;
    if let Some(r) = &runner
        && custos_governance::changes::note_workflows(
            &audit,
            &r.definitions(),
            SERVER_PRINCIPAL,
            access.engine.current().hash(),
        )?
        .is_some()
    {
        tracing::info!("recorded new workflow definitions in the audit log");
    }
    // An erasure a crash interrupted after its delete commit still owes its runs and its record.
    crate::erase::finish_followups(&crate::erase::Parts {
        store: &store,
        redactor: &redactor,
        executor: runner
            .as_ref()
            .map(|r| (r.executor.journal(), r.executor.connectors())),
        audit: &audit,
        by: SERVER_PRINCIPAL,
        grace: options.store.erase_grace,
    })
    .await?;
    if let Some(r) = &runner {
        let (r, a) = (r.clone(), audit.clone());
        let s = stopped(rx.clone());
        tasks.push((
            "executor",
            tokio::spawn(async move {
                runs::background(r, a, s).await;
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
        reloading: std::sync::Mutex::new(()),
        redactor,
        at_rest: at_rest(&options),
        slo_report: std::sync::Mutex::new(None),
        store: store.clone(),
        registry,
        store_gauges,
        sql_seconds,
        started: Instant::now(),
        access,
    });
    tasks.extend(spawn_api(
        state,
        api_listener,
        options.connections,
        options.rules.slo_interval,
        rx,
    ));
    Ok(RunningServer {
        otlp_grpc,
        otlp_http,
        api,
        admin_token,
        tls: options.tls.server.is_some(),
        store,
        stop,
        tasks,
        runner,
    })
}

/// What encrypts the data directory at rest, said once in the log.
fn at_rest(options: &ServerOptions) -> crate::at_rest::AtRest {
    use crate::at_rest::AtRest;
    let found = crate::at_rest::check(
        &options.store.data_dir,
        options.encryption_at_rest.as_deref(),
    );
    match &found {
        AtRest::DmCrypt { device } => {
            tracing::info!(%device, "the data directory is on a dm-crypt volume");
        }
        AtRest::Declared(what) => {
            tracing::info!(%what, "the data directory's volume is declared encrypted at rest");
        }
        AtRest::None => tracing::warn!(
            "no encryption at rest found for the data directory: put it on an encrypted volume (LUKS), or declare the platform's with `[store] encryption_at_rest` (docs/privacy.md)"
        ),
    }
    found
}

/// The authenticator over the data directory's tokens, the policies that decide access, and the
/// admin token written when no admin has one. Without policies the server does not start: every
/// port's access is a policy decision.
fn open_access(
    options: &ServerOptions,
    live: custos_policy::live::Live,
    audit: &Arc<AuditLog>,
) -> Result<(Access, Option<std::path::PathBuf>)> {
    let engine = live.current();
    if gate::note_policy_set(audit, &engine, SERVER_PRINCIPAL)?.is_some() {
        tracing::info!(
            hash = engine.hash(),
            "recorded a new policy set in the audit log"
        );
    }
    let data_dir = &options.store.data_dir;
    for (cn, principal) in &options.tls.clients {
        custos_governance::tokens::check_principal(&engine, principal)
            .map_err(|e| Error::Config(format!("`tls.clients` `{cn}`: {e}")))?;
    }
    let authn = Authenticator::open(TokenFile::new(data_dir), options.auth.limit)
        .map_err(|e| Error::Config(e.to_string()))?
        .with_certificates(options.tls.clients.clone());
    let admin_token = bootstrap_admin(&authn, &engine, audit, &options.auth.admin)?;
    if let Some(path) = &admin_token {
        tracing::warn!(
            path = %path.display(),
            "no admin had a valid token: wrote one (read it from the file; it is not logged)"
        );
    }
    for (what, addr) in [
        ("OTLP/gRPC", options.otlp_grpc),
        ("OTLP/HTTP", options.otlp_http),
        ("the API", options.api),
    ] {
        if !addr.ip().is_loopback() && options.tls.server.is_none() {
            tracing::warn!(%addr, "{what} listens beyond this machine without TLS: tokens cross the network in clear text");
        }
    }
    let access = Access {
        authn: Arc::new(authn),
        engine: live,
        audit: audit.clone(),
        certificate_principals: options
            .tls
            .clients
            .iter()
            .map(|(cn, p)| (cn.clone(), p.clone()))
            .collect(),
        metrics_open: options.auth.metrics_open,
        counters: AccessCounters::default(),
    };
    Ok((access, admin_token))
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
