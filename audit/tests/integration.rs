//! The audit log on real files: appends chain, verification names the first modified, deleted,
//! inserted or reordered record, crashes leave nothing acknowledged behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use custos_audit::{AuditLog, Entry, GENESIS, LOG_FILE, Record, Tamper, read_all, verify};
use proptest::prelude::*;

fn entry(i: usize) -> Entry {
    Entry {
        kind: "authorize".into(),
        principal: "Custos::Service::\"executor\"".into(),
        action: "Custos::Action::\"execute\"".into(),
        resource: format!("Custos::Connector::\"erp-{i}\""),
        decision: if i.is_multiple_of(3) { "deny" } else { "allow" }.into(),
        policies: vec!["execute-when-confident".into()],
        advice: vec!["run the step".into()],
        errors: vec![],
        context: serde_json::json!({"confidence": "0.97", "amount_usd": i * 10, "nested": {"b": 1, "a": [1.5, "x"]}}),
        policy_hash: "ab".repeat(32),
    }
}

fn log_with(dir: &Path, n: usize) -> Vec<Record> {
    let log = AuditLog::open(dir).unwrap();
    (0..n).map(|i| log.append(entry(i)).unwrap()).collect()
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(LOG_FILE), text).unwrap();
}

#[test]
fn appended_records_form_a_chain_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let written = log_with(dir.path(), 5);
    assert_eq!(written[0].prev_hash, GENESIS);
    for w in written.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    assert_eq!(read_all(dir.path()).unwrap(), written);
    let v = verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.records, v.last_seq), (5, 5));
    assert_eq!(v.last_hash, written[4].hash);
    // Reopening continues the chain.
    let more = log_with(dir.path(), 2);
    assert_eq!(more[0].seq, 6);
    assert_eq!(more[0].prev_hash, written[4].hash);
    assert!(verify(dir.path()).unwrap().ok());
}

#[test]
fn a_modified_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    l[2] = l[2].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq, f.line), (Tamper::Modified, 3, 3), "{f:?}");
    assert!(f.message.contains("seq 3"), "{}", f.message);
}

#[test]
fn a_modified_record_with_a_recomputed_hash_is_named_by_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    let mut r: Record = serde_json::from_str(&l[3]).unwrap();
    r.principal = "Custos::User::\"mallory\"".into();
    r.hash = r.digest().unwrap();
    l[3] = serde_json::to_string(&r).unwrap();
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq), (Tamper::Modified, 4), "{f:?}");
}

#[test]
fn a_deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    l.remove(3);
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq), (Tamper::Deleted, 4), "{f:?}");
    assert!(f.message.contains("seq 4 was deleted"), "{}", f.message);
}

#[test]
fn records_cut_from_the_end_are_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    l.truncate(4);
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq), (Tamper::Deleted, 5), "{f:?}");
    assert!(f.message.contains("seq 5 to 6"), "{}", f.message);
}

#[test]
fn reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    l.swap(2, 3);
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!(
        (f.tamper, f.seq, f.line),
        (Tamper::Reordered, 3, 3),
        "{f:?}"
    );
}

#[test]
fn an_inserted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    let mut l = lines(dir.path());
    let copy = l[1].clone();
    l.insert(4, copy);
    write_lines(dir.path(), &l);
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq, f.line), (Tamper::Inserted, 2, 5), "{f:?}");
}

#[test]
fn a_partial_last_line_is_reported_then_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 3);
    let path = dir.path().join(LOG_FILE);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":4,\"time\":\"2026-");
    std::fs::write(&path, &text).unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(v.ok() && v.partial_tail, "{v:?}");
    assert_eq!(read_all(dir.path()).unwrap().len(), 3);
    let log = AuditLog::open(dir.path()).unwrap();
    let r = log.append(entry(9)).unwrap();
    assert_eq!(r.seq, 4);
    let v = verify(dir.path()).unwrap();
    assert!(v.ok() && !v.partial_tail, "{v:?}");
}

