//! Folding aliases into the files: one Delta update that rewrites exactly the rows an alias
//! applies to, in the partitions that hold them, after which readers no longer need the alias.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use custos_schema::col;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{col as column, lit};

use super::{Ident, RunOf};
use crate::table::{COMPACT_ZSTD_LEVEL, read_watermark, writer_properties};
use crate::{Error, Result, SpanTable};

/// Rewrites the run id of every span in `dates` that `aliases` resolves. Returns the rows
/// rewritten.
pub(crate) async fn fold(
    table: &mut SpanTable,
    aliases: HashMap<u128, Ident>,
    dates: &BTreeSet<String>,
) -> Result<u64> {
    if aliases.is_empty() || dates.is_empty() {
        return Ok(0);
    }
    let aliases = Arc::new(aliases);
    let args = || vec![column(col::TRACE_ID), column(col::RUN_ID)];
    let dates: Vec<Expr> = dates.iter().map(|d| lit(d.clone())).collect();
    let predicate = column(col::DATE)
        .in_list(dates, false)
        .and(RunOf::aliased(Arc::clone(&aliases)).call(args()));
    let (new, metrics) = table
        .table
        .clone()
        .update()
        .with_predicate(predicate)
        .with_update(col::RUN_ID, RunOf::run(Arc::clone(&aliases)).call(args()))
        .with_update(
            col::WORKFLOW,
            RunOf::workflow(aliases).call(vec![
                column(col::TRACE_ID),
                column(col::RUN_ID),
                column(col::WORKFLOW),
            ]),
        )
        .with_writer_properties(writer_properties(COMPACT_ZSTD_LEVEL))
        .await
        .map_err(|e| Error::Table(format!("folding run ids into the table failed: {e}")))?;
    table.table = new;
    table.watermark = read_watermark(&table.table).await?;
    Ok(metrics.num_updated_rows as u64)
}
