//! The `hush` command-line client against the real relay, as a person
//! would use it from the README.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use common::{Relay, hush, hush_ok, init, temp_dir};

#[test]
fn two_profiles_exchange_messages_and_see_receipts() {
    let relay = Relay::start("exchange");
    let (alice, bob) = (temp_dir("alice"), temp_dir("bob"));
    let alice_address = init(&alice, &relay);
    let bob_address = init(&bob, &relay);
    assert!(alice_address.starts_with("hush"), "{alice_address}");
    assert_eq!(hush_ok(&alice, &["address"]).trim(), alice_address);
    hush_ok(&alice, &["contact", "add", "bob", &bob_address]);
    hush_ok(&bob, &["contact", "add", "alice", &alice_address]);
    assert!(hush_ok(&alice, &["contact", "list"]).contains(&bob_address));

    hush_ok(&alice, &["send", "bob", "hello bob"]);
    hush_ok(&alice, &["send", "bob", "second"]);
    assert_eq!(
        hush_ok(&bob, &["sync"]),
        "alice: hello bob\nalice: second\n"
    );
    // Nothing twice.
    assert_eq!(hush_ok(&bob, &["sync"]), "");

    hush_ok(&bob, &["send", "alice", "hi alice"]);
    let lines = hush_ok(&alice, &["sync", "--json"]);
    let line: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("a line")).expect("json");
    assert_eq!(line["from"], "bob");
    assert_eq!(line["text"], "hi alice");
    assert_eq!(line["address"], bob_address.as_str());
    assert!(line["sent_at"].as_u64().is_some() && line["id"].as_str().is_some());

    // Bob's sync sent delivery receipts: Alice's messages are delivered.
    let history = hush_ok(&alice, &["history", "bob"]);
    assert_eq!(
        history,
        "me: hello bob  [delivered]\nme: second  [delivered]\nbob: hi alice\n"
    );

    // Both see the same safety number.
    let a = hush_ok(&alice, &["verify", "bob"]);
    let b = hush_ok(&bob, &["verify", "alice"]);
    assert_eq!(a, b);
    assert_eq!(a.chars().filter(char::is_ascii_digit).count(), 60);
}

