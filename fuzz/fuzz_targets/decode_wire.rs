//! Every wire and state decoder of hush-crypto on arbitrary bytes (see
//! `hush_crypto::harness::check_decoders`): none may panic, and whatever
//! decodes must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_crypto::harness::check_decoders(data) {
        panic!("{}", violation.0);
    }
});
