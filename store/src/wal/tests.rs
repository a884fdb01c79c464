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

#[test]
fn a_failed_append_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    let p = payloads(4);
    assert_eq!(wal.append(&p[..2]).unwrap(), 1);
    // A full disk: the append writes part of its bytes, then fails.
    wal.fail_next_append(std::io::ErrorKind::StorageFull);
    let err = wal.append(&p[2..3]).unwrap_err();
    assert!(
        err.to_string().contains("cannot write WAL segment"),
        "{err}"
    );
    wal.recover().unwrap();
    // The failed record was never acknowledged: the next one takes its sequence number.
    assert_eq!(wal.append(&p[3..]).unwrap(), 3);
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 0, WalOptions::default()).unwrap();
    let got: Vec<(u64, Vec<u8>)> = replay.into_iter().map(|r| (r.seq, r.payload)).collect();
    assert_eq!(
        got,
        vec![(1, p[0].clone()), (2, p[1].clone()), (3, p[3].clone())]
    );
}

#[test]
fn damage_in_the_middle_of_the_newest_segment_is_refused_then_salvaged() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let (mut wal, _) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    let p = payloads(10);
    for one in &p {
        wal.append(std::slice::from_ref(one)).unwrap();
    }
    let path = wal.active.path.clone();
    drop(wal);
    // Flip a byte inside the fourth record's payload.
    let mut bytes = fs::read(&path).unwrap();
    let at = MAGIC.len() + p[..3].iter().map(|x| HEADER_BYTES + x.len()).sum::<usize>();
    bytes[at + HEADER_BYTES + 2] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let err = Wal::open(&dir, 0, WalOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("damaged at byte {at}"))
            && msg.contains("sequence number 5")
            && msg.contains("custos wal salvage"),
        "{msg}"
    );
    // Refusing changed nothing.
    assert_eq!(fs::read(&path).unwrap(), bytes);

    let report = salvage::check(&dir).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.lost(), 1);
    assert_eq!(report.segments[0].records, 9);
    assert_eq!(report.segments[0].damage[0].lost, Some((4, 4)));

    let done = salvage::salvage(&dir, 0).unwrap();
    assert_eq!(done.kept, 9);
    assert!(done.damaged.join(path.file_name().unwrap()).exists());
    let (wal, replay) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    let want: Vec<Vec<u8>> = p
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, x)| x.clone())
        .collect();
    let got: Vec<Vec<u8>> = replay.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(
        replay.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(wal.next_seq(), 10);
    assert!(salvage::check(&dir).unwrap().is_clean());
}

#[test]
fn a_salvage_interrupted_before_the_swap_is_undone_and_after_it_finished() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let (mut wal, _) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    wal.append(&payloads(3)).unwrap();
    drop(wal);
    // Before the swap: both logs exist; the unfinished one goes, the old one stays.
    fs::create_dir_all(salvage::staging(&dir)).unwrap();
    let (_, replay) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 3);
    assert!(!salvage::staging(&dir).exists());
    // Half way through the swap: only the new log exists; it is put in place.
    fs::rename(&dir, salvage::staging(&dir)).unwrap();
    let (_, replay) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    assert_eq!(replay.len(), 3);
}

#[test]
fn damage_inside_the_newest_group_is_a_torn_write_not_corruption() {
    // One group commit of five records, never followed by another: a power cut may keep its
    // later pages and lose an earlier one. None of it was acknowledged, so it is cut off.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let (mut wal, _) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    let p = payloads(6);
    wal.append(&p[..1]).unwrap();
    wal.append(&p[1..]).unwrap();
    let path = wal.active.path.clone();
    drop(wal);
    let mut bytes = fs::read(&path).unwrap();
    let second = MAGIC.len() + HEADER_BYTES + p[0].len();
    let third = second + HEADER_BYTES + p[1].len();
    bytes[third + HEADER_BYTES] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    let (wal, replay) = Wal::open(&dir, 0, WalOptions::default()).unwrap();
    assert_eq!(replay.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(wal.next_seq(), 3);
}
