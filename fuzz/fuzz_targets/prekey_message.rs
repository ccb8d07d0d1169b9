//! Fuzz target `prekey_message`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("prekey_message", data) {
        panic!("{}", violation.0);
    }
});
