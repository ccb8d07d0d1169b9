//! Fuzz target `crypto_state`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("crypto_state", data) {
        panic!("{}", violation.0);
    }
});
