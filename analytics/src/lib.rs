//! Read-only SQL over the span store, with DataFusion.
//!
//! This crate owns the DataFusion session: it registers the `spans` table (a
//! [`custos_store::SpansProvider`]), refuses anything that writes (DDL, DML, `COPY`, `SET`, ...),
//! runs each query under a memory limit (with spilling to disk where operators support it) and a
//! timeout, and renders results as a table, CSV, JSON, NDJSON or an Arrow IPC stream ([`format`]).
//! Views and metrics over `spans` build on this session.

pub mod audit;
pub mod canary;
pub mod duration;
pub mod exec;
pub mod format;
pub mod metrics;
pub mod prices;
pub mod rollup;
pub mod slo;
pub mod thresholds;
pub mod udf;
pub mod views;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use custos_store::rollup::RollupProvider;
use custos_store::{SpansProvider, Store};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
pub use prices::PriceTable;

/// The SQL table over the audit log (reading it needs `read_audit` through the API).
pub const AUDIT_TABLE: &str = "audit";

/// Errors of the analytics layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query text is not valid SQL; the message carries the engine's position.
    #[error("invalid SQL: {0}")]
    Syntax(String),
    /// The query is valid SQL but cannot be planned or is not allowed (writes are refused).
    #[error("{0}")]
    Plan(String),
    /// The query would write; custos SQL is read-only.
    #[error("SQL is read-only: {0}")]
    ReadOnly(String),
    /// The query ran out of its memory budget.
    #[error("query exceeded its memory limit of {limit} bytes: {message}")]
    Memory {
        /// The limit.
        limit: usize,
        /// The engine's message.
        message: String,
    },
    /// The query ran longer than allowed.
    #[error("query exceeded its timeout of {0:?} and was cancelled")]
    Timeout(Duration),
    /// The result is larger than one query may return.
    #[error(
        "the result exceeds the limit of {max_rows} rows or {max_bytes} bytes and the query was \
         stopped; add a `LIMIT`, aggregate, or select fewer columns"
    )]
    TooLarge {
        /// The row cap.
        max_rows: usize,
        /// The byte cap.
        max_bytes: usize,
    },
    /// As many queries as allowed are running; the caller should retry shortly.
    #[error("{0} queries are running, the most allowed at once; retry in a second")]
    Busy(usize),
    /// The query failed while running.
    #[error("query failed: {0}")]
    Execution(String),
    /// The session could not be set up.
    #[error("cannot set up the SQL engine: {0}")]
    Setup(String),
    /// A rules file (prices, SLOs) is invalid; the message names the file, entry and field.
    #[error("invalid rules: {0}")]
    Rules(String),
}

impl Error {
    /// Whether the error is the caller's fault (a bad query), as opposed to a server problem.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::Syntax(_)
                | Error::Plan(_)
                | Error::ReadOnly(_)
                | Error::Memory { .. }
                | Error::Timeout(_)
                | Error::TooLarge { .. }
                | Error::Rules(_)
        )
    }
}

/// Result type of the analytics layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Memory a query may use before spilling or failing.
    pub memory_limit_bytes: usize,
    /// Wall-clock time a query may run.
    pub timeout: Duration,
    /// DataFusion target partitions; 0 means the number of cores.
    pub target_partitions: usize,
    /// Worker threads of the runtime queries run on; 0 means the number of cores.
    pub threads: usize,
    /// The largest result a query may return ([`Prepared::run`]).
    pub result: exec::ResultLimits,
    /// Callers' queries that may run at once ([`Analytics::admit`]).
    pub max_concurrent: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 512 << 20,
            timeout: Duration::from_secs(30),
            target_partitions: 0,
            threads: 0,
            result: exec::ResultLimits::default(),
            max_concurrent: 2,
        }
    }
}

/// A query's result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Output schema (also for zero rows).
    pub schema: SchemaRef,
    /// Output batches.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// The SQL engine over one store.
#[derive(Clone)]
pub struct Analytics {
    ctx: SessionContext,
    options: QueryOptions,
    store: Store,
    prices: Arc<PriceTable>,
    run_rollup: Arc<rollup::RunsRollup>,
    /// The `audit` table, shared by every session so its records are read once.
    audit: Arc<audit::AuditProvider>,
    runtime: Arc<exec::QueryRuntime>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// A caller's right to run one query ([`Analytics::admit`]); the slot frees when dropped.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

fn classify(e: DataFusionError, limit: usize) -> Error {
    let root = e.find_root();
    match root {
        DataFusionError::SQL(..) => Error::Syntax(e.strip_backtrace()),
        DataFusionError::ResourcesExhausted(m) => Error::Memory {
            limit,
            message: m.clone(),
        },
        DataFusionError::Plan(m) if m.contains("not supported") => Error::ReadOnly(format!(
            "{m}; only queries (SELECT, EXPLAIN, SHOW, DESCRIBE) are allowed"
        )),
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Error::Plan(e.strip_backtrace()),
        _ => Error::Execution(e.strip_backtrace()),
    }
}

impl Analytics {
    /// A session with the `spans` table over `store` and the views, without a price table.
    pub async fn new(store: Store, options: QueryOptions) -> Result<Self> {
        Self::with_prices(store, options, PriceTable::empty()).await
    }

