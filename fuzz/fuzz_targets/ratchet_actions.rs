//! The two-party action harness (hush_crypto::harness) driven by
//! arbitrary bytes: exactly-once decryption, and untouched state after
//! every rejected message.
#![no_main]

use hush_crypto::harness::{Action, Conversation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, rest)) = data.split_first_chunk::<32>() else {
        return;
    };
    let Ok(mut conversation) = Conversation::new(*seed) else {
        return;
    };
    for action in Action::from_bytes(&rest[..rest.len().min(3 * 400)]) {
        if let Err(violation) = conversation.apply(&action) {
            panic!("{action:?}: {}", violation.0);
        }
    }
});
