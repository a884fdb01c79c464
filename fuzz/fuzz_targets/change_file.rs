//! The deploy gate's change files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = custos_governance::gate::ChangeFile::parse(text, "fuzz.yaml");
});
