//! Rendering query results.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{Error, QueryResult, Result};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header; nested values rendered as text.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// An Arrow IPC stream.
    Arrow,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "ndjson" => Ok(Format::Ndjson),
            "arrow" => Ok(Format::Arrow),
            other => Err(format!(
                "unknown format `{other}`; use `table`, `csv`, `json`, `ndjson` or `arrow`"
            )),
        }
    }
}

impl Format {
    /// The HTTP media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// Picks a format from an HTTP `Accept` header; JSON when nothing matches.
    pub fn from_accept(accept: &str) -> Self {
        for part in accept.split(',') {
            let media = part.split(';').next().unwrap_or("").trim();
            match media {
                "application/json" => return Format::Json,
                "text/csv" => return Format::Csv,
                "application/vnd.apache.arrow.stream" => return Format::Arrow,
                "application/x-ndjson" => return Format::Ndjson,
                "text/plain" => return Format::Table,
                _ => {}
            }
        }
        Format::Json
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Execution(format!("cannot render result: {e}"))
}

/// Replaces nested columns (lists, maps, structs) by their text form, for CSV.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch> {
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &options).map_err(err)?;
            let mut b = StringBuilder::new();
            for i in 0..c.len() {
                if c.is_null(i) {
                    b.append_null();
                } else {
                    b.append_value(fmt.value(i).to_string());
                }
            }
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(Arc::new(b.finish()));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(Arc::clone(c));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(err)
}

/// Renders a result.
pub fn render(result: &QueryResult, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Table => {
            let t = arrow::util::pretty::pretty_format_batches_with_schema(
                Arc::clone(&result.schema),
                &result.batches,
            )
            .map_err(err)?;
            let n = result.num_rows();
            Ok(format!("{t}\n{n} row{}\n", if n == 1 { "" } else { "s" }).into_bytes())
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::new());
            if result.batches.is_empty() {
                let empty = RecordBatch::new_empty(Arc::clone(&result.schema));
                w.write(&flatten_nested(&empty)?).map_err(err)?;
            }
            for b in &result.batches {
                w.write(&flatten_nested(b)?).map_err(err)?;
            }
            Ok(w.into_inner())
        }
        Format::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(Vec::new());
            for b in &result.batches {
                w.write(b).map_err(err)?;
            }
            w.finish().map_err(err)?;
            let mut out = w.into_inner();
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
            Ok(out)
        }
        Format::Ndjson => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
            for b in &result.batches {
                w.write(b).map_err(err)?;
            }
            w.finish().map_err(err)?;
            Ok(w.into_inner())
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &result.schema)
                .map_err(err)?;
            for b in &result.batches {
                w.write(b).map_err(err)?;
            }
            w.finish().map_err(err)?;
            w.into_inner().map_err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array as _, Int64Array, ListArray, StringArray};
    use arrow::datatypes::Int64Type;

    fn result() -> QueryResult {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", list.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(list),
            ],
        )
        .unwrap();
        QueryResult {
            schema,
            batches: vec![batch],
        }
    }

    #[test]
    fn csv_quotes_and_renders_nested_values_as_text() {
        let out = String::from_utf8(render(&result(), Format::Csv).unwrap()).unwrap();
        assert_eq!(out, "n,s,l\n1,\"a,b\",\"[1, 2]\"\n2,,\n");
    }

    #[test]
    fn json_and_ndjson_keep_nulls_explicit() {
        let out = String::from_utf8(render(&result(), Format::Json).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["l"], serde_json::json!([1, 2]));
        assert!(v[1]["s"].is_null());
        let out = String::from_utf8(render(&result(), Format::Ndjson).unwrap()).unwrap();
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn empty_results_still_have_a_shape() {
        let empty = QueryResult {
            schema: result().schema,
            batches: vec![],
        };
        assert_eq!(render(&empty, Format::Json).unwrap(), b"[]\n");
        assert_eq!(render(&empty, Format::Csv).unwrap(), b"n,s,l\n");
        let table = String::from_utf8(render(&empty, Format::Table).unwrap()).unwrap();
        assert!(
            table.contains("| n | s | l |") && table.ends_with("0 rows\n"),
            "{table}"
        );
    }

    #[test]
    fn formats_parse_and_accept_headers_map() {
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("unknown format `xml`")
        );
        assert_eq!(Format::from_accept("text/csv; q=0.9"), Format::Csv);
        assert_eq!(Format::from_accept("*/*"), Format::Json);
        assert_eq!(
            Format::from_accept("application/vnd.apache.arrow.stream"),
            Format::Arrow
        );
    }
}
