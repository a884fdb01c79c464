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

#[tokio::test]
async fn explore() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    for sql in [
        "SELECT * FROM runs ORDER BY start_time LIMIT 5",
        "SELECT outcome, count(*) FROM runs GROUP BY 1 ORDER BY 1",
        "SELECT cost_source, count(*) FROM steps GROUP BY 1 ORDER BY 1",
        "SELECT * FROM decisions ORDER BY start_time LIMIT 3",
        "SELECT model, psi(confidence, start_time >= TIMESTAMP '2026-11-02T00:00:00Z'), ks(confidence, start_time >= TIMESTAMP '2026-11-02T00:00:00Z') FROM decisions GROUP BY 1 ORDER BY 1",
        "SELECT approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) FROM runs",
    ] {
        match a.query(sql).await {
            Ok(r) => println!("{sql}\n{}\n", render(&r).join("\n")),
            Err(e) => println!("{sql}\nERROR {e}\n"),
        }
    }
}
