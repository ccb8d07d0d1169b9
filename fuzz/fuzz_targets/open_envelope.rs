//! Opening arbitrary envelopes with a fixed identity never panics.
#![no_main]

use hush_crypto::{IdentityKeyPair, SealedEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let me = IdentityKeyPair::from_seed(&[7; 32]);
    if let Ok(envelope) = SealedEnvelope::try_from(data) {
        let _ = envelope.open(&me);
    }
});
