//! The run rollup: one partial row per run, day and flush, kept by the store beside `spans`
//! ([`custos_store::rollup`]) and merged by the `runs` view, which so reads about one row per run
//! instead of one per span.
//!
//! A partial row holds what the `runs` view needs of its spans in a mergeable form: the root's
//! values apart from everyone's (`root_workflow` and `workflow`), minima and maxima, sums and
//! counts, the step-name hashes (retries are exact across partial rows, [`distinct`]), and the
//! last decision's model and versions with the time and span id that order it. Costs are priced
//! once, when the row is written; the fingerprint includes the price table, so a changed price
//! table rebuilds the rollup.

pub mod distinct;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use custos_store::rollup::Summarize;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::prices::PriceTable;
use crate::{Error, Result, udf, views};

/// The table name the `runs` view reads the partial rows from.
pub const RUN_PARTS: &str = "run_parts";

/// The partial rows of the spans in `steps`, one per day and run.
const PARTIAL: &str = r#"
SELECT
  date, run_id,
  min(trace_id) AS trace_id,
  min(trace_id) FILTER (WHERE is_root) AS root_trace_id,
  max(workflow) AS workflow,
  max(workflow) FILTER (WHERE is_root) AS root_workflow,
  max(service_name) AS service_name,
  max(service_name) FILTER (WHERE is_root) AS root_service_name,
  min(start_time) AS start_time,
  min(start_time_unix_nano) AS start_ns,
  max(end_time) FILTER (WHERE is_root) AS root_end_time,
  max(end_time_unix_nano) FILTER (WHERE is_root) AS root_end_ns,
  bool_or(is_root) AS has_root,
  max(outcome) FILTER (WHERE is_root) AS root_outcome,
  bool_or(is_root AND status_code = 'error') AS root_error,
  sum(cost_usd) AS cost_usd,
  count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced,
  count(*) FILTER (WHERE cost_source = 'computed') AS computed,
  count(*) FILTER (WHERE cost_source = 'reported') AS reported,
  sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens,
  count(step) AS steps,
  array_agg(DISTINCT hash64(step)) FILTER (WHERE step IS NOT NULL) AS step_hashes,
  count(*) FILTER (WHERE status_code = 'error') AS errors,
  count(*) FILTER (WHERE human_reviewed) AS human_reviews,
  count(*) FILTER (WHERE human_override) AS overrides,
  last_value(start_time_unix_nano ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS decision_ns,
  last_value(span_id ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS decision_span_id,
  last_value(model ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model,
  last_value(model_version ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model_version,
  last_value(prompt_version ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS prompt_version,
  max(source) FILTER (WHERE is_root) AS root_source,
  min(source) AS source
FROM steps
"#;

/// The run rollup's definition, for the store ([`custos_store::Store::attach_rollup`]) and the
/// [`RUN_PARTS`] table.
#[derive(Debug)]
pub struct RunsRollup {
    prices: Arc<PriceTable>,
    fingerprint: String,
    schema: SchemaRef,
}

/// `t` as stored: strings without views or dictionaries.
fn stored_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => stored_type(v),
        DataType::List(f) => DataType::List(Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(stored_type(f.data_type())),
        )),
        other => other.clone(),
    }
}

impl RunsRollup {
    /// The definition with spans priced from `prices`.
    pub async fn new(prices: Arc<PriceTable>) -> Result<Self> {
        let text = format!("{}|{PARTIAL}|{}", views::STEPS, prices.fingerprint());
        let fingerprint = format!("{:016x}", udf::fnv1a64(text.as_bytes()) as u64);
        let mut def = Self {
            prices,
            fingerprint,
            schema: Arc::new(Schema::empty()),
        };
        let empty = MemTable::try_new(custos_schema::spans_schema(), vec![vec![]])
            .map_err(|e| Error::Setup(e.to_string()))?;
        let ctx = SessionContext::new();
        let plan = def
            .plan(&ctx.state(), Arc::new(empty), None)
            .await
            .map_err(|e| Error::Setup(format!("cannot plan the run rollup: {e}")))?;
        let fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(stored_type(f.data_type()))
                    .with_nullable(true)
            })
            .collect();
        def.schema = Arc::new(Schema::new(fields));
        Ok(def)
    }
}

#[async_trait]
impl Summarize for RunsRollup {
    fn name(&self) -> &str {
        "runs"
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn plan(
        &self,
        state: &dyn Session,
        spans: Arc<dyn TableProvider>,
        dates: Option<&[String]>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // A context of its own (the caller's settings and memory pool): `spans` here is the
        // given rows, not the session's table.
        let ctx = match state.as_any().downcast_ref::<SessionState>() {
            Some(s) => {
                SessionContext::new_with_config_rt(s.config().clone(), s.runtime_env().clone())
            }
            None => SessionContext::new(),
        };
        udf::register(&ctx, Arc::clone(&self.prices));
        ctx.register_table("spans", spans)?;
        ctx.sql(views::STEPS).await?;
        let filter = match dates {
            Some([]) => "WHERE false".to_string(),
            Some(dates) => {
                let list: Vec<String> = dates
                    .iter()
                    .map(|d| format!("'{}'", d.replace('\'', "''")))
                    .collect();
                format!("WHERE date IN ({})", list.join(", "))
            }
            None => String::new(),
        };
        let sql = format!("{PARTIAL} {filter} GROUP BY date, run_id");
        let df = ctx.sql(&sql).await?;
        df.create_physical_plan()
            .await
            .map_err(|e| DataFusionError::Context("run rollup".into(), Box::new(e)))
    }
}
