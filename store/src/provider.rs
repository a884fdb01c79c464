//! [`SpansProvider`]: the `spans` table as DataFusion sees it, the union of the Delta table at one
//! version and the memtable batches above that version's watermark.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use custos_schema::spans_schema;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::runs::{Aliases, RunOf};
use crate::{Snapshot, Store};
use custos_schema::col;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::prelude::col as column;

/// The `spans` table over a [`Store`]. Each scan takes a fresh consistent snapshot, so a query sees
/// every acknowledged span exactly once, including spans acknowledged a moment ago.
pub struct SpansProvider {
    store: Store,
    schema: SchemaRef,
    /// Scans read this snapshot instead of a fresh one.
    pinned: Option<Snapshot>,
}

impl fmt::Debug for SpansProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpansProvider").finish_non_exhaustive()
    }
}

impl SpansProvider {
    /// A provider over `store`. Its schema is the table's scan schema (strings as `Utf8View`, the
    /// partition column dictionary-encoded) when the table exists, else [`spans_schema`].
    pub fn new(store: Store) -> Self {
        let schema = store
            .snapshot()
            .table
            .map(|t| t.schema())
            .unwrap_or_else(spans_schema);
        Self {
            store,
            schema,
            pinned: None,
        }
    }

    /// A provider that reads `snapshot` at every scan (one query's consistent view, shared by
    /// several tables).
    pub fn pinned(store: Store, snapshot: Snapshot) -> Self {
        let schema = snapshot
            .table
            .as_ref()
            .map(|t| t.schema())
            .unwrap_or_else(spans_schema);
        Self {
            store,
            schema,
            pinned: Some(snapshot),
        }
    }
}

/// Casts a memtable batch (built with [`spans_schema`]) to the provider's schema.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    // By name: a table created by an older version has later columns at the end.
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                DataFusionError::Internal(format!("memtable batch has no column `{}`", f.name()))
            })?;
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type()).map_err(DataFusionError::from)
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl SpansProvider {
    /// The table's scan with the run-id aliases applied ([`crate::runs`]): `run_id` is computed
    /// from `trace_id` and the stored value, and no filter on `run_id` reaches the files (their
    /// statistics describe the stored values, not the resolved ones).
    async fn resolved_scan(
        &self,
        table: &Arc<dyn TableProvider>,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        aliases: &Aliases,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = &self.schema;
        let run = schema.index_of(col::RUN_ID)?;
        let trace = schema.index_of(col::TRACE_ID)?;
        let workflow = schema.index_of(col::WORKFLOW)?;
        let kept: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                !f.column_refs()
                    .iter()
                    .any(|c| c.name == col::RUN_ID || c.name == col::WORKFLOW)
            })
            .cloned()
            .collect();
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        if !wanted.contains(&run) && !wanted.contains(&workflow) {
            return table.scan(state, Some(&wanted), &kept, limit).await;
        }
        let mut inner = wanted.clone();
        for needed in [trace, run] {
            if !inner.contains(&needed) {
                inner.push(needed);
            }
        }
        let scan = table.scan(state, Some(&inner), &kept, limit).await?;
        let resolved = resolve_runs(scan, state, aliases)?;
        let out = resolved.schema();
        let exprs = (0..wanted.len()).map(|i| {
            let name = out.field(i).name().clone();
            ProjectionExpr {
                expr: Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                alias: name,
            }
        });
        Ok(Arc::new(ProjectionExec::try_new(exprs, resolved)?))
    }
}

/// `plan` with its `run_id` and `workflow` columns (where present) resolved through `aliases`
/// ([`crate::runs`]); the plan must have `trace_id` and `run_id` columns.
pub(crate) fn resolve_runs(
    plan: Arc<dyn ExecutionPlan>,
    state: &dyn Session,
    aliases: &Aliases,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let (t, r) = (column(col::TRACE_ID), column(col::RUN_ID));
    let run_of = RunOf::run(Arc::clone(aliases)).call(vec![t.clone(), r.clone()]);
    let run_of = state.create_physical_expr(run_of, &df_schema)?;
    let workflow_of = if schema.index_of(col::WORKFLOW).is_ok() {
        let w = RunOf::workflow(Arc::clone(aliases)).call(vec![t, r, column(col::WORKFLOW)]);
        Some(state.create_physical_expr(w, &df_schema)?)
    } else {
        None
    };
    let exprs = schema.fields().iter().enumerate().map(|(i, f)| {
        let name = f.name().clone();
        let expr: Arc<dyn PhysicalExpr> = match (&workflow_of, name.as_str()) {
            (_, col::RUN_ID) => Arc::clone(&run_of),
            (Some(w), col::WORKFLOW) => Arc::clone(w),
            _ => Arc::new(Column::new(&name, i)),
        };
        ProjectionExpr { expr, alias: name }
    });
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[async_trait]
impl TableProvider for SpansProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The table side prunes files and row groups with them; the memtable side ignores them, so
        // DataFusion must still apply every filter above the union.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = match &self.pinned {
            Some(s) => s.clone(),
            None => self.store.snapshot(),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let Some(table) = &snapshot.table {
            inputs.push(match &snapshot.aliases {
                Some(aliases) => {
                    self.resolved_scan(table, state, projection, filters, limit, aliases)
                        .await?
                }
                None => table.scan(state, projection, filters, limit).await?,
            });
        }
        if !snapshot.mem.is_empty() {
            let mem = snapshot
                .mem
                .iter()
                .map(|b| conform(b, &self.schema))
                .collect::<Result<Vec<_>>>()?;
            let source =
                MemorySourceConfig::try_new(&[mem], Arc::clone(&self.schema), projection.cloned())?
                    .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(source));
        }
        match inputs.len() {
            0 => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => Arc::clone(&self.schema),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
            1 => inputs
                .pop()
                .ok_or_else(|| DataFusionError::Internal("no scan input".into())),
            _ => UnionExec::try_new(inputs),
        }
    }
}
