// Test code: a failed setup step should abort the test.
#![allow(clippy::expect_used, clippy::panic)]

//! Property test: the sender-key group harness (three members; send,
//! deliver in any order, drop, duplicate, replay, misroute, corrupt,
//! save/restore, rotate) over many random action sequences. See
//! `hush_crypto::harness::Group`.

use hush_crypto::harness::{Group, GroupAction};
use proptest::prelude::*;

proptest! {
    // 16 cases by default (each signs and verifies hundreds of messages;
    // the fuzz pass runs many more); PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    #[test]
    fn groups_keep_their_invariants(
        seed in any::<[u8; 32]>(),
        bytes in proptest::collection::vec(any::<u8>(), 3..900),
    ) {
        let mut group = Group::new(seed).map_err(|v| TestCaseError::fail(v.0))?;
        for action in GroupAction::from_bytes(&bytes) {
            group.apply(&action).map_err(|v| TestCaseError::fail(format!("{action:?}: {}", v.0)))?;
        }
    }
}

/// A scripted run through every kind of action, including more
/// rotations than a record keeps chains, so late messages of forgotten
/// chains are exercised.
#[test]
fn scripted_run_with_many_rotations() {
    let mut group = Group::new([5; 32]).expect("starts");
    let mut script = Vec::new();
    for round in 0..60usize {
        script.push(GroupAction::Send {
            from: round % 3,
            len: (round % 40) as u8,
        });
        script.push(GroupAction::Send { from: 1, len: 2 });
        script.push(GroupAction::Deliver(round * 7));
        script.push(GroupAction::Duplicate(round));
        script.push(GroupAction::Replay(round * 3));
        script.push(GroupAction::Corrupt {
            index: round,
            bit: round * 13,
        });
        if round % 4 == 0 {
            script.push(GroupAction::Rotate(round % 3));
        }
        if round % 9 == 0 {
            script.push(GroupAction::Restore(round % 3));
            script.push(GroupAction::Drop(round));
        }
    }
    for _ in 0..400 {
        script.push(GroupAction::Deliver(5));
    }
    for action in &script {
        group
            .apply(action)
            .unwrap_or_else(|v| panic!("{action:?}: {}", v.0));
    }
    assert!(group.decrypted > 150, "only {} decrypted", group.decrypted);
}
