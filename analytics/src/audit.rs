//! The `audit` table: the data directory's audit log (`DATA/audit/audit.jsonl`), read at each scan
//! so queries see every record appended so far.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use custos_audit::Record;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// The `audit` table's schema.
pub fn audit_schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("kind", DataType::Utf8, false),
        Field::new("principal", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("policies", list(), false),
        Field::new("advice", list(), false),
        Field::new("errors", list(), false),
        Field::new("context", DataType::Utf8, false),
        Field::new("policy_hash", DataType::Utf8, false),
        Field::new("prev_hash", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
    ]))
}

/// Audit records as one batch of the `audit` schema.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch> {
    let mut seq = Int64Builder::new();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut strings: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut lists: Vec<ListBuilder<StringBuilder>> = (0..3)
        .map(|_| ListBuilder::new(StringBuilder::new()))
        .collect();
    let mut tail: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    for r in records {
        seq.append_value(i64::try_from(r.seq).unwrap_or(i64::MAX));
        time.append_option(
            chrono::DateTime::parse_from_rfc3339(&r.time)
                .ok()
                .map(|t| t.timestamp_micros()),
        );
        for (b, v) in strings
            .iter_mut()
            .zip([&r.kind, &r.principal, &r.action, &r.resource])
        {
            b.append_value(v);
        }
        for (b, v) in lists.iter_mut().zip([&r.policies, &r.advice, &r.errors]) {
            for s in v {
                b.values().append_value(s);
            }
            b.append(true);
        }
        let context = r.context.to_string();
        for (b, v) in
            tail.iter_mut()
                .zip([&r.decision, &context, &r.policy_hash, &r.prev_hash, &r.hash])
        {
            b.append_value(v);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(seq.finish()), Arc::new(time.finish())];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    let [decision, context, policy_hash, prev_hash, hash] = {
        let mut it = tail.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || {
            it.next()
                .ok_or_else(|| DataFusionError::Internal("audit columns".into()))
        };
        [next()?, next()?, next()?, next()?, next()?]
    };
    columns.push(decision);
    columns.extend(lists.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend([context, policy_hash, prev_hash, hash]);
    RecordBatch::try_new(audit_schema(), columns).map_err(DataFusionError::from)
}

/// Table provider over an audit directory.
pub struct AuditProvider {
    dir: PathBuf,
    schema: SchemaRef,
}

impl fmt::Debug for AuditProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditProvider")
            .field("dir", &self.dir)
            .finish()
    }
}

impl AuditProvider {
    /// A provider over the audit log in `dir` (usually `DATA/audit`).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            schema: audit_schema(),
        }
    }
}

#[async_trait]
impl TableProvider for AuditProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dir = self.dir.clone();
        let records = tokio::task::spawn_blocking(move || custos_audit::read_all(&dir))
            .await
            .map_err(|e| DataFusionError::Execution(format!("reading the audit log: {e}")))?
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let batch = records_to_batch(&records)?;
        let source = MemorySourceConfig::try_new(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?
        .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}