    /// A session with the `spans` table, the custos functions and the views (`steps`, `runs`,
    /// `decisions`); spans without a reported cost are priced from `prices`.
    pub async fn with_prices(
        store: Store,
        options: QueryOptions,
        prices: PriceTable,
    ) -> Result<Self> {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(options.memory_limit_bytes),
            NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| Error::Setup(e.to_string()))?;
        let mut config = SessionConfig::new().with_information_schema(true);
        // Filters are evaluated inside the Parquet scan, cheapest first, and the other columns
        // decoded only for the rows that pass: most standard questions keep a small share of the
        // spans (decisions, reviews, errors) and some read the wide `attributes` map.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        if options.target_partitions > 0 {
            config = config.with_target_partitions(options.target_partitions);
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let prices = Arc::new(prices);
        let run_rollup = Arc::new(rollup::RunsRollup::new(Arc::clone(&prices)).await?);
        // The store keeps the run rollup from now on (a writable store builds it if needed).
        store
            .attach_rollup(run_rollup.clone())
            .await
            .map_err(|e| Error::Setup(format!("cannot open the run rollup: {e}")))?;
        let audit_dir = store.options().data_dir.join("audit");
        let audit = Arc::new(audit::AuditProvider::new(audit_dir));
        Self::register_all(&ctx, &store, &prices, &run_rollup, &audit).await?;
        let runtime = Arc::new(exec::QueryRuntime::new(options.threads)?);
        let slots = Arc::new(tokio::sync::Semaphore::new(options.max_concurrent.max(1)));
        Ok(Self {
            ctx,
            options,
            store,
            prices,
            run_rollup,
            audit,
            runtime,
            slots,
        })
    }

    async fn register_all(
        ctx: &SessionContext,
        store: &Store,
        prices: &Arc<PriceTable>,
        run_rollup: &Arc<rollup::RunsRollup>,
        audit: &Arc<audit::AuditProvider>,
    ) -> Result<()> {
        ctx.register_table("spans", Arc::new(SpansProvider::new(store.clone())))
            .map_err(|e| Error::Setup(e.to_string()))?;
        let parts = RollupProvider::new(store.clone(), run_rollup.clone());
        ctx.register_table(rollup::RUN_PARTS, Arc::new(parts))
            .map_err(|e| Error::Setup(e.to_string()))?;
        ctx.register_table(AUDIT_TABLE, audit.clone())
            .map_err(|e| Error::Setup(e.to_string()))?;
        udf::register(ctx, prices.clone());
        views::register(ctx).await
    }

    /// A session in which the named views (e.g. `runs`, `decisions`) are computed once and held
    /// in memory, so many queries over them (an SLO evaluation: every SLO over every window) do
    /// not aggregate the spans again each time. Other tables stay live.
    ///
    /// Each entry names a view and the columns to keep (`None` for all): computing only the
    /// columns the later queries use skips the aggregates behind the others.
    pub async fn with_materialized(
        &self,
        views: &[(&str, Option<Vec<String>>)],
    ) -> Result<Analytics> {
        let ctx =
            SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        Self::register_all(
            &ctx,
            &self.store,
            &self.prices,
            &self.run_rollup,
            &self.audit,
        )
        .await?;
        let limit = self.options.memory_limit_bytes;
        for (name, columns) in views {
            let name = *name;
            let mut df = self.ctx.table(name).await.map_err(|e| classify(e, limit))?;
            if let Some(columns) = columns {
                let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
                df = df.select_columns(&cols).map_err(|e| classify(e, limit))?;
            }
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = self
                .runtime
                .run(
                    self.options.timeout,
                    exec::gather(df, limit, exec::ResultLimits::NONE),
                )
                .await?;
            let partitions = self.ctx.copied_config().target_partitions().max(1);
            let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
            for (i, b) in batches.into_iter().enumerate() {
                parts[i % partitions].push(b);
            }
            let table = datafusion::datasource::MemTable::try_new(schema, parts)
                .map_err(|e| Error::Setup(e.to_string()))?;
            ctx.deregister_table(name)
                .map_err(|e| Error::Setup(e.to_string()))?;
            ctx.register_table(name, Arc::new(table))
                .map_err(|e| Error::Setup(e.to_string()))?;
        }
        Ok(Analytics {
            ctx,
            options: self.options.clone(),
            store: self.store.clone(),
            prices: self.prices.clone(),
            run_rollup: self.run_rollup.clone(),
            audit: self.audit.clone(),
            runtime: self.runtime.clone(),
            slots: self.slots.clone(),
        })
    }

