//! Workflow definitions for the reference executor.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = custos_executor::workflow::parse(text, "fuzz.yaml");
});
