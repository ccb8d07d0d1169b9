//! Fuzz target `sealed_envelope`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("sealed_envelope", data) {
        panic!("{}", violation.0);
    }
});
