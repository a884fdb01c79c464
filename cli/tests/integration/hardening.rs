//! Hostile exports to the real binary cost an error, not the server's memory (issue 16).

use std::io::Write as _;

use super::{KillOnDrop, authed, repo, spawn_with};

/// The server's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

const BUDGET_MIB: u64 = 256;
/// What the server may hold beside its memory budget: the runtime, the SQL session, one body
/// and its inflated copy.
const MARGIN_MIB: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_empty_spans_are_refused_before_decoding_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custos.toml");
    std::fs::write(
        &config,
        format!("[store]\nmemory_budget_mib = {BUDGET_MIB}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = spawn_with(&data, &repo(), &["--config", config.to_str().unwrap()]);
    let _kill = KillOnDrop(server.child.id());
    let client = authed(&server.token);
    // 16 MiB less a little: eight million spans, under the body limit.
    let body = custos_synth::ingest::empty_spans(8_000_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    let gzipped = gz.finish().unwrap();
    let json = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(5_000_000)
    );
    let cases: [(&str, &str, Option<&str>, Vec<u8>); 3] = [
        ("protobuf", "application/x-protobuf", None, body),
        ("gzip", "application/x-protobuf", Some("gzip"), gzipped),
        ("json", "application/json", None, json.into_bytes()),
    ];
    for (name, ct, encoding, bytes) in cases {
        for round in 0..3 {
            let started = std::time::Instant::now();
            let mut req = client
                .post(&server.http)
                .header("content-type", ct)
                .body(bytes.clone());
            if let Some(e) = encoding {
                req = req.header("content-encoding", e);
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            assert_eq!(status, 413, "{name} {round}: {text}");
            assert!(text.contains("65536 spans"), "{name}: {text}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{name}: {:?}",
                started.elapsed()
            );
        }
    }
    let peak = peak_rss(server.child.id());
    assert!(
        peak < (BUDGET_MIB + MARGIN_MIB) << 20,
        "peak RSS {} MiB over the budget {BUDGET_MIB} MiB + {MARGIN_MIB} MiB",
        peak >> 20
    );
    // And the server goes on storing what fits.
    let res = client
        .post(&server.http)
        .header("content-type", "application/json")
        .body(super::export_body(1, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test fills a small filesystem and needs to mount a tmpfs (as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes to `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    // What is left is smaller than a block: fill that too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

async fn count_spans(client: &reqwest::Client, api: &str) -> i64 {
    let res = client
        .post(format!("{api}/api/sql"))
        .json(&serde_json::json!({"sql": "SELECT count(*) AS n FROM spans"}))
        .send()
        .await
        .unwrap();
    let rows: Vec<serde_json::Value> = res.json().await.unwrap();
    rows[0]["n"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_exports_with_503_loses_nothing_and_recovers_by_itself() {
    let fs = Tmpfs::mount(48);
    let data = fs.0.join("data");
    let cwd = repo();
    // The config lives off the small filesystem; flushes wait, so the WAL takes every byte.
    let etc = tempfile::tempdir().unwrap();
    let config = etc.path().join("custos.toml");
    std::fs::write(&config, "[store]\nflush_interval_secs = 3600\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut server = spawn_with(&data, &cwd, &args);
    let kill = KillOnDrop(server.child.id());
    let client = authed(&server.token);
    let (mut acked, mut batch) = (0i64, 0u32);
    let http = server.http.clone();
    let send = |batch: u32| {
        let req = client
            .post(&http)
            .header("content-type", "application/json")
            .body(super::export_body(batch, 50));
        async move { req.send().await.unwrap() }
    };
    for _ in 0..10 {
        batch += 1;
        assert_eq!(send(batch).await.status(), 200);
        acked += 50;
    }
    fill(&fs.0.join("filler"));
    // Exports may fit in what is left for a while; then the WAL write fails and they get 503.
    let mut refused = None;
    for _ in 0..200 {
        batch += 1;
        let res = send(batch).await;
        match res.status().as_u16() {
            200 => acked += 50,
            503 => {
                refused = Some((
                    res.headers().get("retry-after").cloned(),
                    res.text().await.unwrap(),
                ));
                break;
            }
            s => panic!("unexpected {s}: {}", res.text().await.unwrap()),
        }
    }
    let (retry, text) = refused.expect("a full disk never refused an export");
    assert!(retry.is_some(), "503 without Retry-After");
    assert!(text.contains("WAL append failed"), "{text}");
    let ready = client
        .get(format!("{}/readyz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(
        body["failing"][0].as_str().unwrap().starts_with("wal:"),
        "{body}"
    );
    // Space returns: readiness comes back by itself (no export needed: a balancer that took the
    // server out sends none), and the next export is stored, with no restart.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let mut ready = None;
    for _ in 0..50 {
        let res = client
            .get(format!("{}/readyz", server.api))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            ready = Some(res);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ready.is_some(),
        "/readyz never turned 200 after space returned"
    );
    batch += 1;
    assert_eq!(send(batch).await.status(), 200);
    acked += 50;
    assert_eq!(count_spans(&client, &server.api).await, acked);
    // And every acknowledged span survives a kill -9.
    drop(kill);
    let _ = server.child.wait();
    server = spawn_with(&data, &cwd, &args);
    let _kill = KillOnDrop(server.child.id());
    let client = authed(&server.token);
    assert_eq!(count_spans(&client, &server.api).await, acked);
    let _ = std::process::Command::new("kill")
        .args(["-9", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_wal_stops_the_server_and_check_and_salvage_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("custos.toml");
    std::fs::write(&config, "[store]\nflush_interval_secs = 3600\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut server = spawn_with(&data, &repo(), &args);
    let kill = KillOnDrop(server.child.id());
    let client = authed(&server.token);
    for batch in 1..=5 {
        let res = client
            .post(&server.http)
            .header("content-type", "application/json")
            .body(super::export_body(batch, 50))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    drop(kill);
    let _ = server.child.wait();
    // Flip a byte inside the second record's payload.
    let segment = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The top bit of `len` marks a group commit's first record.
    let first_len = (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) & 0x7fff_ffff) as usize;
    let second = 8 + 16 + first_len;
    bytes[second + 16 + 10] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let out = std::process::Command::new(super::BIN)
        .args(["serve", "--data"])
        .arg(&data)
        .args(args)
        .args([
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("damaged at byte {second}")) && err.contains("custos wal salvage"),
        "{err}"
    );
    let d = data.to_str().unwrap();
    let (code, out, err) = super::run_in(&repo(), &["wal", "check", "--data", d]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("records 2..=2 lost") && out.contains("4 readable records"),
        "{out}"
    );
    let (code, out, err) = super::run_in(&repo(), &["wal", "salvage", "--data", d]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("kept 4 record(s)") && out.contains("1 lost"),
        "{out}"
    );
    let (code, out, _) = super::run_in(&repo(), &["wal", "check", "--data", d]);
    assert_eq!(code, Some(0), "{out}");

    server = spawn_with(&data, &repo(), &args);
    let _kill = KillOnDrop(server.child.id());
    let client = authed(&server.token);
    assert_eq!(count_spans(&client, &server.api).await, 200);
    let rows: Vec<serde_json::Value> = client
        .post(format!("{}/api/sql", server.api))
        .json(&serde_json::json!({"sql": "SELECT DISTINCT trace_id FROM spans ORDER BY 1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Batch 2 (trace 3) was in the damaged record; the others are all there.
    let traces: Vec<String> = rows
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = [2u32, 4, 5, 6]
        .iter()
        .map(|t| format!("{t:032x}"))
        .collect();
    assert_eq!(traces, want);
}

#[test]
fn the_fault_suite_loses_and_duplicates_nothing_and_counts_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    // From the checkout: the suite's server and its tokens use `rules/policy`.
    let out = std::process::Command::new(super::BIN)
        .current_dir(repo())
        .args([
            "bench",
            "faults",
            "--seconds",
            "2",
            "--kills",
            "2",
            "--json",
            "--data",
        ])
        .arg(dir.path().join("faults"))
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{r:#}");
    assert!(r["acked_spans"].as_u64().unwrap() > 0, "{r:#}");
    for key in [
        "lost_spans",
        "duplicated_spans",
        "partial_exports",
        "panics",
        "unexpected_5xx",
    ] {
        assert_eq!(r[key], 0, "{key}: {r:#}");
    }
    assert_eq!(r["double_decisions"], 0, "{r:#}");
    assert_eq!(r["api_failures"], 0, "{r:#}");
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 7, "{r:#}");
    let phase = |prefix: &str| {
        phases
            .iter()
            .find(|p| p["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no phase `{prefix}`: {r:#}"))
    };
    // The hostile side was answered: 413 for the bombs, 400 for the garbage, no 5xx.
    let hostile = &phase("oversized")["fault_answers"];
    assert!(hostile["413"].as_u64().unwrap_or(0) > 0, "{hostile}");
    assert!(hostile["400"].as_u64().unwrap_or(0) > 0, "{hostile}");
    // Heavy queries were refused or stopped, and the exports went on meanwhile.
    assert!(phase("heavy")["acked"].as_u64().unwrap() > 0, "{r:#}");
    // Racing approve/reject pairs: each decided once, the loser told 409.
    let races = &phase("review")["fault_answers"];
    assert_eq!(races["two winners"], serde_json::Value::Null, "{races}");
    assert!(phase("generated")["acked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(phase("kill")["fault_answers"]["kill -9"], 2);
}