    /// A slot for one caller's query, or [`Error::Busy`] when `max_concurrent` queries run: a
    /// caller's queries beyond it are refused at once rather than queued behind heavy ones. The
    /// server's own queries (SLO evaluation) do not take slots.
    pub fn admit(&self) -> Result<Admitted> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Admitted)
            .map_err(|_| Error::Busy(self.options.max_concurrent.max(1)))
    }

    /// The limits every query runs under.
    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// The DataFusion session, for callers that register more tables or views.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans one read-only statement without running it: reports syntax errors, unknown tables or
    /// columns and writes.
    pub async fn plan(&self, sql: &str) -> Result<()> {
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.ctx
            .sql_with_options(sql, opts)
            .await
            .map_err(|e| classify(e, self.options.memory_limit_bytes))?;
        Ok(())
    }

    /// Runs one read-only statement of the server's own (its result is not capped; a caller's
    /// text goes through [`Analytics::prepare`] and [`Prepared::run`]).
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        let started = std::time::Instant::now();
        let prepared = self.prepare(sql).await?;
        prepared
            .run_within(
                self.options.timeout.saturating_sub(started.elapsed()),
                exec::ResultLimits::NONE,
            )
            .await
    }

    /// Plans one read-only statement and says which tables it reads, so a caller can decide
    /// before anything runs (`POST /api/sql` asks for `read_audit` when the plan reads `audit`).
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        let limit = self.options.memory_limit_bytes;
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let plan = self.ctx.sql_with_options(sql, opts);
        let df = match tokio::time::timeout(self.options.timeout, plan).await {
            Ok(r) => r.map_err(|e| classify(e, limit))?,
            Err(_) => return Err(Error::Timeout(self.options.timeout)),
        };
        let tables = tables_read(df.logical_plan());
        Ok(Prepared {
            df,
            tables,
            limit,
            timeout: self.options.timeout,
            result: self.options.result,
            runtime: self.runtime.clone(),
        })
    }
}

/// A planned statement, not yet run.
#[derive(Debug)]
pub struct Prepared {
    df: datafusion::dataframe::DataFrame,
    tables: std::collections::BTreeSet<String>,
    limit: usize,
    timeout: std::time::Duration,
    result: exec::ResultLimits,
    runtime: Arc<exec::QueryRuntime>,
}

impl Prepared {
    /// The tables the statement reads, through views and subqueries (unqualified names).
    pub fn tables(&self) -> &std::collections::BTreeSet<String> {
        &self.tables
    }

    /// Runs the statement on the SQL runtime within the session's timeout, its result capped
    /// by the session's [`exec::ResultLimits`].
    pub async fn run(self) -> Result<QueryResult> {
        let (timeout, result) = (self.timeout, self.result);
        self.run_within(timeout, result).await
    }

    async fn run_within(
        self,
        timeout: std::time::Duration,
        result: exec::ResultLimits,
    ) -> Result<QueryResult> {
        let (limit, configured, df, runtime) = (self.limit, self.timeout, self.df, self.runtime);
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        match runtime.run(timeout, exec::gather(df, limit, result)).await {
            Ok(batches) => Ok(QueryResult { schema, batches }),
            Err(Error::Timeout(_)) => Err(Error::Timeout(configured)),
            Err(e) => Err(e),
        }
    }
}

/// Every table a plan scans, looking into views and subqueries.
fn tables_read(plan: &datafusion::logical_expr::LogicalPlan) -> std::collections::BTreeSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut out = std::collections::BTreeSet::new();
    let mut pending = vec![plan.clone()];
    // Views nest at most as deep as they were defined; the bound keeps a cycle from looping.
    let mut budget = 1_000usize;
    while let Some(p) = pending.pop() {
        let _ = p.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                out.insert(scan.table_name.table().to_string());
                if let Some(inner) = scan.source.get_logical_plan()
                    && budget > 0
                {
                    budget -= 1;
                    pending.push(inner.into_owned());
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    out
}
