use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray, new_null_array};
use arrow::record_batch::RecordBatch;
use custos_schema::{col, spans_schema};

use super::*;

/// One span: trace number, span number, parent span number, run id (`None`: carried none).
type S = (u32, u32, Option<u32>, Option<&'static str>);

fn trace(t: u32) -> String {
    format!("{t:032x}")
}

fn batch(spans: &[S]) -> RecordBatch {
    let schema = spans_schema();
    let n = spans.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                col::TRACE_ID => Arc::new(StringArray::from_iter_values(
                    spans.iter().map(|s| trace(s.0)),
                )),
                col::SPAN_ID => Arc::new(StringArray::from_iter_values(
                    spans.iter().map(|s| format!("{:016x}", s.1)),
                )),
                col::PARENT_SPAN_ID => Arc::new(StringArray::from_iter(
                    spans.iter().map(|s| s.2.map(|p| format!("{p:016x}"))),
                )),
                col::RUN_ID => Arc::new(StringArray::from_iter_values(
                    spans
                        .iter()
                        .map(|s| s.3.map(str::to_string).unwrap_or_else(|| trace(s.0))),
                )),
                col::START_TIME_UNIX_NANO => Arc::new(Int64Array::from(vec![1i64; n])),
                col::DATE => Arc::new(StringArray::from(vec!["2026-12-01"; n])),
                _ => new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn runs_of(m: &Memtable) -> Vec<String> {
    m.batches_after(0)
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(col::RUN_ID).unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn children_take_the_run_id_of_their_root_in_the_same_batch() {
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    ids.push(
        &mut m,
        1,
        batch(&[
            (1, 2, Some(1), None),
            (1, 3, Some(1), None),
            (1, 1, None, Some("run-a")),
        ]),
        None,
    );
    assert_eq!(runs_of(&m), ["run-a", "run-a", "run-a"]);
    assert_eq!(ids.open_traces(), 0);
    assert!(ids.aliases().is_none());
}

#[test]
fn a_root_arriving_later_resolves_the_memtable_entries_of_its_children() {
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    ids.push(
        &mut m,
        1,
        batch(&[(1, 2, Some(1), None), (9, 2, Some(1), None)]),
        None,
    );
    ids.push(&mut m, 2, batch(&[(7, 1, None, Some("other"))]), None);
    assert_eq!(ids.open_traces(), 2);
    ids.push(&mut m, 3, batch(&[(1, 1, None, Some("run-a"))]), None);
    // Trace 9 has no root yet and keeps its trace id; trace 1's child took its root's run.
    assert_eq!(runs_of(&m), ["run-a", &trace(9), "other", "run-a"]);
    assert_eq!(ids.open_traces(), 1);
    // Nothing was flushed, so the table needs no alias.
    assert!(ids.aliases().is_none());
}

#[test]
fn children_with_their_own_run_id_keep_it_and_late_children_join_their_root() {
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    ids.push(
        &mut m,
        1,
        batch(&[(1, 2, Some(1), Some("run-b")), (1, 1, None, Some("run-a"))]),
        None,
    );
    ids.push(&mut m, 2, batch(&[(1, 3, Some(1), None)]), None);
    assert_eq!(runs_of(&m), ["run-b", "run-a", "run-a"]);
}

#[test]
fn a_root_without_a_run_id_closes_its_trace_as_a_run_of_its_own() {
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    ids.push(&mut m, 1, batch(&[(1, 2, Some(1), None)]), None);
    ids.push(&mut m, 2, batch(&[(1, 1, None, None)]), None);
    assert_eq!(runs_of(&m), [trace(1), trace(1)]);
    assert_eq!(ids.open_traces(), 0);
}

#[test]
fn children_flushed_before_their_root_get_an_alias_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    let children = batch(&[(1, 2, Some(1), None), (1, 3, Some(1), None)]);
    ids.push(&mut m, 1, children.clone(), None);
    // The flush writes the state before its commit; a restart then forgets the memtable.
    write(dir.path(), &ids.flushing(&[children]).unwrap().unwrap()).unwrap();
    assert!(
        ids.flushing(&[]).unwrap().is_none(),
        "nothing changed since"
    );
    let mut ids = RunIds::load(dir.path()).unwrap();
    let mut m = Memtable::default();
    assert_eq!(ids.open_traces(), 1);
    ids.push(&mut m, 2, batch(&[(1, 1, None, Some("run-a"))]), None);
    let aliases = ids.aliases().unwrap();
    assert_eq!(aliases.get(&1).map(|d| &*d.run), Some("run-a"));
    let (to_fold, dates) = ids.to_fold();
    assert_eq!(dates.into_iter().collect::<Vec<_>>(), ["2026-12-01"]);
    write(dir.path(), &ids.persisted().unwrap().unwrap()).unwrap();
    let mut again = RunIds::load(dir.path()).unwrap();
    assert_eq!(again.aliases().unwrap().len(), 1);
    assert_eq!(again.open_traces(), 0);
    // Folded: the alias retires, and so does the file's copy.
    again.folded(&to_fold, &["2026-12-01".to_string()].into());
    assert!(again.aliases().is_none());
    write(dir.path(), &again.persisted().unwrap().unwrap()).unwrap();
    assert!(RunIds::load(dir.path()).unwrap().aliases().is_none());
}

#[test]
fn a_damaged_state_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
    let e = RunIds::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("run-ids.json") && e.contains("delete it"), "{e}");
}

#[test]
fn open_traces_are_bounded() {
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    let spans: Vec<S> = (1..=(MAX_OPEN as u32 + 1))
        .map(|t| (t, 2, Some(1), None))
        .collect();
    ids.push(&mut m, 1, batch(&spans), None);
    assert!(ids.open_traces() <= MAX_OPEN);
    assert!(ids.forgotten() > 0);
}

#[test]
fn children_take_the_workflow_of_their_root_when_they_name_none() {
    let mut b = batch(&[
        (1, 2, Some(1), None),
        (1, 3, Some(1), None),
        (1, 1, None, None),
    ]);
    let wf = StringArray::from(vec![None, Some("own"), Some("claims")]);
    let idx = b.schema().index_of(col::WORKFLOW).unwrap();
    let mut columns = b.columns().to_vec();
    columns[idx] = Arc::new(wf);
    b = RecordBatch::try_new(b.schema(), columns).unwrap();
    let (mut ids, mut m) = (RunIds::default(), Memtable::default());
    ids.push(&mut m, 1, b, None);
    let got = &m.batches_after(0)[0];
    let wf = got
        .column_by_name(col::WORKFLOW)
        .unwrap()
        .as_string::<i32>();
    assert_eq!(
        (0..3).map(|i| wf.value(i)).collect::<Vec<_>>(),
        ["claims", "own", "claims"]
    );
    // The run is the trace: the run ids stay.
    assert_eq!(runs_of(&m), [trace(1), trace(1), trace(1)]);
}
