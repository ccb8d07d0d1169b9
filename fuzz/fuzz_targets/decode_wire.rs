//! Every wire decoder of hush-crypto on arbitrary bytes: none may panic,
//! and whatever decodes must re-encode to something that decodes equal.
#![no_main]

use hush_crypto::{
    Address, PreKeyBundle, PreKeyMessage, RatchetMessage, SealedEnvelope, SenderKeyDistribution,
    SenderKeyMessage,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = PreKeyBundle::try_from(data) {
        assert_eq!(PreKeyBundle::try_from(b.to_bytes().as_slice()).ok(), Some(b.clone()));
        let _ = b.verify();
    }
    if let Ok(m) = PreKeyMessage::try_from(data) {
        assert_eq!(PreKeyMessage::try_from(m.to_bytes().as_slice()).ok(), Some(m));
    }
    if let Ok(m) = RatchetMessage::try_from(data) {
        assert_eq!(RatchetMessage::try_from(m.to_bytes().as_slice()).ok(), Some(m));
    }
    if let Ok(m) = SenderKeyMessage::try_from(data) {
        assert_eq!(SenderKeyMessage::try_from(m.to_bytes().as_slice()).ok(), Some(m));
    }
    if let Ok(d) = SenderKeyDistribution::try_from(data) {
        let again = SenderKeyDistribution::try_from(d.to_bytes().as_slice()).ok();
        assert_eq!(again.map(|a| (a.key_id, a.iteration)), Some((d.key_id, d.iteration)));
    }
    if let Ok(e) = SealedEnvelope::try_from(data) {
        assert_eq!(SealedEnvelope::try_from(e.to_bytes().as_slice()).ok(), Some(e));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = text.parse::<Address>() {
            assert_eq!(a.to_string().parse::<Address>().ok(), Some(a));
        }
    }
});
