//! The synthetic reference workload is deterministic and every span of it is valid OTLP for the
//! collector.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_synth::reference::{SynthOptions, generate};

#[test]
fn deterministic_and_valid() {
    let a: Vec<_> = generate(SynthOptions::default()).collect();
    let b: Vec<_> = generate(SynthOptions::default()).collect();
    assert_eq!(a, b);
    let mut spans = 0;
    for req in &a {
        let n = custos_collector::normalize(req, None).unwrap();
        assert_eq!(n.rejected, 0, "{:?}", n.message);
        spans += n.batch.unwrap().num_rows();
    }
    assert!(spans > 10_000, "{spans}");
}
