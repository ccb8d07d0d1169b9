//! Property test: the two-party action harness over many random action
//! sequences (send, deliver in any order, drop, duplicate, replay,
//! corrupt, save/restore). See `hush_crypto::harness`.

use hush_crypto::harness::{Action, Conversation, Party};
use proptest::prelude::*;

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![Just(Party::Alice), Just(Party::Bob)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (party(), any::<u8>()).prop_map(|(from, len)| Action::Send { from, len }),
        4 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(index, bit)| Action::Corrupt { index, bit }),
        1 => any::<usize>().prop_map(Action::Replay),
        1 => party().prop_map(Action::Restore),
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn conversations_keep_their_invariants(
        seed in any::<[u8; 32]>(),
        actions in proptest::collection::vec(action(), 1..300),
    ) {
        let mut conversation = Conversation::new(seed).map_err(|v| TestCaseError::fail(v.0))?;
        for action in &actions {
            conversation.apply(action).map_err(|v| TestCaseError::fail(format!("{action:?}: {}", v.0)))?;
        }
    }
}

/// A long scripted run so every path is taken at least once regardless
/// of what proptest draws.
#[test]
fn scripted_long_run() {
    let mut conversation = Conversation::new([7; 32]).expect("starts");
    let mut script = Vec::new();
    for round in 0..200usize {
        script.push(Action::Send {
            from: Party::Alice,
            len: (round % 50) as u8,
        });
        script.push(Action::Send {
            from: Party::Bob,
            len: 3,
        });
        script.push(Action::Send {
            from: Party::Alice,
            len: 1,
        });
        if round % 7 == 0 {
            script.push(Action::Drop(round));
        }
        script.push(Action::Corrupt {
            index: round,
            bit: round * 13,
        });
        script.push(Action::Deliver(round * 31));
        script.push(Action::Duplicate(round));
        script.push(Action::Replay(round * 3));
        if round % 11 == 0 {
            script.push(Action::Restore(Party::Bob));
            script.push(Action::Restore(Party::Alice));
        }
        script.push(Action::Deliver(0));
    }
    for action in &script {
        conversation
            .apply(action)
            .unwrap_or_else(|v| panic!("{action:?}: {}", v.0));
    }
    assert!(
        conversation.decrypted > 300,
        "only {} decrypted",
        conversation.decrypted
    );
}

#[test]
fn byte_decoded_actions_run() {
    let data: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut conversation = Conversation::new([9; 32]).expect("starts");
    for action in Action::from_bytes(&data) {
        conversation
            .apply(&action)
            .unwrap_or_else(|v| panic!("{action:?}: {}", v.0));
    }
}

/// Found by proptest: a prekey message with a flipped prekey id was
/// accepted by a responder that already had the session.
#[test]
fn regression_corrupted_prekey_id_on_existing_session() {
    let mut conversation = Conversation::new([0; 32]).expect("starts");
    for action in [
        Action::Send {
            from: Party::Alice,
            len: 0,
        },
        Action::Send {
            from: Party::Alice,
            len: 129,
        },
        Action::Deliver(1_049_850_422_013_684_638),
        Action::Corrupt {
            index: 0,
            bit: 2_562_305_065_443_966_213,
        },
    ] {
        conversation
            .apply(&action)
            .unwrap_or_else(|v| panic!("{action:?}: {}", v.0));
    }
}
