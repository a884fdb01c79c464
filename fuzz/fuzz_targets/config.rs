//! The server's configuration file: parsed and validated, an error at worst.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = toml::from_str::<custos_server::Config>(text) {
        let _ = config.validate();
    }
});
