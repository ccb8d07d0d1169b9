//! Fuzz target `group_actions`: see `hush_harness::TARGETS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = hush_harness::check("group_actions", data) {
        panic!("{}", violation.0);
    }
});
