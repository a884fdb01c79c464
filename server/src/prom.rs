//! The Prometheus registry's store gauges and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::Caller;
use crate::routes::json_error;
use crate::start::ApiState;

/// Gauges refreshed from the store on every scrape.
#[derive(Default)]
pub(crate) struct StoreGauges {
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_syncs: Counter,
    pub(crate) wal_sync_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub(crate) flushes: Counter,
    pub(crate) flush_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub(crate) flush_errors: Counter,
    pub(crate) last_flush_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) last_flush_timestamp: Gauge,
    pub(crate) memtable_rows: Gauge,
    pub(crate) memtable_bytes: Gauge,
    pub(crate) compactions: Counter,
    pub(crate) files: Family<Vec<(String, String)>, Gauge>,
    /// Values redacted since start, by rule (or detector) and action; never the values.
    pub(crate) redactions: Family<Vec<(String, String)>, Counter>,
}

pub(crate) fn register_store_gauges(r: &mut Registry, g: &StoreGauges) {
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
    r.register(
        "custos_redactions",
        "Values redacted before they were stored, by rule or detector and action",
        g.redactions.clone(),
    );
}

/// `GET /metrics`: `read_status` for the caller, or open to all with `[auth] metrics_open`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "Prometheus metrics in the text exposition format", body = String, content_type = "text/plain"))
)]
pub(crate) async fn metrics(
    State(state): State<Arc<ApiState>>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    if !state.access.metrics_open {
        let Some(axum::Extension(caller)) = caller else {
            return crate::auth::unauthenticated(&custos_auth::Refusal::Missing);
        };
        let op = custos_governance::access::Operation::read("read_status", "GET /metrics");
        if let Err(r) = state.allow(&caller, op).await {
            return r;
        }
    }
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
    for (rule, action, n) in state.redactor.counts().snapshot() {
        let labels = vec![
            ("rule".to_string(), rule),
            ("action".to_string(), action.to_string()),
        ];
        set_counter(&g.redactions.get_or_create(&labels), n);
    }
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
