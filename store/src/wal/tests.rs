//! The WAL on real files: format, replay, torn tails, gaps, rotation.
use super::*;
use proptest::prelude::*;

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![i as u8; i * 7 + 1]).collect()
}

#[test]
fn append_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert!(replay.is_empty());
    let p = payloads(5);
    assert_eq!(wal.append(&p[..2]).unwrap(), 1);
    assert_eq!(wal.append(&p[2..]).unwrap(), 3);
    drop(wal);
    let (wal, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 5);
    for (i, r) in replay.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.payload, p[i]);
    }
    assert_eq!(wal.next_seq(), 6);
    assert_eq!(read_after(dir.path(), 3).unwrap().len(), 2);
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    wal.append(&payloads(3)).unwrap();
    let path = wal.active.path.clone();
    drop(wal);
    // Tear the last record in half.
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    assert_eq!(read_after(dir.path(), 0).unwrap().len(), 2);
    let (mut wal, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 2);
    assert_eq!(wal.append(&[b"again"]).unwrap(), 3);
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert_eq!(replay.last().unwrap().payload, b"again");
}

#[test]
fn flipped_bit_in_tail_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    wal.append(&payloads(3)).unwrap();
    let path = wal.active.path.clone();
    drop(wal);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let (_, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 2);
}

#[test]
fn corruption_in_an_old_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 64,
        sync: false,
    };
    let (mut wal, _) = Wal::open(dir.path(), 0, opts.clone()).unwrap();
    for p in payloads(4) {
        wal.append(&[p]).unwrap();
    }
    let first = wal.closed[0].0.path.clone();
    drop(wal);
    let mut bytes = fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&first, bytes).unwrap();
    let err = Wal::open(dir.path(), 0, opts).unwrap_err();
    assert!(err.to_string().contains("not the newest segment"), "{err}");
}

#[test]
fn a_missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 64,
        sync: false,
    };
    let (mut wal, _) = Wal::open(dir.path(), 0, opts.clone()).unwrap();
    for p in payloads(6) {
        wal.append(&[p]).unwrap();
    }
    let middle = wal.closed[1].0.path.clone();
    drop(wal);
    fs::remove_file(middle).unwrap();
    let err = Wal::open(dir.path(), 0, opts).unwrap_err().to_string();
    assert!(err.contains("a segment is missing"), "{err}");
    let err = read_after(dir.path(), 0).unwrap_err().to_string();
    assert!(err.contains("a segment is missing"), "{err}");
}

#[test]
fn an_empty_segment_file_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(format!("{:020}.wal", 1)), b"").unwrap();
    let (mut wal, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert!(replay.is_empty());
    wal.append(&[b"a"]).unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 1);
}

#[test]
fn remove_through_deletes_flushed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 64,
        sync: false,
    };
    let (mut wal, _) = Wal::open(dir.path(), 0, opts.clone()).unwrap();
    for p in payloads(6) {
        wal.append(&[p]).unwrap();
    }
    wal.remove_through(3).unwrap();
    drop(wal);
    let (wal, replay) = Wal::open(dir.path(), 3, opts.clone()).unwrap();
    assert_eq!(
        replay.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(wal.next_seq(), 7);
    drop(wal);
    // Everything flushed: all segments but a fresh empty one go, numbering continues.
    let (mut wal, replay) = Wal::open(dir.path(), 6, opts.clone()).unwrap();
    assert!(replay.is_empty());
    assert_eq!(wal.append(&[b"x"]).unwrap(), 7);
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
}

#[test]
fn numbering_continues_after_the_watermark_when_the_log_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 41, WalOptions::default()).unwrap();
    assert_eq!(wal.append(&[b"x"]).unwrap(), 42);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Whatever prefix of the log survives a crash, replay returns exactly the records that were
    /// fully written, in order, and nothing else.
    #[test]
    fn any_truncation_replays_a_prefix(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20),
        cut in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { segment_bytes: 1 << 20, sync: false };
        let (mut wal, _) = Wal::open(dir.path(), 0, opts.clone()).unwrap();
        let mut ends = Vec::new();
        for r in &records {
            wal.append(&[r]).unwrap();
            ends.push(wal.active_bytes);
        }
        let path = wal.active.path.clone();
        drop(wal);
        let len = fs::metadata(&path).unwrap().len();
        let keep = MAGIC.len() as u64 + ((len - MAGIC.len() as u64) as f64 * cut) as u64;
        OpenOptions::new().write(true).open(&path).unwrap().set_len(keep).unwrap();
        let survivors = ends.iter().filter(|e| **e <= keep).count();
        let (_, replay) = Wal::open(dir.path(), 0, opts).unwrap();
        prop_assert_eq!(replay.len(), survivors);
        for (i, r) in replay.iter().enumerate() {
            prop_assert_eq!(&r.payload, &records[i]);
            prop_assert_eq!(r.seq, i as u64 + 1);
        }
    }
}
