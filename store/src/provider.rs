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

use crate::Store;

/// The `spans` table over a [`Store`]. Each scan takes a fresh consistent snapshot, so a query sees
/// every acknowledged span exactly once, including spans acknowledged a moment ago.
pub struct SpansProvider {
    store: Store,
    schema: SchemaRef,
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
        Self { store, schema }
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
        let snapshot = self.store.snapshot();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let Some(table) = &snapshot.table {
            inputs.push(table.scan(state, projection, filters, limit).await?);
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
