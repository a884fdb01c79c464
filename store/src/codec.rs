//! WAL payload encoding: one Arrow IPC stream holding one batch with the `spans` schema.

use std::io::Cursor;

use arrow::array::new_null_array;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use custos_schema::spans_schema;

use crate::{Error, Result};

/// Encodes a batch as an Arrow IPC stream.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| Error::Codec(format!("cannot start IPC stream: {e}")))?;
        w.write(batch)
            .map_err(|e| Error::Codec(format!("cannot encode batch: {e}")))?;
        w.finish()
            .map_err(|e| Error::Codec(format!("cannot finish IPC stream: {e}")))?;
    }
    Ok(buf)
}

/// Decodes a payload written by [`encode`] into its batches, with the current [`spans_schema`]:
/// a record written by an older version lacks the columns added since, which read as null.
pub fn decode(payload: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)
        .map_err(|e| Error::Codec(format!("cannot read IPC stream: {e}")))?;
    reader
        .map(|b| {
            b.map_err(|e| Error::Codec(format!("cannot decode batch: {e}")))
                .and_then(|b| current(&b))
        })
        .collect()
}

/// `batch` with the current schema's columns, by name; columns it lacks are null.
fn current(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = spans_schema();
    if batch.schema_ref().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Err(Error::Codec(format!(
                "WAL column `{}` is {} where this version writes {}",
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| {
        Error::Codec(format!(
            "cannot bring a WAL batch to the current schema: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
    use custos_schema::col;
    use std::sync::Arc;

    /// A batch of the current schema with `trace_id` and `source` set.
    fn current_batch() -> RecordBatch {
        let schema = spans_schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                col::TRACE_ID => Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
                col::SOURCE => Arc::new(StringArray::from(vec!["s"; 3])),
                _ => new_null_array(f.data_type(), 3),
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn records_of_an_older_schema_replay_with_the_new_columns_null() {
        let now = current_batch();
        assert_eq!(decode(&encode(&now).unwrap()).unwrap(), vec![now.clone()]);
        // Written before `source` existed.
        let keep: Vec<usize> = (0..now.num_columns())
            .filter(|&i| now.schema().field(i).name() != col::SOURCE)
            .collect();
        let old = now.project(&keep).unwrap();
        let back = decode(&encode(&old).unwrap()).unwrap();
        assert_eq!(back[0].schema(), spans_schema());
        let source = back[0].column_by_name(col::SOURCE).unwrap();
        assert_eq!(source.null_count(), 3);
        let ids = back[0].column_by_name(col::TRACE_ID).unwrap();
        assert_eq!(
            ids.as_ref(),
            now.column_by_name(col::TRACE_ID).unwrap().as_ref()
        );
        // A column retyped is an error naming it, not a silent cast.
        let mut columns = old.columns().to_vec();
        let i = old.schema().index_of(col::NAME).unwrap();
        columns[i] = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let mut fields: Vec<_> = old
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[i] =
            arrow::datatypes::Field::new(col::NAME, arrow::datatypes::DataType::Int64, true);
        let odd =
            RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
        let e = decode(&encode(&odd).unwrap()).unwrap_err().to_string();
        assert!(e.contains("`name`"), "{e}");
    }
}
