//! The rule files: redaction rules, SLOs and prices (the first byte picks which).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn key() -> custos_redact::PseudonymKey {
    static KEY: OnceLock<custos_redact::PseudonymKey> = OnceLock::new();
    KEY.get_or_init(|| custos_redact::PseudonymKey::ephemeral().unwrap())
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((which, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    match which % 3 {
        0 => drop(custos_redact::Redactor::parse(text, "fuzz.yaml", key())),
        1 => drop(custos_analytics::slo::SloSet::parse(text, "fuzz.yaml")),
        _ => drop(custos_analytics::PriceTable::parse(text, "fuzz.yaml")),
    }
});
