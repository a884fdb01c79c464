//! Where the CPU time of ingest goes: each stage timed single-threaded on the same requests.

use std::time::Instant;

use serde::Serialize;

use crate::{Error, Result};

/// Where the CPU time of ingest goes, measured single-threaded on the same requests.
#[derive(Debug, Clone, Serialize)]
pub struct StageCosts {
    /// Protobuf decode of the export request.
    pub decode_us: f64,
    /// Redaction of the decoded request with the server's rules.
    pub redact_us: f64,
    /// Validation and normalization into an Arrow batch.
    pub normalize_us: f64,
    /// Arrow IPC encoding of the batch for the WAL.
    pub encode_us: f64,
    /// WAL write of the encoded records without fsync.
    pub wal_write_us: f64,
    /// One `fdatasync` of the WAL, in microseconds (not per span).
    pub fsync_us: f64,
}

/// Times each stage over `pool`, single-threaded.
pub(super) fn stage_costs(
    pool: &[bytes::Bytes],
    spans_per_request: usize,
    redactor: &custos_redact::Redactor,
) -> Result<StageCosts> {
    let rounds = 4;
    let n = (pool.len() * rounds * spans_per_request) as f64;
    let mut decoded = Vec::with_capacity(pool.len());
    let t = Instant::now();
    for _ in 0..rounds {
        decoded.clear();
        for body in pool {
            decoded.push(
                custos_collector::http::decode_request(
                    body,
                    custos_collector::http::Encoding::Protobuf,
                )
                .map_err(Error::Task)?,
            );
        }
    }
    let decode_us = t.elapsed().as_secs_f64() * 1e6 / n;
    let mut copies: Vec<_> = (0..rounds).flat_map(|_| decoded.iter().cloned()).collect();
    let t = Instant::now();
    for req in &mut copies {
        redactor.request(req);
    }
    let redact_us = t.elapsed().as_secs_f64() * 1e6 / n;
    drop(copies);
    let mut batches = Vec::with_capacity(pool.len());
    let t = Instant::now();
    for _ in 0..rounds {
        batches.clear();
        for req in &decoded {
            let normalized = custos_collector::normalize(req, None)
                .map_err(|e| Error::Task(format!("normalize failed: {e}")))?;
            batches.extend(normalized.batch);
        }
    }
    let normalize_us = t.elapsed().as_secs_f64() * 1e6 / n;
    let mut payloads = Vec::with_capacity(pool.len());
    let t = Instant::now();
    for _ in 0..rounds {
        payloads.clear();
        for b in &batches {
            payloads.push(custos_store::codec::encode(b)?);
        }
    }
    let encode_us = t.elapsed().as_secs_f64() * 1e6 / n;
    let dir = std::env::temp_dir().join(format!("custos-bench-wal-{}", std::process::id()));
    let (mut wal, _) = custos_store::wal::Wal::open(
        &dir,
        0,
        custos_store::wal::WalOptions {
            sync: false,
            ..Default::default()
        },
    )?;
    let t = Instant::now();
    for _ in 0..rounds {
        for p in &payloads {
            wal.append(std::slice::from_ref(p))?;
        }
    }
    let wal_write_us = t.elapsed().as_secs_f64() * 1e6 / n;
    drop(wal);
    let (mut wal, _) = custos_store::wal::Wal::open(&dir, 0, Default::default())?;
    let syncs = 20;
    let t = Instant::now();
    for _ in 0..syncs {
        wal.append(&[b"x"])?;
    }
    let fsync_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(syncs);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(StageCosts {
        decode_us,
        redact_us,
        normalize_us,
        encode_us,
        wal_write_us,
        fsync_us,
    })
}