#[test]
fn mistakes_get_one_line_errors() {
    let relay = Relay::start("mistakes");
    let home = temp_dir("mistakes");
    init(&home, &relay);
    let fail = |args: &[&str], want: &str| {
        let out = hush(&home, args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fail(&["send", "nobody", "hi"], "no contact named \"nobody\"");
    fail(
        &["contact", "add", "x", "hushNOTANADDRESS"],
        "not a valid hush address",
    );
    fail(&["verify", "nobody"], "no contact named");
    fail(&["frobnicate"], "unknown command");
    let elsewhere = temp_dir("no-profile");
    let out = hush(&elsewhere, &["address"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hush profile"));
    // A second init on the same home refuses.
    let out = hush(
        &home,
        &[
            "init",
            "--relay",
            &relay.address(),
            "--pin",
            &relay.fingerprint,
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // Wrong pin: refused, and no profile is left behind.
    let wrong = temp_dir("wrong-pin");
    let out = hush(
        &wrong,
        &[
            "init",
            "--relay",
            &relay.address(),
            "--pin",
            &"ab".repeat(32),
        ],
    );
    assert!(!out.status.success());
    assert!(!wrong.join("profile.sqlite").exists());
    // Unreachable relay.
    let out = hush(
        &wrong,
        &[
            "init",
            "--relay",
            "127.0.0.1:9",
            "--pin",
            &relay.fingerprint,
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay"));
}

/// Both start a session at once (each sends before receiving anything):
/// both sessions work, and the two sides settle on one.
#[test]
fn simultaneous_first_messages_both_arrive_and_the_conversation_goes_on() {
    let relay = Relay::start("simultaneous");
    let (alice, bob) = (temp_dir("sim-alice"), temp_dir("sim-bob"));
    let a = init(&alice, &relay);
    let b = init(&bob, &relay);
    hush_ok(&alice, &["contact", "add", "bob", &b]);
    hush_ok(&bob, &["contact", "add", "alice", &a]);
    hush_ok(&alice, &["send", "bob", "a1"]);
    hush_ok(&bob, &["send", "alice", "b1"]);
    assert_eq!(hush_ok(&bob, &["sync"]), "alice: a1\n");
    assert_eq!(hush_ok(&alice, &["sync"]), "bob: b1\n");
    for round in 2..6 {
        hush_ok(&alice, &["send", "bob", &format!("a{round}")]);
        hush_ok(&bob, &["send", "alice", &format!("b{round}")]);
        assert_eq!(hush_ok(&bob, &["sync"]), format!("alice: a{round}\n"));
        assert_eq!(hush_ok(&alice, &["sync"]), format!("bob: b{round}\n"));
    }
}

/// A sender nobody named can be given a name, keeping what it wrote; a
/// contact that reinstalled and wrote first can get its name back (one
/// contact, both histories, marked changed); an address that already has
/// a name is not given a second one.
#[test]
fn unnamed_senders_are_named_and_a_reinstalled_contact_is_merged() {
    let relay = Relay::start("naming");
    let (alice, bob, carol) = (temp_dir("alice"), temp_dir("bob"), temp_dir("carol"));
    let alice_address = init(&alice, &relay);
    let bob_address = init(&bob, &relay);
    let carol_address = init(&carol, &relay);
    hush_ok(&carol, &["contact", "add", "alice", &alice_address]);
    hush_ok(&bob, &["contact", "add", "alice", &alice_address]);
    hush_ok(&alice, &["contact", "add", "bob", &bob_address]);

    hush_ok(&carol, &["send", "alice", "hi from carol"]);
    let shown = hush_ok(&alice, &["sync"]);
    assert!(
        shown.starts_with("unknown-") && shown.ends_with(": hi from carol\n"),
        "{shown}"
    );
    hush_ok(&alice, &["contact", "add", "carol", &carol_address]);
    assert_eq!(
        hush_ok(&alice, &["history", "carol"]),
        "carol: hi from carol\n"
    );
    let again = hush(&alice, &["contact", "add", "dave", &carol_address]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already your contact \"carol\""),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let reserved = hush(&alice, &["contact", "add", "unknown-x", &carol_address]);
    assert!(!reserved.status.success());

    hush_ok(&bob, &["send", "alice", "before"]);
    assert_eq!(hush_ok(&alice, &["sync"]), "bob: before\n");
    // Bob starts over with a new profile, and writes first.
    let bob_again = temp_dir("bob-again");
    let new_address = init(&bob_again, &relay);
    hush_ok(&bob_again, &["contact", "add", "alice", &alice_address]);
    hush_ok(&bob_again, &["send", "alice", "after reinstall"]);
    let shown = hush_ok(&alice, &["sync"]);
    assert!(
        shown.starts_with("unknown-") && shown.ends_with(": after reinstall\n"),
        "{shown}"
    );
    hush_ok(&alice, &["contact", "add", "bob", &new_address]);
    assert_eq!(
        hush_ok(&alice, &["history", "bob"]),
        "bob: before\nbob: after reinstall\n"
    );
    let list = hush_ok(&alice, &["contact", "list"]);
    assert!(
        list.contains(&new_address) && !list.contains(&bob_address),
        "{list}"
    );
    assert!(!list.contains("unknown-"), "{list}");
    // A changed identity is not written to before the user accepts it.
    assert!(
        !hush(&alice, &["send", "bob", "welcome back"])
            .status
            .success()
    );
    hush_ok(&alice, &["verify", "bob", "--accept"]);
    hush_ok(&alice, &["send", "bob", "welcome back"]);
    assert_eq!(hush_ok(&bob_again, &["sync"]), "alice: welcome back\n");
}
