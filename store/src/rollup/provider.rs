//! [`RollupProvider`]: a rollup's partial rows as DataFusion sees them, for one consistent
//! snapshot: the stored rows plus the memtable tail's where the rollup covers the table, else the
//! partial rows of every span.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::union::UnionExec;

use super::Summarize;
use crate::provider::resolve_runs;
use crate::{Snapshot, SpansProvider, Store};

/// Casts `plan`'s columns, by name, to `schema`'s types and order.
pub(crate) fn conform(
    plan: Arc<dyn ExecutionPlan>,
    schema: &SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    if input.fields().len() == schema.fields().len()
        && input
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
    {
        return Ok(plan);
    }
    let exprs = schema
        .fields()
        .iter()
        .map(|f| {
            let i = input.index_of(f.name())?;
            let c: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), i));
            let expr: Arc<dyn PhysicalExpr> = if input.field(i).data_type() == f.data_type() {
                c
            } else {
                Arc::new(CastExpr::new(c, f.data_type().clone(), None))
            };
            Ok(ProjectionExpr {
                expr,
                alias: f.name().clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// A rollup's rows over a [`Store`]; each scan takes a fresh consistent snapshot.
pub struct RollupProvider {
    store: Store,
    def: Arc<dyn Summarize>,
    schema: SchemaRef,
}

impl fmt::Debug for RollupProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollupProvider")
            .field("rollup", &self.def.name())
            .finish_non_exhaustive()
    }
}

impl RollupProvider {
    /// The rows of rollup `def` over `store` (attached or not: an unattached rollup is computed
    /// from the spans at every scan).
    pub fn new(store: Store, def: Arc<dyn Summarize>) -> Self {
        let schema = def.schema();
        Self { store, def, schema }
    }

    /// The partial rows of `snapshot`, from the rollup where it covers the table.
    async fn plan(
        &self,
        state: &dyn Session,
        snapshot: Snapshot,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stored = snapshot
            .rollups
            .iter()
            .find(|r| {
                r.covering && r.name == self.def.name() && r.fingerprint == self.def.fingerprint()
            })
            .and_then(|r| r.table.clone());
        let Some(stored) = stored else {
            let spans = SpansProvider::pinned(self.store.clone(), snapshot);
            let plan = self.def.plan(state, Arc::new(spans), None).await?;
            return conform(plan, &self.schema);
        };
        let mut rows = stored.scan(state, None, &[], None).await?;
        if let Some(aliases) = &snapshot.aliases {
            rows = resolve_runs(rows, state, aliases)?;
        }
        let rows = conform(rows, &self.schema)?;
        if snapshot.mem.is_empty() {
            return Ok(rows);
        }
        let tail = Snapshot {
            table: None,
            ..snapshot
        };
        let tail = SpansProvider::pinned(self.store.clone(), tail);
        let tail = conform(
            self.def.plan(state, Arc::new(tail), None).await?,
            &self.schema,
        )?;
        UnionExec::try_new(vec![rows, tail])
    }
}

#[async_trait]
impl TableProvider for RollupProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.plan(state, self.store.snapshot()).await?;
        let Some(projection) = projection else {
            return Ok(plan);
        };
        let schema = plan.schema();
        let exprs = projection.iter().map(|&i| {
            let name = schema.field(i).name().clone();
            ProjectionExpr {
                expr: Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                alias: name,
            }
        });
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
