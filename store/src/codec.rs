//! WAL payload encoding: one Arrow IPC stream holding one batch with the `spans` schema.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

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

/// Decodes a payload written by [`encode`] into its batches.
pub fn decode(payload: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)
        .map_err(|e| Error::Codec(format!("cannot read IPC stream: {e}")))?;
    reader
        .map(|b| b.map_err(|e| Error::Codec(format!("cannot decode batch: {e}"))))
        .collect()
}
