//! Every state-blob decoder on arbitrary bytes: none may panic, and what
//! restores must serialize to bytes that restore to the same state.
#![no_main]

use hush_crypto::{IdentityKeyPair, OneTimePreKeyPair, SenderKeyRecord, Session, SignedPreKeyPair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Session::from_bytes(data) {
        let bytes = s.to_bytes();
        let again = Session::from_bytes(&bytes).expect("re-restores");
        assert_eq!(again.to_bytes().as_slice(), bytes.as_slice());
    }
    if let Ok(r) = SenderKeyRecord::from_bytes(data) {
        let bytes = r.to_bytes();
        let again = SenderKeyRecord::from_bytes(&bytes).expect("re-restores");
        assert_eq!(again.to_bytes().as_slice(), bytes.as_slice());
    }
    let _ = IdentityKeyPair::from_bytes(data);
    let _ = SignedPreKeyPair::from_bytes(data);
    let _ = OneTimePreKeyPair::from_bytes(data);
});
