//! OTLP/protobuf bodies: the census that counts before decoding, the decoder and the normalizer.
#![no_main]

use custos_collector::census::{self, Limits};
use custos_collector::http::{Encoding, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if census::protobuf(body, &Limits::default()).is_err() {
        return;
    }
    if let Ok(req) = decode_request(body, Encoding::Protobuf) {
        let _ = custos_collector::normalize(&req, Some("fuzz"));
    }
});