#[test]
fn two_writers_on_one_directory_extend_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = AuditLog::open(dir.path()).unwrap();
    let b = AuditLog::open(dir.path()).unwrap();
    for i in 0..10usize {
        let log = if i.is_multiple_of(2) { &a } else { &b };
        assert_eq!(log.append(entry(i)).unwrap().seq, i as u64 + 1);
    }
    let v = verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 10);
    assert_eq!(b.last_policy_hash(), Some("ab".repeat(32)));
}

#[test]
fn threads_appending_concurrently_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(AuditLog::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(entry(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 100);
}

#[test]
fn an_empty_or_missing_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(v.ok());
    assert_eq!(v.records, 0);
    assert!(read_all(dir.path()).unwrap().is_empty());
}

#[test]
fn the_head_is_signed_with_the_directorys_key() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 3);
    let public = custos_audit::public_key(dir.path()).expect("the first append makes a key");
    assert_eq!(public.len(), 64, "an ed25519 public key in hex");
    let key = dir.path().join(custos_audit::KEY_FILE);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let head: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("audit.head")).unwrap())
            .unwrap();
    assert_eq!(head["seq"], 3);
    assert_eq!(head["public_key"], public.as_str());
    assert_eq!(head["signature"].as_str().unwrap().len(), 128);
    let v = verify(dir.path()).unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.signed_by.as_deref(), Some(public.as_str()));
    // The key is kept: a second writer signs with it too.
    log_with(dir.path(), 1);
    assert_eq!(custos_audit::public_key(dir.path()), Some(public));
}

#[test]
fn truncation_followed_by_an_append_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    log_with(dir.path(), 6);
    // Cut the last two records, then try to go on as if nothing happened.
    let mut l = lines(dir.path());
    l.truncate(4);
    write_lines(dir.path(), &l);
    let log = AuditLog::open(dir.path()).unwrap();
    let e = log.append(entry(7)).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("ends at record 4") && m.contains("records 5 to 6 were cut"),
        "{m}"
    );
    assert_eq!(
        read_all(dir.path()).unwrap().len(),
        4,
        "nothing was appended"
    );
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq), (Tamper::Deleted, 5), "{f:?}");
}

#[test]
fn a_last_record_replaced_with_a_consistent_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let written = log_with(dir.path(), 6);
    // Record 6 replaced by one that chains correctly: only the signed head still knows.
    let mut forged = written[5].clone();
    forged.decision = "allow".into();
    forged.advice = vec!["nothing to see".into()];
    forged.hash = forged.digest().unwrap();
    let mut l = lines(dir.path());
    l[5] = serde_json::to_string(&forged).unwrap();
    write_lines(dir.path(), &l);
    let e = AuditLog::open(dir.path())
        .unwrap()
        .append(entry(8))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("record 6 is not the one the head names"),
        "{e}"
    );
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!((f.tamper, f.seq), (Tamper::Modified, 6), "{f:?}");
}

#[test]
fn a_replaced_or_unsigned_head_fails_verification_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let written = log_with(dir.path(), 5);
    let head_path = dir.path().join("audit.head");
    // Cut two records and write a head that matches the cut log, keeping the old signature.
    let mut l = lines(dir.path());
    l.truncate(3);
    write_lines(dir.path(), &l);
    let mut head: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&head_path).unwrap()).unwrap();
    head["seq"] = 3.into();
    head["hash"] = written[2].hash.clone().into();
    std::fs::write(&head_path, head.to_string()).unwrap();
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!(f.tamper, Tamper::HeadSignature, "{f:?}");
    assert!(f.message.contains("does not verify"), "{}", f.message);
    assert!(
        AuditLog::open(dir.path())
            .unwrap()
            .append(entry(9))
            .is_err()
    );
    // Or without any signature at all.
    head.as_object_mut().unwrap().remove("signature");
    std::fs::write(&head_path, head.to_string()).unwrap();
    let f = verify(dir.path()).unwrap().finding.unwrap();
    assert_eq!(f.tamper, Tamper::HeadSignature, "{f:?}");
    assert!(f.message.contains("not signed"), "{}", f.message);
}

