//! Analytics over a real store built from the synthetic reference workload: golden SQL files under
//! `fixtures/sql/`, and every standard metric cross-checked against plain Rust over the raw OTLP
//! spans (independent of the normalizer, the views and DataFusion).
//!
//! Regenerate the golden files with `CUSTOS_REGENERATE=1 cargo test --workspace --test integration`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use custos_analytics::{Analytics, PriceTable, QueryOptions, QueryResult};
use custos_collector::synth::{SynthOptions, generate};
use custos_store::{Store, StoreOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A store holding the default synthetic workload: the first half flushed to Parquet, the rest in
/// the WAL and memtable, so every query reads both.
async fn fixture_store(dir: &Path) -> Store {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = std::time::Duration::from_secs(3600);
    o.retention_days = None;
    let store = Store::open(o).await.unwrap();
    let requests: Vec<_> = generate(SynthOptions::default()).collect();
    let half = requests.len() / 2;
    for (i, req) in requests.iter().enumerate() {
        let n = custos_collector::normalize(req).unwrap();
        assert_eq!(n.rejected, 0);
        store.append(n.batch.unwrap()).await.unwrap();
        if i + 1 == half {
            store.flush().await.unwrap();
        }
    }
    store
}

async fn fixture_analytics(dir: &Path) -> Analytics {
    let store = fixture_store(dir).await;
    let prices = PriceTable::load(&repo().join("rules/prices.yaml")).unwrap();
    Analytics::with_prices(store, QueryOptions::default(), prices)
        .await
        .unwrap()
}

/// Renders a result as tab-separated lines; floats with 6 decimals so the golden files do not
/// depend on the order partial sums were added in.
fn render(r: &QueryResult) -> Vec<String> {
    let mut lines = Vec::new();
    for batch in &r.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow::util::display::FormatOptions::default().with_null("NULL"),
                )
                .unwrap()
            })
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| match c.data_type() {
                    DataType::Float64 if !c.is_null(row) => {
                        let v = c.as_primitive::<arrow::datatypes::Float64Type>().value(row);
                        let s = format!("{v:.6}");
                        if s == "-0.000000" {
                            "0.000000".into()
                        } else {
                            s
                        }
                    }
                    _ => f.value(row).to_string(),
                })
                .collect();
            lines.push(cells.join("\t"));
        }
    }
    lines
}

/// One `query NAME` block of a golden file.
struct Block {
    name: String,
    sql: String,
    expected: Vec<String>,
}

fn parse_golden(text: &str) -> (Vec<String>, Vec<Block>) {
    let mut header = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("query ") {
            let mut sql = Vec::new();
            for l in lines.by_ref() {
                if l == "----" {
                    break;
                }
                sql.push(l);
            }
            let mut expected = Vec::new();
            while let Some(l) = lines.peek() {
                if l.is_empty() {
                    break;
                }
                expected.push(lines.next().unwrap().to_string());
            }
            blocks.push(Block {
                name: name.trim().to_string(),
                sql: sql.join("\n"),
                expected,
            });
        } else if blocks.is_empty() && !line.is_empty() {
            header.push(line.to_string());
        }
    }
    (header, blocks)
}

/// Runs every golden file under `fixtures/sql/`; with `CUSTOS_REGENERATE=1`, rewrites them.
#[tokio::test]
async fn golden_sql_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    let regenerate = std::env::var("CUSTOS_REGENERATE").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("fixtures/sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let (header, blocks) = parse_golden(&text);
        assert!(!blocks.is_empty(), "{}", file.display());
        let mut out = header.join("\n");
        out.push_str("\n\n");
        for b in &blocks {
            let actual = match a.query(&b.sql).await {
                Ok(r) => render(&r),
                Err(e) => vec![format!("error: {e}")],
            };
            if !regenerate && actual != b.expected {
                failures.push(format!(
                    "{} `{}`:\n--- expected\n{}\n--- actual\n{}",
                    file.display(),
                    b.name,
                    b.expected.join("\n"),
                    actual.join("\n")
                ));
            }
            out.push_str(&format!("query {}\n{}\n----\n", b.name, b.sql));
            for l in &actual {
                out.push_str(l);
                out.push('\n');
            }
            out.push('\n');
        }
        if regenerate {
            std::fs::write(file, out.trim_end().to_string() + "\n").unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "golden SQL mismatches (regenerate with CUSTOS_REGENERATE=1 if intended):\n{}",
        failures.join("\n\n")
    );
}
