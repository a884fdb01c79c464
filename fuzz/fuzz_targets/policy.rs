//! A policy file beside the shipped schema, loaded and strictly validated.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = include_str!("../../rules/policy/schema.cedarschema");

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("schema.cedarschema"), SCHEMA).unwrap();
        d
    })
    .path()
}

fuzz_target!(|text: &str| {
    std::fs::write(dir().join("fuzz.cedar"), text).unwrap();
    if let Ok(policies) = custos_policy::load(dir()) {
        let _ = custos_policy::engine::Engine::new(policies, None);
    }
});
