//! Every parser the fuzzers drive (fuzz/fuzz_targets, one test per target), driven briefly on
//! each CI run by proptest with the fuzz corpus damaged the way a fuzzer damages it: an error
//! at worst, never a panic (issue 16). The coverage-guided runs of minutes are
//! `scripts/fuzz.sh` (docs/fuzzing.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use custos_collector::census::{self, Limits};
use custos_collector::http::{Encoding, decode_request};
use custos_synth::mutate::{Edit, apply, corpus};
use proptest::prelude::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus");
const SCHEMA: &str = include_str!("../../../rules/policy/schema.cedarschema");

/// The corpus of `target`, which must not be empty (a harness that reads nothing tests nothing).
fn seeds(target: &str) -> &'static [Vec<u8>] {
    static ALL: OnceLock<std::collections::BTreeMap<String, Vec<Vec<u8>>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        [
            "otlp_protobuf",
            "otlp_json",
            "wal",
            "config",
            "rules",
            "policy",
            "workflow",
            "change_file",
            "sql",
        ]
        .iter()
        .map(|t| (t.to_string(), corpus(&Path::new(CORPUS).join(t))))
        .collect()
    });
    let found = &all[target];
    assert!(!found.is_empty(), "no corpus in fuzz/corpus/{target}");
    found
}

/// Seed `pick` (modulo the corpus' size) of `target` with `edits` applied.
fn damaged(target: &str, pick: usize, edits: &[Edit]) -> Vec<u8> {
    let s = seeds(target);
    apply(&s[pick % s.len()], edits)
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

/// The fuzz target's steps for one OTLP body: count, decode, normalize.
fn otlp(body: &[u8], encoding: Encoding) {
    let counted = match encoding {
        Encoding::Protobuf => census::protobuf(body, &Limits::default()),
        Encoding::Json => census::json(body, &Limits::default()),
    };
    if counted.is_ok()
        && let Ok(req) = decode_request(body, encoding)
    {
        let _ = custos_collector::normalize(&req, Some("proptest"));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A directory of its own for each test (proptest runs the tests of this file in parallel).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn otlp_protobuf(pick in any::<usize>(), e in edits()) {
        otlp(&damaged("otlp_protobuf", pick, &e), Encoding::Protobuf);
    }

    #[test]
    fn otlp_json(pick in any::<usize>(), e in edits()) {
        otlp(&damaged("otlp_json", pick, &e), Encoding::Json);
    }

    /// A damaged segment is checked, read and opened; a check that finds it clean means the
    /// writer opens it and replays what the reader reads.
    #[test]
    fn wal(pick in any::<usize>(), e in edits()) {
        use custos_store::wal::{self, Wal, WalOptions};
        let dir = scratch_dir("wal");
        for old in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(old.unwrap().path()).unwrap();
        }
        std::fs::write(dir.join(format!("{:020}.wal", 1)), damaged("wal", pick, &e)).unwrap();
        let report = wal::salvage::check(&dir);
        let read = wal::read_after(&dir, 0);
        let options = WalOptions { segment_bytes: 1 << 20, sync: false };
        let opened = Wal::open(&dir, 0, options);
        if let (Ok(report), Ok(read)) = (report, read)
            && report.is_clean()
        {
            let (_, replayed) = opened.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(replayed.len(), read.len());
        }
    }

    #[test]
    fn config(pick in any::<usize>(), e in edits()) {
        if let Ok(config) = toml::from_str::<custos_server::Config>(&text(&damaged("config", pick, &e))) {
            let _ = config.validate();
        }
    }

    /// The first byte of a rules seed picks the file kind, as in the fuzz target.
    #[test]
    fn rules(pick in any::<usize>(), e in edits()) {
        let data = damaged("rules", pick, &e);
        let Some((which, body)) = data.split_first() else { return Ok(()) };
        let body = text(body);
        let key = custos_redact::PseudonymKey::ephemeral().unwrap();
        match which % 3 {
            0 => drop(custos_redact::Redactor::parse(&body, "fuzz.yaml", key)),
            1 => drop(custos_analytics::slo::SloSet::parse(&body, "fuzz.yaml")),
            _ => drop(custos_analytics::PriceTable::parse(&body, "fuzz.yaml")),
        }
    }

    #[test]
    fn policy(pick in any::<usize>(), e in edits()) {
        let dir = scratch_dir("policy");
        std::fs::write(dir.join("schema.cedarschema"), SCHEMA).unwrap();
        std::fs::write(dir.join("fuzz.cedar"), damaged("policy", pick, &e)).unwrap();
        if let Ok(policies) = custos_policy::load(&dir) {
            let _ = custos_policy::engine::Engine::new(policies, None);
        }
    }

    #[test]
    fn workflow(pick in any::<usize>(), e in edits()) {
        let _ = custos_executor::workflow::parse(&text(&damaged("workflow", pick, &e)), "fuzz.yaml");
    }

    #[test]
    fn change_file(pick in any::<usize>(), e in edits()) {
        let _ = custos_governance::gate::ChangeFile::parse(&text(&damaged("change_file", pick, &e)), "fuzz.yaml");
    }
}

/// The analytics engine of the SQL harness, on an empty store, opened once.
fn engine() -> &'static (tokio::runtime::Runtime, custos_analytics::Analytics) {
    static ENGINE: OnceLock<(tokio::runtime::Runtime, custos_analytics::Analytics)> =
        OnceLock::new();
    ENGINE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = scratch_dir("sql");
        let analytics = rt.block_on(async {
            let store = custos_store::Store::open(custos_store::StoreOptions::new(dir))
                .await
                .unwrap();
            custos_analytics::Analytics::new(store, custos_analytics::QueryOptions::default())
                .await
                .unwrap()
        });
        (rt, analytics)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Parsed, checked read-only and planned (not run), as in the fuzz target.
    #[test]
    fn sql(pick in any::<usize>(), e in edits()) {
        let (rt, analytics) = engine();
        let _ = rt.block_on(analytics.prepare(&text(&damaged("sql", pick, &e))));
    }
}
