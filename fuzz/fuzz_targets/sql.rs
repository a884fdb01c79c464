//! The SQL entry point: any text is parsed, checked read-only and planned against the views of
//! an empty store (not run: a valid query's cost is bounded by the caps, tested elsewhere).
#![no_main]

use std::sync::OnceLock;

use custos_analytics::{Analytics, QueryOptions};
use custos_store::{Store, StoreOptions};
use libfuzzer_sys::fuzz_target;

struct Engine {
    runtime: tokio::runtime::Runtime,
    analytics: Analytics,
    _dir: tempfile::TempDir,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let analytics = runtime.block_on(async {
            let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
            Analytics::new(store, QueryOptions::default()).await.unwrap()
        });
        Engine { runtime, analytics, _dir: dir }
    })
}

fuzz_target!(|sql: &str| {
    let e = engine();
    let _ = e.runtime.block_on(e.analytics.prepare(sql));
});