#[test]
fn a_log_from_before_signing_verifies_and_is_signed_from_its_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let written = log_with(dir.path(), 3);
    // What an older version left: no key, an unsigned head.
    std::fs::remove_file(dir.path().join(custos_audit::KEY_FILE)).unwrap();
    std::fs::remove_file(dir.path().join(custos_audit::PUBLIC_KEY_FILE)).unwrap();
    std::fs::write(
        dir.path().join("audit.head"),
        serde_json::json!({"seq": 3, "hash": written[2].hash}).to_string(),
    )
    .unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(v.ok() && v.signed_by.is_none(), "{v:?}");
    let before = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    let r = AuditLog::open(dir.path())
        .unwrap()
        .append(entry(4))
        .unwrap();
    assert_eq!(r.seq, 4);
    let after = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    assert!(after.starts_with(&before), "nothing stored is rewritten");
    let v = verify(dir.path()).unwrap();
    assert!(v.ok() && v.signed_by.is_some(), "{v:?}");
}

#[test]
fn an_anchor_catches_a_log_rewritten_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let written = log_with(dir.path(), 4);
    let anchor = written[3].hash.clone();
    let v = custos_audit::verify_anchored(dir.path(), Some(&anchor)).unwrap();
    assert!(v.ok(), "{v:?}");
    // Someone with the key rewrites the history from record 3 on: the chain and the head are
    // consistent again, but the published hash is gone.
    let mut l = lines(dir.path());
    l.truncate(2);
    write_lines(dir.path(), &l);
    std::fs::remove_file(dir.path().join("audit.head")).unwrap();
    std::fs::remove_file(dir.path().join(custos_audit::KEY_FILE)).unwrap();
    std::fs::remove_file(dir.path().join(custos_audit::PUBLIC_KEY_FILE)).unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append(entry(40)).unwrap();
    log.append(entry(41)).unwrap();
    assert!(
        verify(dir.path()).unwrap().ok(),
        "consistent without the anchor"
    );
    let f = custos_audit::verify_anchored(dir.path(), Some(&anchor))
        .unwrap()
        .finding
        .unwrap();
    assert_eq!(f.tamper, Tamper::AnchorMissing, "{f:?}");
    assert!(f.message.contains(&anchor), "{}", f.message);
}

#[derive(Debug, Clone)]
enum Op {
    Modify(usize),
    Delete(usize),
    Swap(usize),
    Duplicate(usize, usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any single tampering with an intact log is detected, and never attributed to a record
    /// after the first one touched.
    #[test]
    fn any_single_tampering_is_detected(n in 2usize..12, op_kind in 0u8..4, a in 0usize..100, b in 0usize..100) {
        let dir = tempfile::tempdir().unwrap();
        log_with(dir.path(), n);
        let mut l = lines(dir.path());
        let op = match op_kind {
            0 => Op::Modify(a % n),
            1 => Op::Delete(a % n),
            2 => Op::Swap(a % (n - 1)),
            _ => Op::Duplicate(a % n, b % (n + 1)),
        };
        let first_touched = match &op {
            Op::Modify(i) => {
                l[*i] = l[*i].replace("Connector", "Kennel");
                i + 1
            }
            Op::Delete(i) => {
                l.remove(*i);
                i + 1
            }
            Op::Swap(i) => {
                l.swap(*i, i + 1);
                i + 1
            }
            Op::Duplicate(i, at) => {
                let c = l[*i].clone();
                l.insert(*at, c);
                *at.min(i) + 1
            }
        };
        write_lines(dir.path(), &l);
        let v = verify(dir.path()).unwrap();
        let f = v.finding.clone();
        prop_assert!(f.is_some(), "{op:?} not detected: {v:?}");
        let f = f.unwrap();
        prop_assert!(f.seq as usize <= first_touched + 1, "{op:?}: {f:?}");
    }
}
