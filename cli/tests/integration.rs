//! Tests of the real `custos` binary: crash safety under `kill -9`, offline SQL beside a running
//! server, and error exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "integration/erase.rs"]
mod erase;
#[path = "integration/hardening.rs"]
mod hardening;
#[path = "integration/redact.rs"]
mod redact;
#[path = "integration/reload.rs"]
mod reload;
#[path = "integration/tls.rs"]
mod tls;

const BIN: &str = env!("CARGO_BIN_EXE_custos");

struct Server {
    child: Child,
    http: String,
    api: String,
    /// The admin token the server wrote (or an earlier start of it wrote) to DATA/auth.
    token: String,
}

/// An HTTP client sending `token`.
fn authed(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Runs the binary in `cwd` as `token` (`CUSTOS_TOKEN`): exit code, stdout, stderr.
fn run_as(cwd: &Path, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .current_dir(cwd)
        .env("CUSTOS_TOKEN", token)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped policies copied to `dir/policy`, with user `who` also a member of `team`.
fn policies_with(dir: &Path, who: &str, team: &str) -> std::path::PathBuf {
    let policies = dir.join("policy");
    std::fs::create_dir_all(&policies).unwrap();
    for f in [
        "schema.cedarschema",
        "deploy.cedar",
        "runtime.cedar",
        "access.cedar",
    ] {
        std::fs::copy(repo().join("rules/policy").join(f), policies.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(repo().join("rules/policy/entities.json")).unwrap();
    let mut entities: Vec<Value> = serde_json::from_str(&text).unwrap();
    let user = entities
        .iter_mut()
        .find(|e| e["uid"]["type"] == "Custos::User" && e["uid"]["id"] == who)
        .unwrap();
    user["parents"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "Custos::Team", "id": team}));
    std::fs::write(
        policies.join("entities.json"),
        serde_json::to_string_pretty(&entities).unwrap(),
    )
    .unwrap();
    policies
}

/// A token for `principal` on the data directory `dir`, made by `custos token create`.
fn token_for(dir: &Path, principal: &str) -> String {
    let (code, out, err) = run_in(
        &repo(),
        &[
            "token",
            "create",
            "--data",
            dir.to_str().unwrap(),
            "--principal",
            principal,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    out.lines().last().unwrap().to_string()
}

fn spawn(dir: &Path) -> Server {
    spawn_in(dir, Path::new("."))
}

/// Starts `custos serve` on ephemeral ports with `cwd` as its working directory.
fn spawn_in(dir: &Path, cwd: &Path) -> Server {
    spawn_with(dir, cwd, &[])
}

/// Starts `custos serve` with extra arguments.
fn spawn_with(dir: &Path, cwd: &Path, extra: &[&str]) -> Server {
    spawn_env(dir, cwd, extra, &[])
}

/// Starts `custos serve` with extra arguments and environment variables.
fn spawn_env(dir: &Path, cwd: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut policies = vec!["--policies".to_string()];
    if !extra.contains(&"--policies") {
        policies.push(repo().join("rules/policy").display().to_string());
    } else {
        policies.clear();
    }
    let mut child = Command::new(BIN)
        .current_dir(cwd)
        .envs(envs.iter().copied())
        .args(["serve", "--data"])
        .arg(dir)
        .args(extra)
        .args(&policies)
        .args([
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .env("CUSTOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut http, mut api) = (None, None);
    while http.is_none() || api.is_none() {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("OTLP/HTTP listening on ") {
            http = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("API listening on ") {
            api = Some(rest.trim().to_string());
        }
    }
    let token = std::fs::read_to_string(dir.join("auth/admin.token"))
        .expect("the server writes an admin token")
        .trim()
        .to_string();
    Server {
        child,
        http: http.unwrap(),
        api: api.unwrap(),
        token,
    }
}

fn export_body(batch: u32, spans: u32) -> String {
    let spans: Vec<Value> = (0..spans)
        .map(|i| {
            serde_json::json!({
                "traceId": format!("{:032x}", u128::from(batch) + 1),
                "spanId": format!("{:016x}", (u64::from(batch) << 20) + u64::from(i) + 1),
                "name": "step",
                "startTimeUnixNano": "1763700000000000000",
                "endTimeUnixNano": "1763700000100000000",
                "attributes": [{"key": "automation.workflow", "value": {"stringValue": "crash"}}]
            })
        })
        .collect();
    serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).to_string()
}

/// Kills a process (the server) when dropped: an assertion failing before the orderly stop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

/// Runs the binary in `cwd`: exit code, stdout, stderr.
fn run_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends the synthetic workload to an OTLP/HTTP endpoint as protobuf; every export must succeed.
async fn send_synth(
    client: &reqwest::Client,
    http: &str,
    options: custos_synth::reference::SynthOptions,
) {
    use prost::Message as _;
    for req in custos_synth::reference::generate(options) {
        let res = client
            .post(http)
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

fn sql_offline(dir: &Path, query: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["sql", "--format", "json", "--data"])
        .arg(dir)
        .arg(query)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kill_9_loses_no_acknowledged_span_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for cycle in 0..3u32 {
        let mut server = spawn(dir.path());
        let acked: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let url = server.http.clone();
        let kill_after = Duration::from_millis(300 + 250 * u64::from(cycle));
        let token = server.token.clone();
        rt.block_on(async {
            let client = authed(&token);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for worker in 0..4u32 {
                let client = client.clone();
                let url = url.clone();
                let acked = Arc::clone(&acked);
                tasks.push(tokio::spawn(async move {
                    for n in 0.. {
                        let batch = cycle * 1_000_000 + worker * 100_000 + n;
                        let res = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(export_body(batch, 25))
                            .send()
                            .await;
                        match res {
                            Ok(r) if r.status() == 200 => {
                                acked.lock().unwrap().insert(batch);
                            }
                            _ => break,
                        }
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            // SIGKILL while requests are in flight.
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            for t in tasks {
                t.await.unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(60));
        });
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "no export was acknowledged before the kill"
        );

        // Offline, before any restart: the WAL tail is visible.
        let rows = sql_offline(
            dir.path(),
            "SELECT trace_id, count(*) AS n, count(DISTINCT span_id) AS d FROM spans GROUP BY trace_id",
        );
        let mut seen = HashSet::new();
        for r in &rows {
            let batch = u32::from_str_radix(r["trace_id"].as_str().unwrap(), 16).unwrap() - 1;
            assert_eq!(r["n"], r["d"], "duplicates in batch {batch}");
            // Each export is all-or-nothing.
            assert_eq!(r["n"], 25, "batch {batch} is partial");
            seen.insert(batch);
        }
        for b in &acked {
            assert!(
                seen.contains(b),
                "acknowledged batch {b} lost (cycle {cycle})"
            );
        }

        // After a restart (replay), through the server.
        let mut server = spawn(dir.path());
        let body: Vec<Value> = rt.block_on(async {
            authed(&server.token)
                .post(format!("{}/api/sql", server.api))
                .json(&serde_json::json!({"sql": "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        assert_eq!(body[0]["n"], body[0]["d"]);
        assert_eq!(body[0]["n"], (seen.len() * 25) as u64);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
}

#[test]
fn offline_sql_errors_exit_non_zero_with_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sql", "--data"])
        .arg(dir.path())
        .arg("SELEC 1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Line: 1, Column"), "{err}");
    let out = Command::new(BIN)
        .args(["sql", "--data", "/nonexistent/custos"])
        .arg("SELECT 1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn tokens_made_and_revoked_by_the_cli_take_effect_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    let _guard = KillOnDrop(server.child.id());
    let data = dir.path().to_str().unwrap();
    // The admin token the server wrote is alone on its line, and private.
    use std::os::unix::fs::PermissionsExt as _;
    let admin_file = dir.path().join("auth/admin.token");
    assert_eq!(
        std::fs::metadata(&admin_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(server.token.starts_with("cst_") && !server.token.contains(char::is_whitespace));
    let (code, out, err) = run_in(
        &repo(),
        &[
            "token",
            "create",
            "--data",
            data,
            "--principal",
            "Custos::User::\"sam\"",
            "--expires",
            "1d",
            "--note",
            "laptop",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let first = out.lines().next().unwrap();
    let id = first
        .strip_prefix("id ")
        .expect("`id ID` first")
        .to_string();
    let sam = out.lines().last().unwrap().to_string();
    let whoami = |token: &str| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = authed(token)
                .get(format!("{}/api/whoami", server.api))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // At once, without a restart.
    let (status, body) = whoami(&sam);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Custos::User::\\\"sam\\\""), "{body}");
    let (code, list, _) = run_in(&repo(), &["token", "list", "--data", data]);
    assert_eq!(code, Some(0));
    assert!(
        list.contains(&id) && list.contains("laptop") && list.contains("valid"),
        "{list}"
    );
    assert!(!list.contains(&sam), "a list never shows a secret");
    // The same through the server, for an admin.
    let (code, served, err) = run_as(
        &repo(),
        &server.token,
        &["token", "list", "--server", &server.api],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(served.contains(&id), "{served}");
    let (code, _, err) = run_as(&repo(), &sam, &["token", "list", "--server", &server.api]);
    assert_eq!(code, Some(2), "an SRE does not manage tokens");
    assert!(err.contains("may not `manage_tokens`"), "{err}");
    // Revoked on the data directory: refused within a second.
    let (code, _, err) = run_in(&repo(), &["token", "revoke", "--data", data, &id]);
    assert_eq!(code, Some(0), "{err}");
    std::thread::sleep(Duration::from_millis(600));
    let (status, body) = whoami(&sam);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    // Tokens are for principals the policies know.
    let (code, _, err) = run_in(
        &repo(),
        &[
            "token",
            "create",
            "--data",
            data,
            "--principal",
            "Custos::User::\"mallory\"",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not in the entity store"), "{err}");
    // Each create and revoke is in the audit trail, naming who did it.
    let rows = sql_offline(
        dir.path(),
        "SELECT action, resource, principal FROM audit WHERE kind = 'token' ORDER BY seq",
    );
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["create_token", "create_token", "revoke_token"],
        "{rows:?}"
    );
    assert!(
        rows[1]["principal"].as_str().unwrap().starts_with("local:"),
        "{rows:?}"
    );
}

#[test]
fn graceful_shutdown_on_sigterm_flushes_to_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    // A failing assertion must not leave the server running.
    let guard = KillOnDrop(server.child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let res = authed(&server.token)
            .post(&server.http)
            .header("content-type", "application/json")
            .body(export_body(7, 10))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    });
    // `custos sql --server` goes through the API; errors exit 2 with the server's message,
    // and so does a missing token.
    let out = Command::new(BIN)
        .args(["sql", "--server", &server.api])
        .arg("SELECT 1")
        .env_remove("CUSTOS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication required"), "{err}");
    let out = Command::new(BIN)
        .env("CUSTOS_TOKEN", &server.token)
        .args(["sql", "--server", &server.api, "--format", "csv"])
        .arg("SELECT count(*) AS n, min(workflow) AS w FROM spans")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n,w\n10,crash\n");
    let out = Command::new(BIN)
        .env("CUSTOS_TOKEN", &server.token)
        .args(["sql", "--server", &server.api])
        .arg("DROP TABLE spans")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut child = server.child;
    let code = child.wait().unwrap();
    std::mem::forget(guard);
    assert!(code.success(), "{code:?}");
    // Everything is in Parquet now: the WAL holds no records.
    let parquet = walk(&dir.path().join("spans"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(parquet >= 1);
    let rows = sql_offline(dir.path(), "SELECT count(*) AS n FROM spans");
    assert_eq!(rows[0]["n"], 10);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn bench_ingest_runs_end_to_end_and_reports_figures() {
    let dir = tempfile::tempdir().unwrap();
    // From the checkout: the benchmark's server and its tokens use `rules/policy`.
    let out = Command::new(BIN)
        .current_dir(repo())
        .args([
            "bench",
            "ingest",
            "--spans",
            "3000",
            "--batch",
            "500",
            "--concurrency",
            "2",
            "--json",
            "--data",
        ])
        .arg(dir.path().join("bench"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["spans"], 3000);
    assert_eq!(r["requests"], 6);
    assert!(r["spans_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["wal_syncs"].as_u64().unwrap() >= 1);
    let disk = r["disk_bytes_per_span"].as_f64().unwrap();
    assert!(disk > 1.0 && disk < 400.0, "{disk}");
    assert!(r["stages"]["normalize_us"].as_f64().unwrap() > 0.0);
    // Every span is in the table afterwards.
    let rows = sql_offline(
        &dir.path().join("bench/data"),
        "SELECT count(*) AS n FROM spans",
    );
    assert_eq!(rows[0]["n"], 3000);
}

/// The analytics commands end to end: the synthetic reference workload exported over OTLP/HTTP to
/// a real server that loads the shipped rules, then `custos metrics`, `thresholds` and `slo`
/// against the server's API and against the data directory, and the API's errors.
#[test]
fn analytics_commands_against_server_and_data_dir() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Started from the repository root so `rules/prices.yaml` and `rules/slos.yaml` load.
    let Server {
        mut child,
        http,
        api,
        token,
    } = spawn_in(dir.path(), repo);
    // Kills the server if an assertion fails before the orderly SIGTERM at the end.
    let guard = KillOnDrop(child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = authed(&token);
        send_synth(
            &client,
            &http,
            custos_synth::reference::SynthOptions::default(),
        )
        .await;
        let res = client
            .get(format!("{api}/api/metrics?window=soon"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("invalid duration `soon`"),
            "{body}"
        );
        let res = client
            .get(format!("{api}/api/thresholds"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let metrics = client
            .get(format!("{api}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("slo:objective:ratio{sloth_id=\"reference-workflows-run-success\""),
            "{metrics}"
        );
        assert!(metrics.trim_end().ends_with("# EOF"));
    });

    let run = |args: &[&str]| run_as(repo, &token, args);
    let at = "2026-11-03T00:00:00Z";
    let data = dir.path().to_str().unwrap();
    // The same report from the server and from the data directory.
    let (code, served, err) = run(&["metrics", "--server", &api, "--at", at, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, offline, err) = run(&["metrics", "--data", data, "--at", at, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let (served, offline): (Value, Value) = (
        serde_json::from_str(&served).unwrap(),
        serde_json::from_str(&offline).unwrap(),
    );
    // Equal up to the order floating-point partial sums were added in.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }
    assert!(
        same(&served["groups"], &offline["groups"]),
        "{served}\n{offline}"
    );
    let groups = served["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert!(
        groups.iter().all(|g| g["runs"].as_i64().unwrap() > 300
            && g["cost_per_success_usd"].as_f64().unwrap() > 0.0)
    );
    let gpt = served["drift"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == "gpt-4o")
        .unwrap();
    assert_eq!(gpt["status"], "act");
    let (code, table, _) = run(&["metrics", "--data", data, "--at", at, "--by", "version"]);
    assert_eq!(code, Some(0));
    assert!(table.contains("gpt-4o 2024-08-06 prompt v2"), "{table}");
    let (code, csv, _) = run(&[
        "metrics", "--server", &api, "--at", at, "--format", "csv", "--by", "day",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        csv.starts_with("key,runs,") && csv.contains("\n2026-11-02,"),
        "{csv}"
    );
    let (code, _, err) = run(&["metrics", "--data", data, "--by", "colour"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown grouping `colour`"), "{err}");

    let (code, out, err) = run(&[
        "thresholds",
        "--server",
        &api,
        "--workflow",
        "support-triage",
        "--target-error",
        "0.05",
        "--at",
        at,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("recommended threshold"), "{out}");
    let (code, _, err) = run(&[
        "thresholds",
        "--data",
        data,
        "--workflow",
        "nope",
        "--at",
        at,
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("`nope`"), "{err}");

    // SLOs: the shipped rules where there is no data exit 0 with no_data; a rule that must page exits 3.
    let (code, out, err) = run(&[
        "slo",
        "--data",
        data,
        "--at",
        "2020-01-01T00:00:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["slos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "no_data")
    );
    let (code, out, err) = run(&["slo", "--server", &api, "--at", at]);
    assert!(code == Some(0) || code == Some(3), "{err}");
    assert!(
        out.contains("run-success") && out.contains("cost-per-success"),
        "{out}"
    );
    let strict = dir.path().join("strict.yaml");
    std::fs::write(
        &strict,
        "version: custos/v1\nservice: strict\nslos:\n  - name: never-succeed\n    objective: 99.9\n    sli:\n      events:\n        error_query: SELECT count(*) FROM runs WHERE outcome = 'success' AND end_time >= {{.window_start}} AND end_time < {{.window_end}}\n        total_query: SELECT count(*) FROM runs WHERE end_time >= {{.window_start}} AND end_time < {{.window_end}}\n",
    )
    .unwrap();
    let (code, out, err) = run(&[
        "slo",
        "--data",
        data,
        "--rules",
        strict.to_str().unwrap(),
        "--at",
        at,
    ]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("page"), "{out}");
    std::fs::write(
        &strict,
        std::fs::read_to_string(&strict)
            .unwrap()
            .replace("FROM runs WHERE outcome", "FROM runs WHERE outcom"),
    )
    .unwrap();
    let (code, _, err) = run(&["slo", "--data", data, "--rules", strict.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("strict.yaml")
            && err.contains("never-succeed")
            && err.contains("error_query")
            && err.contains("outcom"),
        "{err}"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    std::mem::forget(guard);
}

#[test]
fn gate_policy_and_audit_commands_through_the_binary() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| run_in(repo, args);

    // The decision-latency benchmark runs and reports every path.
    let (code, out, err) = run(&[
        "bench",
        "policy",
        "--decisions",
        "300",
        "--durable",
        "12",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let bench: Value = serde_json::from_str(&out).unwrap();
    for path in ["evaluate_only", "in_process", "recorded", "http"] {
        assert!(bench[path]["p99_us"].as_f64().unwrap() > 0.0, "{bench}");
    }
    assert_eq!(bench["http"]["decisions"], 12);

    // Policies validate and their tests pass; a broken copy is reported with its position.
    let (code, out, err) = run(&["policy", "validate"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("policies valid"), "{out}");
    let (code, out, err) = run(&["policy", "test"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("test result: ok."), "{out}");
    let (code, out, _) = run(&["policy", "test", "--format", "junit"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("<?xml") && out.contains("failures=\"0\""),
        "{out}"
    );
    let broken = work.path().join("policy");
    std::fs::create_dir(&broken).unwrap();
    for f in ["schema.cedarschema", "deploy.cedar", "runtime.cedar"] {
        std::fs::copy(repo.join("rules/policy").join(f), broken.join(f)).unwrap();
    }
    std::fs::write(
        broken.join("oops.cedar"),
        "@id(\"oops\")\npermit (principal, action == Custos::Action::\"deploy\", resource)\nwhen { context.metrics.sample_sise > 3 };\n",
    )
    .unwrap();
    let (code, _, err) = run(&["policy", "validate", "--dir", broken.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("oops.cedar:3:") && err.contains("sample_sise"),
        "{err}"
    );

    // A server with canary traffic: `v3` regressed, `v2` healthy.
    let Server {
        mut child,
        http,
        api,
        token,
    } = spawn_in(dir.path(), repo);
    let guard = KillOnDrop(child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The canary traffic comes from the collector service, which `invoice-posting` trusts; the
    // admin's own spans would be stored but not counted by the gate.
    let collector = token_for(dir.path(), "Custos::Service::\"otel-collector\"");
    rt.block_on(async {
        let client = authed(&collector);
        let synth = custos_synth::reference::SynthOptions {
            runs: 8_000,
            runs_per_request: 500,
            canary: true,
            ..Default::default()
        };
        send_synth(&client, &http, synth).await;
    });
    let change = |name: &str, candidate: &str, json: bool| {
        let path = work.path().join(name);
        let text = if json {
            serde_json::json!({
                "change": "prompt", "workflow": "invoice-posting", "step": "approve",
                "current": "v1", "candidate": candidate,
                "requested_by": "Custos::Service::\"ci\"", "canary": {"last": "48h"}
            })
            .to_string()
        } else {
            format!(
                "change: prompt\nworkflow: invoice-posting\nstep: approve\ncurrent: v1\ncandidate: {candidate}\nrequested_by: 'Custos::Service::\"ci\"'\ncanary:\n  last: 48h\n"
            )
        };
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let at = "2026-11-03T00:00:00Z";
    let data = dir.path().to_str().unwrap();
    let bad = change("v3.yaml", "v3", false);
    let good = change("v2.json", "v2", true);
    // CI asks through the server with its own token (made while the server runs); the admin
    // may not ask as CI.
    let ci = token_for(dir.path(), "Custos::Service::\"ci\"");
    let (code, _, err) = run_as(repo, &token, &["gate", "--change", &bad, "--server", &api]);
    assert_eq!(
        code,
        Some(1),
        "a refused request is an error, not a deny: {err}"
    );
    assert!(err.contains("`change.requested_by`"), "{err}");
    let run = |args: &[&str]| run_as(repo, &ci, args);
    let (code, out, err) = run(&["gate", "--change", &bad, "--server", &api, "--at", at]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("DENY") && out.contains("deploy-override-rate-regressed"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "gate", "--change", &good, "--server", &api, "--at", at, "--format", "json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["decision"]["decision"], "allow");
    // The same decisions from the data directory, while the server runs.
    let (code, out, err) = run(&[
        "gate", "--change", &bad, "--data", data, "--at", at, "--format", "github",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.starts_with("::error file=rules/policy/deploy.cedar,line="),
        "{out}"
    );
    let (code, out, err) = run(&[
        "gate", "--change", &good, "--data", data, "--at", at, "--format", "sarif",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let sarif: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 0);
    // Errors are exit 1, never an allow.
    let broken_change = change("broken.yaml", "v1", false);
    let (code, _, err) = run(&["gate", "--change", &broken_change, "--data", data]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("both `v1`"), "{err}");
    let (code, _, err) = run(&[
        "gate",
        "--change",
        &good,
        "--data",
        data,
        "--policies",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("sample_sise"), "{err}");

    // The audit trail: the policy set, the admin's, the collector's and CI's tokens, then four
    // gate decisions (server and CLI interleaved), the server's asked for by CI.
    let rows = sql_offline(
        dir.path(),
        "SELECT seq, kind, principal, decision FROM audit ORDER BY seq",
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "policy_change",
            "token",
            "token",
            "token",
            "gate",
            "gate",
            "gate",
            "gate"
        ],
        "{rows:?}"
    );
    let decisions: Vec<&str> = rows
        .iter()
        .skip(4)
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["deny", "allow", "deny", "allow"]);
    assert_eq!(rows[4]["principal"], "Custos::Service::\"ci\"");
    let (code, out, err) = run(&["audit", "verify", "--data", data]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("8 record(s), chain intact"), "{out}");

    // The audit report: every format, a manifest with each file's SHA-256.
    let report_dir = work.path().join("report");
    // Through today: the spans are of early November, the audit records of now.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (code, out, err) = run(&[
        "audit",
        "report",
        "--from",
        "2026-11-01",
        "--to",
        &today,
        "--out",
        report_dir.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("manifest.json")).unwrap())
            .unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 12, "{manifest}");
    for f in files {
        let bytes = std::fs::read(report_dir.join(f["file"].as_str().unwrap())).unwrap();
        use sha2::Digest as _;
        assert_eq!(
            f["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes))
        );
    }
    assert_eq!(manifest["audit_log"]["intact"], true);
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    for needle in [
        "Policy decisions by policy and outcome",
        "Deploy gate results",
        "Human oversight",
        "Change log",
        "SLO attainment",
        "Denials and incidents",
        "Integrity check",
        "Retention status",
        "<svg",
        "deploy-override-rate-regressed",
        "allowed (prompt)",
        "DENIED (prompt)",
        "run-success",
    ] {
        assert!(html.contains(needle), "report.html lacks `{needle}`");
    }
    assert!(!html.contains("<script"), "the report must be static");
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("```sql") && md.contains("| reviewer |"), "{md}");
    let gate_csv = std::fs::read_to_string(report_dir.join("gate.csv")).unwrap();
    assert_eq!(gate_csv.lines().count(), 5, "{gate_csv}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["sections"].as_array().unwrap().len(), 9);
    if let Ok(keep) = std::env::var("CUSTOS_KEEP_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for f in files {
            let name = f["file"].as_str().unwrap();
            std::fs::copy(report_dir.join(name), Path::new(&keep).join(name)).unwrap();
        }
    }
    let (code, _, err) = run(&[
        "audit",
        "report",
        "--from",
        "2026-11-05",
        "--to",
        "2026-11-01",
        "--out",
        report_dir.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("must be after"), "{err}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    drop(guard);

    // Tampering: a modified, a deleted and a reordered record are each named.
    let log = dir.path().join("audit/audit.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let write = |l: &[String]| std::fs::write(&log, l.join("\n") + "\n").unwrap();
    let owned = || lines.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut l = owned();
    // Record 6 is the healthy canary's allow.
    l[5] = l[5].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    assert_ne!(l[5], lines[5]);
    write(&l);
    let (code, out, _) = run(&["audit", "verify", "--data", data]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("record seq 6 (line 6) was modified"), "{out}");
    let mut l = owned();
    l.remove(1);
    write(&l);
    let (code, out, _) = run(&["audit", "verify", "--data", data]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("record seq 2 was deleted"), "{out}");
    let mut l = owned();
    l.swap(3, 4);
    write(&l);
    let (code, out, _) = run(&["audit", "verify", "--data", data, "--format", "json"]);
    assert_eq!(code, Some(1), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["finding"]["tamper"], "reordered", "{v}");
    assert_eq!(v["finding"]["seq"], 4, "{v}");
    std::fs::write(&log, &original).unwrap();
    let (code, _, _) = run(&["audit", "verify", "--data", data]);
    assert_eq!(code, Some(0));
}

// ---------------------------------------------------------------------------------------------
// The executor through the binary.

const POSTING: &str = r#"
name: invoice-processing
version: "crash"
input: {invoice_id: string, amount_usd: number, vendor: string}
models:
  m: {provider: local, model: seeded-extractor, version: "1", seed: 3, accuracy: 1.0, confidence_shift: 1.0}
connectors:
  ledger: {kind: ledger}
  mail: {kind: outbox}
steps:
  - {id: extract, kind: model, task: extract, model: m, prompt_version: v1}
  - {id: validate, kind: transform, set: {amount_usd: extract.output.total, vendor: input.vendor}}
  - {id: post, kind: connector, connector: ledger, operation: post, compensate: reverse}
  - {id: notify, kind: connector, connector: mail, operation: send}
  - {id: reverse, kind: connector, connector: ledger, operation: reverse}
"#;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn jsonl(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn kill_9_at_every_point_of_a_side_effect_then_resume_makes_each_effect_once() {
    use std::os::unix::process::ExitStatusExt as _;
    let policies = repo().join("rules/policy");
    for point in [
        "before_intent",
        "after_intent",
        "after_call",
        "after_result",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let wf = dir.path().join("posting.yaml");
        std::fs::write(&wf, POSTING).unwrap();
        let inputs = dir.path().join("in.jsonl");
        let lines: Vec<String> = (0..12)
            .map(|i| {
                format!(
                    r#"{{"invoice_id": "inv-{i}", "amount_usd": {}.5, "vendor": "v{i}"}}"#,
                    100 + i
                )
            })
            .collect();
        std::fs::write(&inputs, lines.join("\n")).unwrap();
        let args = |extra: &[&str]| {
            let mut c = Command::new(BIN);
            c.arg("run")
                .args(extra)
                .arg("--data")
                .arg(&data)
                .arg("--policies")
                .arg(&policies);
            c
        };
        let crashed = args(&[
            wf.to_str().unwrap(),
            "--input",
            inputs.to_str().unwrap(),
            "--concurrency",
            "3",
        ])
        .env("CUSTOS_EXECUTOR_CRASH", format!("{point}:post"))
        .output()
        .unwrap();
        assert_eq!(crashed.status.signal(), Some(9), "{point}: {crashed:?}");
        let ledger = data.join("connectors/ledger.jsonl");
        let before = jsonl(&ledger).len();
        let resumed = args(&["--resume", "--format", "json"]).output().unwrap();
        assert!(resumed.status.success(), "{point}: {resumed:?}");
        let out: Value = serde_json::from_slice(&resumed.stdout).unwrap();
        assert!(
            !out["runs"].as_array().unwrap().is_empty(),
            "{point}: nothing resumed"
        );
        for r in out["runs"].as_array().unwrap() {
            assert_eq!(r["outcome"], "success", "{point}: {r}");
        }
        // The same command again starts the inputs that never started and re-reports the rest.
        let again = args(&[
            wf.to_str().unwrap(),
            "--input",
            inputs.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
        assert!(again.status.success(), "{point}: {again:?}");
        let out: Value = serde_json::from_slice(&again.stdout).unwrap();
        let runs = out["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 12);
        assert!(
            runs.iter().all(|r| r["outcome"] == "success"),
            "{point}: {out}"
        );
        assert!(out["existing"].as_u64().unwrap() >= 1);
        let ledger = jsonl(&ledger);
        let keys: HashSet<&str> = ledger.iter().map(|e| e["key"].as_str().unwrap()).collect();
        assert_eq!(
            ledger.len(),
            12,
            "{point}: one posting per run ({before} before resume)"
        );
        assert_eq!(keys.len(), 12);
        for r in runs {
            assert!(keys.contains(format!("{}/post", r["run_id"].as_str().unwrap()).as_str()));
        }
        let mail = jsonl(&data.join("connectors/mail.jsonl"));
        assert_eq!(mail.len(), 12, "{point}");
    }
}

#[test]
fn executor_spans_arrive_through_the_collector_as_runs_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(&dir.path().join("server"));
    let _guard = KillOnDrop(server.child.id());
    let inputs = dir.path().join("emails.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"email_id": "e{i}", "subject": "order {i}", "body": "late", "expected": {{"label": "urgent"}}}}"#))
        .collect();
    std::fs::write(&inputs, lines.join("\n")).unwrap();
    let otlp = format!(
        "http://{}",
        server
            .http
            .trim_start_matches("http://")
            .trim_end_matches("/v1/traces")
    );
    // The exporter is the stock OpenTelemetry SDK's, given its token only the standard way.
    let ingest = token_for(
        &dir.path().join("server"),
        "Custos::Service::\"otel-collector\"",
    );
    let out = Command::new(BIN)
        .current_dir(repo())
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("authorization=Bearer%20{ingest}"),
        )
        .args([
            "run",
            "fixtures/workflows/support-triage.yaml",
            "--input",
            inputs.to_str().unwrap(),
            "--data",
            dir.path().join("exec").to_str().unwrap(),
            "--otlp",
            &otlp,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let (code, out, err) = (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, Some(0), "{err}");
    let out: Value = serde_json::from_str(&out).unwrap();
    let finished = out["outcomes"]["success"].as_u64().unwrap();
    let waiting = out["outcomes"]["waiting"].as_u64().unwrap_or(0);
    assert_eq!(finished + waiting, 40, "{out}");
    let sql = |q: &str| -> Vec<Value> {
        let (code, out, err) = run_as(
            &repo(),
            &server.token,
            &["sql", "--server", &server.api, "--format", "json", q],
        );
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let runs = sql(
        "SELECT outcome, count(*) AS n, sum(steps) AS steps FROM runs \
                    WHERE workflow = 'support-triage' GROUP BY outcome ORDER BY outcome",
    );
    let n = |rows: &[Value], outcome: &str| {
        rows.iter()
            .find(|r| r["outcome"] == outcome)
            .map(|r| r["n"].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(n(&runs, "success"), finished, "{runs:?}");
    assert_eq!(n(&runs, "in_progress"), waiting, "{runs:?}");
    let d = sql(
        "SELECT count(*) AS n, count(*) FILTER (WHERE confidence >= 0.9) AS confident, \
                 min(prompt_version) AS p, min(model_version) AS v, min(model) AS m \
                 FROM decisions WHERE workflow = 'support-triage' AND step = 'classify'",
    );
    assert_eq!(d[0]["n"], finished);
    assert_eq!(d[0]["confident"], finished);
    assert_eq!(d[0]["p"], "v1");
    assert_eq!(d[0]["v"], "1");
    assert_eq!(d[0]["m"], "seeded-classifier");
    let costs = sql(
        "SELECT count(*) AS n FROM runs WHERE workflow = 'support-triage' \
                     AND outcome = 'success' AND cost_usd > 0 AND duration_ms >= 0",
    );
    assert_eq!(costs[0]["n"], finished);
}

#[test]
fn the_server_runs_workflows_and_people_review_through_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped policies, with ben an operator too: someone who may start a run and review.
    let policies = policies_with(dir.path(), "ben", "operators");
    let data = dir.path().join("data");
    let server = spawn_with(
        &data,
        &repo(),
        &[
            "--workflows",
            "fixtures/workflows",
            "--policies",
            policies.to_str().unwrap(),
        ],
    );
    let token = |who: &str| {
        let (code, out, err) = run_in(
            &repo(),
            &[
                "token",
                "create",
                "--data",
                data.to_str().unwrap(),
                "--policies",
                policies.to_str().unwrap(),
                "--principal",
                &format!("Custos::User::\"{who}\""),
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        out.lines().last().unwrap().to_string()
    };
    let (omar, ana, ben) = (token("omar"), token("ana"), token("ben"));
    let _guard = KillOnDrop(server.child.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = authed(&server.token);
    let post = |path: &str, body: Value| {
        rt.block_on(async {
            let r = client
                .post(format!("{}{path}", server.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let mut ids = Vec::new();
    for i in 0..24 {
        let (code, v) = post(
            "/api/runs",
            serde_json::json!({"workflow": "support-triage",
            "input": {"email_id": format!("e{i}"), "subject": format!("order {i}"), "body": "late",
                      "expected": {"label": "urgent"}},
            "idempotency_key": format!("evt-{i}")}),
        );
        assert_eq!(code, 202, "{v}");
        ids.push(v["run_id"].as_str().unwrap().to_string());
    }
    let (code, v) = post(
        "/api/runs",
        serde_json::json!({"workflow": "support-triage",
        "input": {"email_id": "e0", "subject": "order 0", "body": "late"}, "idempotency_key": "evt-0"}),
    );
    assert_eq!(
        (code, v["run_id"].as_str().unwrap()),
        (200, ids[0].as_str()),
        "{v}"
    );
    // `custos run --server` posts each input line to the same endpoint.
    let lines = dir.path().join("more.jsonl");
    std::fs::write(
        &lines,
        "{\"email_id\": \"m1\", \"subject\": \"s\", \"body\": \"b\"}\n",
    )
    .unwrap();
    let (code, out, err) = run_as(
        &repo(),
        &omar,
        &[
            "run",
            "fixtures/workflows/support-triage.yaml",
            "--input",
            lines.to_str().unwrap(),
            "--server",
            &server.api,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let started: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(started[0]["status"], "started", "{out}");
    // Starting as someone else is refused, naming the field; a reviewer may not start runs.
    let (code, v) = post(
        "/api/runs",
        serde_json::json!({"workflow": "support-triage", "input": {}, "started_by": "omar"}),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`started_by`"), "{v}");
    let (code, _, err) = run_as(
        &repo(),
        &ana,
        &[
            "run",
            "fixtures/workflows/support-triage.yaml",
            "--input",
            lines.to_str().unwrap(),
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("may not `start_run`"), "{err}");
    let (code, v) = post(
        "/api/runs",
        serde_json::json!({"workflow": "payroll", "input": {}}),
    );
    assert_eq!(code, 404);
    assert!(
        v["error"].as_str().unwrap().contains("support-triage"),
        "{v}"
    );
    for (path, says) in [
        ("/api/runs/run-nope", "no run `run-nope`"),
        (
            "/api/reviews/run-nope-review",
            "no review task `run-nope-review`",
        ),
    ] {
        let (code, v) = rt.block_on(async {
            let r = client
                .get(format!("{}{path}", server.api))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
        assert_eq!((code, v["error"].as_str()), (404, Some(says)), "{path}");
    }
    let (code, v) = post(
        "/api/runs",
        serde_json::json!({"workflow": "support-triage", "input": {"email_id": 1}}),
    );
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("`subject`"), "{v}");

    // Every run finishes or waits for a person.
    let state = |id: &str| -> Value {
        rt.block_on(async {
            client
                .get(format!("{}/api/runs/{id}", server.api))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting = Vec::new();
    for id in &ids {
        loop {
            let r = state(id);
            if r["status"] == "finished" || r["status"] == "waiting" {
                if r["status"] == "waiting" {
                    waiting.push(r);
                }
                break;
            }
            assert!(Instant::now() < deadline, "run {id} stuck: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(waiting.len() >= 2, "{waiting:?}");
    let list = |who: &str| -> Vec<Value> {
        let (code, out, err) = run_as(
            &repo(),
            who,
            &[
                "review",
                "list",
                "--server",
                &server.api,
                "--format",
                "json",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    // The admin sees every queue; ben the support queue; ana (accounts payable) none of these.
    assert_eq!(list(&server.token).len(), waiting.len());
    assert_eq!(list(&ben).len(), waiting.len());
    assert_eq!(list(&ana).len(), 0);
    let (_, text, _) = run_as(&repo(), &ben, &["review", "list", "--server", &server.api]);
    assert!(
        text.contains("support-team") && text.contains("CONFIDENCE"),
        "{text}"
    );
    let first = waiting[0]["review"].as_str().unwrap();
    let second = waiting[1]["review"].as_str().unwrap();
    // ana is not in the support team: denied (exit 2) and recorded.
    let (code, _, err) = run_as(
        &repo(),
        &ana,
        &[
            "review",
            "approve",
            first,
            "--reason",
            "fine",
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("denied"), "{err}");
    // Nobody approves under another's name: the body may not name someone else.
    let r = rt.block_on(async {
        authed(&ben)
            .post(format!("{}/api/reviews/{first}/approve", server.api))
            .json(&serde_json::json!({"reviewer": "ana", "reason": "as ana"}))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status(), 400);
    let v: Value = rt.block_on(r.json()).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("`reviewer` = `ana`"),
        "{v}"
    );
    let (code, out, err) = run_as(
        &repo(),
        &ben,
        &[
            "review",
            "approve",
            first,
            "--reason",
            "right call",
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approved"), "{out}");
    let (code, _, err) = run_as(
        &repo(),
        &ben,
        &[
            "review",
            "reject",
            second,
            "--reason",
            "not urgent",
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run_as(
        &repo(),
        &ben,
        &[
            "review",
            "reject",
            second,
            "--reason",
            "again",
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("409"), "{err}");
    let outcome = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = state(id);
            if r["status"] == "finished" {
                return r["outcome"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "{r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(outcome(waiting[0]["run_id"].as_str().unwrap()), "success");
    assert_eq!(outcome(waiting[1]["run_id"].as_str().unwrap()), "escalated");

    // Four eyes with real identities: ben starts a run that needs review (the same input as
    // one that waited), and may not review it himself.
    let (code, v) = rt.block_on(async {
        let r = authed(&ben)
            .post(format!("{}/api/runs", server.api))
            .json(&serde_json::json!({"workflow": "support-triage",
                "input": waiting[0]["input"], "idempotency_key": "ben-1"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    assert_eq!(code, 202, "{v}");
    let own = v["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let review = loop {
        let r = state(&own);
        if r["status"] == "waiting" {
            assert_eq!(r["started_by"], "Custos::User::\"ben\"", "{r}");
            break r["review"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, _, err) = run_as(
        &repo(),
        &ben,
        &[
            "review",
            "approve",
            &review,
            "--reason",
            "mine",
            "--server",
            &server.api,
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nobody reviews their own request"), "{err}");

    // The reviews reach analytics on the decision spans (the executor's spans go to this
    // server's own receiver, in batches).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = run_as(
            &repo(),
            &server.token,
            &[
                "sql",
                "--server",
                &server.api,
                "--format",
                "json",
                "SELECT human_override, human_reviewer FROM decisions WHERE human_reviewed ORDER BY human_override",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
        if rows.len() == 2 {
            assert_eq!(rows[0]["human_override"], false);
            assert_eq!(rows[1]["human_override"], true);
            assert_eq!(rows[1]["human_reviewer"], "ben");
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let audit = std::fs::read_to_string(data.join("audit/audit.jsonl")).unwrap();
    let reviews: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "review")
        .collect();
    assert_eq!(reviews.len(), 4);
    assert_eq!(reviews[0]["decision"], "deny");
    assert_eq!(reviews[0]["principal"], "Custos::User::\"ana\"");
    assert_eq!(reviews[3]["decision"], "deny");
}

#[test]
fn demo_and_executor_bench_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (code, out, err) = run_in(
        &repo(),
        &["demo", "--runs", "300", "--data", data.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        "simulated 300 runs",
        "== metrics",
        "support-triage",
        "== SLOs",
        "deploy gate: support-triage prompt v1 -> v2",
        "deploy gate: invoice-processing prompt v1 -> v2",
        "chain intact",
        "custos sql --data",
    ] {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }
    // 300 runs are too few canary decisions for the policies: both gates say so.
    assert!(out.contains("deploy-canary-too-small"), "{out}");
    // A second demo replaces the first; a directory that is not a demo is refused.
    let (code, _, err) = run_in(
        &repo(),
        &["demo", "--runs", "20", "--data", data.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    let other = dir.path().join("mine");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    let (code, _, err) = run_in(
        &repo(),
        &["demo", "--runs", "20", "--data", other.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a demo directory"), "{err}");
    assert!(other.join("keep.txt").exists());

    let (code, out, err) = run_in(
        &repo(),
        &[
            "bench",
            "executor",
            "--runs",
            "40",
            "--concurrency",
            "8",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let figures: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(figures.len(), 2);
    assert_eq!(figures[1]["runs"], 40);
    assert_eq!(figures[1]["steps"], 120);
    assert!(figures[1]["steps_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_server_killed_mid_run_resumes_its_runs_on_start_with_each_email_sent_once() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_env(
        dir.path(),
        &repo(),
        &["--workflows", "fixtures/workflows"],
        &[("CUSTOS_EXECUTOR_CRASH", "after_call:reply")],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = authed(&server.token);
    let mut ids = Vec::new();
    rt.block_on(async {
        for i in 0..30 {
            let body = serde_json::json!({"workflow": "support-triage", "idempotency_key": format!("k{i}"),
                "input": {"email_id": format!("e{i}"), "subject": format!("s{i}"), "body": "b",
                          "expected": {"label": "urgent"}}});
            match client.post(format!("{}/api/runs", server.api)).json(&body).send().await {
                Ok(r) if r.status().as_u16() == 202 => {
                    let v: Value = r.json().await.unwrap();
                    ids.push(v["run_id"].as_str().unwrap().to_string());
                }
                _ => break, // the server is gone
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let status = server.child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the crash point was never reached"
    );
    assert!(!ids.is_empty());
    let mail = dir.path().join("connectors/mail.jsonl");
    let before = jsonl(&mail).len();

    let server = spawn_with(dir.path(), &repo(), &["--workflows", "fixtures/workflows"]);
    let _guard = KillOnDrop(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut finished = 0;
    rt.block_on(async {
        for id in &ids {
            loop {
                let r: Value = client
                    .get(format!("{}/api/runs/{id}", server.api))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if r["status"] == "finished" {
                    assert_eq!(r["outcome"], "success", "{r}");
                    finished += 1;
                    break;
                }
                if r["status"] == "waiting" {
                    break;
                }
                assert!(Instant::now() < deadline, "run {id} never resumed: {r}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mail = jsonl(&mail);
    let keys: HashSet<&str> = mail.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), mail.len(), "an email was sent twice");
    assert_eq!(
        mail.len(),
        finished,
        "one email per finished run ({before} before the restart)"
    );
    assert!(finished >= 1);
}

/// Runs `tmux` with arguments; panics when it cannot start (CI installs it).
fn tmux(args: &[&str]) -> (bool, String) {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed (.ci/run installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn custos_top_in_a_real_terminal_shows_the_server_and_follows_keys() {
    let dir = tempfile::tempdir().unwrap();
    // ben reviews the support queue and, as an operator, watches the dashboard.
    let policies = policies_with(dir.path(), "ben", "operators");
    let data = dir.path().join("data");
    let mut server = spawn_with(
        &data,
        &repo(),
        &[
            "--workflows",
            "fixtures/workflows",
            "--policies",
            policies.to_str().unwrap(),
        ],
    );
    // A failing assertion must not leave the server or the tmux session behind.
    let _server = KillOnDrop(server.child.id());
    let (code, out, err) = run_in(
        &repo(),
        &[
            "token",
            "create",
            "--data",
            data.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--principal",
            "Custos::User::\"ben\"",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let ben = out.lines().last().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = authed(&server.token);
        for i in 0..12 {
            let body = serde_json::json!({"workflow": "support-triage",
                "input": {"email_id": format!("e{i}"), "subject": "s", "body": "b", "expected": {"label": "low"}}});
            client.post(format!("{}/api/runs", server.api)).json(&body).send().await.unwrap();
        }
    });
    let session = format!("custos-top-{}", std::process::id());
    struct EndSession(String);
    impl Drop for EndSession {
        fn drop(&mut self) {
            let _ = tmux(&["kill-session", "-t", &self.0]);
        }
    }
    let _session = EndSession(session.clone());
    let cmd = format!(
        "CUSTOS_TOKEN={ben} {BIN} top --server {} --interval 0.3",
        server.api
    );
    let (ok, _) = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(ok);
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]).1;
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = screen();
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < deadline, "no `{needle}` on screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Esc followed at once by a key reads as Alt+key: after an Esc, wait for what it closes
    // to go before the next key.
    let wait_gone = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while screen().contains(needle) {
            assert!(Instant::now() < deadline, "`{needle}` still on screen");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let s = wait_for("connected");
    assert!(s.contains("[1 Overview]") && s.contains("SLOs"), "{s}");
    wait_for("Pending reviews (");
    tmux(&["send-keys", "-t", &session, "4"]);
    let s = wait_for("[4 Reviews]");
    assert!(s.contains("support-team"), "{s}");
    tmux(&["send-keys", "-t", &session, "?"]);
    wait_for("freeze: hold the data");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    wait_gone("freeze: hold the data");
    let keys = |k: &str| assert!(tmux(&["send-keys", "-t", &session, k]).0);
    let text = |t: &str| assert!(tmux(&["send-keys", "-t", &session, "-l", t]).0);
    // Drill into the first pending review, approve it with a reason, confirm.
    keys("Enter");
    let s = wait_for("reviewer    ben");
    assert!(
        s.contains("support-triage") && s.contains("a approve · x reject"),
        "{s}"
    );
    keys("a");
    wait_for("reason: ");
    text("label checked by hand");
    keys("Enter");
    let s = wait_for("This will be sent and recorded");
    assert!(s.contains("approve_review"), "{s}");
    keys("y");
    let s = wait_for("as `ben`: audit record #");
    let id = s
        .split("approved `")
        .nth(1)
        .and_then(|t| t.split('`').next())
        .unwrap_or_else(|| panic!("no approved task on screen:\n{s}"))
        .to_string();
    let (task, audit) = rt.block_on(async {
        let client = authed(&server.token);
        let task: serde_json::Value = client
            .get(format!("{}/api/reviews/{id}", server.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let audit: serde_json::Value = client
            .post(format!("{}/api/sql", server.api))
            .json(&serde_json::json!({"sql": "SELECT principal, decision FROM audit WHERE kind = 'review'"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (task, audit)
    });
    assert_eq!(task["status"], "approved", "{task}");
    assert_eq!(task["reviewer"], "ben", "{task}");
    assert_eq!(task["reason"], "label checked by hand", "{task}");
    assert_eq!(
        audit,
        serde_json::json!([{"principal": "Custos::User::\"ben\"", "decision": "allow"}])
    );
    // SLOs screen: enter lists the runs that burned the first SLO's budget.
    keys("2");
    wait_for("[2 SLOs]");
    keys("Enter");
    wait_for("Runs that burned SLO run-latency (");
    keys("Escape");
    // Runs screen: enter opens the span waterfall of a finished run.
    keys("3");
    wait_for("Recent runs (");
    keys("/");
    text("success");
    keys("Enter");
    // The runs' spans arrive in the executor's export batches: wait for a finished one.
    wait_for("support-triage     success");
    keys("Enter");
    let s = wait_for("Trace of run");
    assert!(s.contains("timeline") && s.contains("Attributes of"), "{s}");
    keys("Escape");
    wait_for("Recent runs (");
    keys("Escape");
    wait_gone("filter /success");
    // Decisions screen: filtered to the approval made above, enter opens its record.
    keys("5");
    wait_for("[5 Decisions]");
    keys("/");
    text("approve_review");
    keys("Enter");
    wait_for("Policy decisions (1)");
    keys("Enter");
    let s = wait_for("Audit record #");
    assert!(
        s.contains("approve_review") && s.contains("Custos::User::\"ben\""),
        "{s}"
    );
    keys("Escape");
    wait_for("Policy decisions (1)");
    keys("Escape");
    wait_gone("filter /approve_review");
    keys("3");
    // The server goes away: the dashboard says so and keeps its data.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let s = wait_for("LOST");
    assert!(s.contains("support-triage"), "{s}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux(&["has-session", "-t", &session]).0 {
        assert!(Instant::now() < deadline, "`q` did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
