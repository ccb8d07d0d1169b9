//! Fuzz target `device_list`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("device_list", data) {
        panic!("{}", violation.0);
    }
});
