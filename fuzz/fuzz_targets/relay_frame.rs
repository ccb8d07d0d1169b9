//! Fuzz target `relay_frame`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("relay_frame", data) {
        panic!("{}", violation.0);
    }
});
