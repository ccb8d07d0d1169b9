//! Fuzz target `client_state`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("client_state", data) {
        panic!("{}", violation.0);
    }
});
