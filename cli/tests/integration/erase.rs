//! `custos erase` as a real process: refused on a directory a server holds and done through the
//! server instead; killed with SIGKILL at each point of an erasure, the directory holds the old
//! or the new state, a second run finishes the job, no file keeps the value and the audit chain
//! verifies.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::{BIN, KillOnDrop, authed, run_as, run_in, spawn, sql_offline, walk};

const PERSON: &str = "u-4711";
const OTHER: &str = "u-4712";

/// An OTLP/JSON export of `n` spans about `user` (`user.id`, and the id in free text).
fn spans_about(user: &str, trace: u8, n: u32) -> String {
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": format!("{trace:032x}"),
                "spanId": format!("{:016x}", u64::from(i) + 1),
                "name": "lookup customer",
                "startTimeUnixNano": "1763700000000000000",
                "endTimeUnixNano": "1763700000100000000",
                "attributes": [
                    {"key": "user.id", "value": {"stringValue": user}},
                    {"key": "ticket.note", "value": {"stringValue": format!("call back {user}")}}
                ]
            })
        })
        .collect();
    json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).to_string()
}

fn send(server: &super::Server, body: String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let res = authed(&server.token)
            .post(&server.http)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    });
}

fn count_about(dir: &Path, user: &str) -> u64 {
    let q = format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['ticket.note'] = 'call back {user}'"
    );
    sql_offline(dir, &q)[0]["n"].as_u64().unwrap()
}

/// A file's content as text: Parquet decoded (its pages are compressed), others as bytes.
fn as_text(p: &Path) -> String {
    if p.extension().is_some_and(|x| x == "parquet") {
        let f = std::fs::File::open(p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        return arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
    }
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Files under `dir` holding `needle`, except files named `skip`.
fn files_with(dir: &Path, needle: &str, skip: &str) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| skip.is_empty() || !p.ends_with(skip))
        .filter(|p| as_text(p).contains(needle))
        .map(|p| p.display().to_string())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.ends_with("LOCK") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn stop(server: super::Server, guard: KillOnDrop) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut child = server.child;
    assert!(child.wait().unwrap().success());
    std::mem::forget(guard);
}

#[test]
fn erase_on_a_held_directory_is_refused_and_goes_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    let guard = KillOnDrop(server.child.id());
    send(&server, spans_about(PERSON, 1, 3));
    send(&server, spans_about(OTHER, 2, 2));
    let data = dir.path().to_str().unwrap();
    let (code, _, err) = run_in(
        Path::new("."),
        &["erase", "--data", data, "--person", PERSON],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("held by a running server") && err.contains("--server"),
        "{err}"
    );
    let (code, _, err) = run_in(Path::new("."), &["erase", "--data", data]);
    assert_eq!(code, Some(2), "{err}");
    let (code, out, err) = run_as(
        Path::new("."),
        &server.token,
        &[
            "erase",
            "--server",
            &server.api,
            "--person",
            PERSON,
            "--now",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("erased 3 span(s)"), "{out}");
    assert!(
        out.contains("selection recorded as person = '[PERSON:"),
        "{out}"
    );
    assert!(out.contains("the replaced files are removed\n"), "{out}");
    stop(server, guard);
    assert_eq!(count_about(dir.path(), PERSON), 0);
    assert_eq!(count_about(dir.path(), OTHER), 2);
}

#[test]
fn kill_9_at_every_point_of_an_erasure_leaves_old_or_new_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    let guard = KillOnDrop(server.child.id());
    send(&server, spans_about(PERSON, 1, 4));
    send(&server, spans_about(OTHER, 2, 3));
    stop(server, guard);
    let hex = custos_redact::PseudonymKey::open(dir.path())
        .unwrap()
        .pseudonym(PERSON.as_bytes());
    for (point, erased_by_the_crashed_run) in [
        ("erase_listed", false),
        ("erase_committed", true),
        ("erase_purging", true),
    ] {
        let image = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), image.path());
        let data = image.path().to_str().unwrap();
        assert!(
            !files_with(image.path(), PERSON, "").is_empty(),
            "{point}: nothing to find"
        );
        let out = Command::new(BIN)
            .env("CUSTOS_STORE_CRASH", point)
            .args(["erase", "--data", data, "--person", PERSON, "--now"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "{point}: killed by the signal");
        let expect = if erased_by_the_crashed_run { 0 } else { 4 };
        assert_eq!(count_about(image.path(), PERSON), expect, "{point}");
        assert_eq!(count_about(image.path(), OTHER), 3, "{point}");
        let (code, out, err) = run_in(
            Path::new("."),
            &["erase", "--data", data, "--person", PERSON, "--now"],
        );
        assert_eq!(code, Some(0), "{point}: {err}");
        let spans = if erased_by_the_crashed_run { 0 } else { 4 };
        assert!(
            out.contains(&format!("erased {spans} span(s)")),
            "{point}: {out}"
        );
        assert_eq!(count_about(image.path(), PERSON), 0, "{point}");
        assert_eq!(count_about(image.path(), OTHER), 3, "{point}");
        assert_eq!(
            files_with(image.path(), PERSON, ""),
            Vec::<String>::new(),
            "{point}"
        );
        assert_eq!(
            files_with(image.path(), &hex, "audit.jsonl"),
            Vec::<String>::new(),
            "{point}"
        );
        let (code, out, err) = run_in(Path::new("."), &["audit", "verify", "--data", data]);
        assert_eq!(code, Some(0), "{point}: {out}{err}");
        // An erasure the crash cut after its commit is finished and recorded by the next one.
        let log = std::fs::read_to_string(image.path().join("audit/audit.jsonl")).unwrap();
        let resumed: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["kind"] == "erase" && r["context"]["resumed"] == true)
            .collect();
        let expected = usize::from(erased_by_the_crashed_run);
        assert_eq!(resumed.len(), expected, "{point}: {log}");
        if let Some(r) = resumed.first() {
            assert_eq!(r["context"]["spans"], 4, "{point}: {r}");
            assert!(
                r["context"]["selection"]
                    .as_str()
                    .unwrap()
                    .starts_with("person = '[PERSON:"),
                "{point}: {r}"
            );
        }
    }
}
