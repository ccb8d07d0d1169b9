//! Groups with the `hush` command against the real relay: a group is
//! made, every member reads every other member's messages, once, with
//! the group named.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use common::{Relay, hush, hush_ok, init, temp_dir};

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The `(from, group, text)` of the messages among `sync --json` lines.
fn messages(out: &str) -> Vec<(String, String, String)> {
    json_lines(out)
        .into_iter()
        .filter(|v| v.get("text").is_some())
        .map(|v| {
            (
                v["from"].as_str().unwrap_or_default().to_string(),
                v["group"].as_str().unwrap_or("-").to_string(),
                v["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn m(from: &str, group: &str, text: &str) -> (String, String, String) {
    (from.into(), group.into(), text.into())
}

#[test]
fn three_members_read_each_others_group_messages_once() {
    let relay = Relay::start("groups");
    let names = ["alice", "bob", "carol"];
    let homes: Vec<_> = names.iter().map(|n| temp_dir(n)).collect();
    let addresses: Vec<String> = homes.iter().map(|h| init(h, &relay)).collect();
    for (i, home) in homes.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j {
                hush_ok(home, &["contact", "add", name, &addresses[j]]);
            }
        }
    }
    let (alice, bob, carol) = (&homes[0], &homes[1], &homes[2]);

    hush_ok(alice, &["group", "create", "friends", "bob", "carol"]);
    // Bob and Carol learn of the group (and answer with their own keys).
    for (home, name) in [(bob, "bob"), (carol, "carol")] {
        let out = hush_ok(home, &["sync", "--json"]);
        let events = json_lines(&out);
        assert!(
            events.iter().any(|e| e["group_event"] == "friends"
                && e["by"] == "alice"
                && e["member"] == true),
            "{name}: {out}"
        );
        let list = hush_ok(home, &["group", "list"]);
        assert!(list.starts_with("friends  alice"), "{name}: {list}");
        assert!(list.contains(" me"), "{name}: {list}");
    }

    hush_ok(alice, &["send", "--group", "friends", "hello friends"]);
    assert_eq!(
        messages(&hush_ok(bob, &["sync", "--json"])),
        [m("alice", "friends", "hello friends")]
    );
    assert_eq!(
        messages(&hush_ok(carol, &["sync", "--json"])),
        [m("alice", "friends", "hello friends")]
    );

    hush_ok(bob, &["send", "--group", "friends", "hi from bob"]);
    hush_ok(carol, &["send", "--group", "friends", "and carol"]);
    hush_ok(bob, &["send", "carol", "just to carol"]);
    assert_eq!(
        messages(&hush_ok(alice, &["sync", "--json"])),
        [
            m("bob", "friends", "hi from bob"),
            m("carol", "friends", "and carol")
        ]
    );
    assert_eq!(
        messages(&hush_ok(carol, &["sync", "--json"])),
        [
            m("bob", "friends", "hi from bob"),
            m("bob", "-", "just to carol")
        ]
    );
    assert_eq!(
        messages(&hush_ok(bob, &["sync", "--json"])),
        [m("carol", "friends", "and carol")]
    );
    // Nothing twice.
    for home in &homes {
        assert_eq!(messages(&hush_ok(home, &["sync", "--json"])), []);
    }
    // Plain output names the group.
    hush_ok(alice, &["send", "--group", "friends", "bye"]);
    assert_eq!(hush_ok(bob, &["sync"]), "[friends] alice: bye\n");

    // Mistakes get one line.
    let out = hush(alice, &["send", "--group", "nosuch", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no group named \"nosuch\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = hush(alice, &["group", "create", "g2", "nobody"]);
    assert!(!out.status.success());
}

/// Profiles that all have each other as contacts, by these names.
fn everyone(relay: &Relay, names: &[&str]) -> Vec<std::path::PathBuf> {
    let homes: Vec<_> = names.iter().map(|n| temp_dir(n)).collect();
    let addresses: Vec<String> = homes.iter().map(|h| init(h, relay)).collect();
    for (i, home) in homes.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j {
                hush_ok(home, &["contact", "add", name, &addresses[j]]);
            }
        }
    }
    homes
}

fn sync(home: &std::path::Path) -> Vec<(String, String, String)> {
    messages(&hush_ok(home, &["sync", "--json"]))
}

#[test]
fn members_come_and_go_and_read_only_what_is_theirs() {
    let relay = Relay::start("membership");
    let homes = everyone(&relay, &["alice", "bob", "carol", "dave"]);
    let (alice, bob, carol, dave) = (&homes[0], &homes[1], &homes[2], &homes[3]);

    hush_ok(alice, &["group", "create", "team", "bob", "carol"]);
    sync(bob);
    sync(carol);
    hush_ok(alice, &["send", "--group", "team", "before dave"]);
    assert_eq!(sync(bob), [m("alice", "team", "before dave")]);
    assert_eq!(sync(carol), [m("alice", "team", "before dave")]);

    // A late joiner reads what comes after, nothing before.
    hush_ok(alice, &["group", "add", "team", "dave"]);
    sync(dave);
    sync(bob);
    sync(carol);
    hush_ok(alice, &["send", "--group", "team", "welcome dave"]);
    hush_ok(bob, &["send", "--group", "team", "hi dave"]);
    assert_eq!(
        sync(dave),
        [
            m("alice", "team", "welcome dave"),
            m("bob", "team", "hi dave")
        ]
    );
    assert_eq!(
        sync(carol),
        [
            m("alice", "team", "welcome dave"),
            m("bob", "team", "hi dave")
        ]
    );

    // Only admins change the group.
    let out = hush(bob, &["group", "remove", "team", "alice"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only an admin"));

    // A removed member, still online and reading its queue, reads
    // nothing sent after.
    hush_ok(alice, &["group", "remove", "team", "carol"]);
    let out = hush_ok(carol, &["sync", "--json"]);
    assert!(
        json_lines(&out)
            .iter()
            .any(|e| e["group_event"] == "team" && e["member"] == false),
        "{out}"
    );
    sync(bob);
    sync(dave);
    sync(alice);
    hush_ok(bob, &["send", "--group", "team", "without carol"]);
    hush_ok(alice, &["send", "--group", "team", "still without carol"]);
    assert_eq!(sync(carol), []);
    assert_eq!(
        sync(dave),
        [
            m("bob", "team", "without carol"),
            m("alice", "team", "still without carol")
        ]
    );
    assert_eq!(sync(alice), [m("bob", "team", "without carol")]);
    assert!(
        !hush(carol, &["send", "--group", "team", "let me in"])
            .status
            .success()
    );

    // Renamed, then a member leaves.
    hush_ok(alice, &["group", "rename", "team", "crew"]);
    sync(bob);
    sync(dave);
    hush_ok(bob, &["send", "--group", "crew", "new name"]);
    assert_eq!(sync(dave), [m("bob", "crew", "new name")]);
    hush_ok(dave, &["group", "leave", "crew"]);
    assert_eq!(sync(alice), [m("bob", "crew", "new name")]);
    sync(bob);
    hush_ok(bob, &["send", "--group", "crew", "after dave"]);
    assert_eq!(sync(alice), [m("bob", "crew", "after dave")]);
    assert_eq!(sync(dave), []);
    assert_eq!(hush_ok(dave, &["group", "list"]), "");
    assert_eq!(hush_ok(carol, &["sync"]), "");
}

/// Deletes what `home`'s profile holds of `sender`'s sender keys, as if
/// its distribution had been lost (no `hush` may hold the profile).
fn lose_sender_keys(home: &std::path::Path, sender_address: &str) {
    use sqlx::ConnectOptions;
    let address: hush_crypto::Address = sender_address.parse().expect("address");
    let key = address.identity().as_bytes().to_vec();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(home.join("profile.sqlite"))
            .connect()
            .await
            .expect("opens the profile database");
        let gone = sqlx::query("DELETE FROM sender_keys WHERE sender = ?")
            .bind(key)
            .execute(&mut conn)
            .await
            .expect("deletes")
            .rows_affected();
        assert_eq!(gone, 1);
    });
}

#[test]
fn a_member_that_lost_a_sender_key_asks_for_it_and_reads_the_message() {
    let relay = Relay::start("recovery");
    let homes = everyone(&relay, &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (&homes[0], &homes[1], &homes[2]);
    hush_ok(alice, &["group", "create", "g", "bob", "carol"]);
    sync(bob);
    sync(carol);
    hush_ok(bob, &["send", "--group", "g", "first"]);
    assert_eq!(sync(carol), [m("bob", "g", "first")]);

    let bob_address = hush_ok(bob, &["address"]).trim().to_string();
    lose_sender_keys(carol, &bob_address);
    hush_ok(bob, &["send", "--group", "g", "while lost"]);
    hush_ok(bob, &["send", "--group", "g", "still lost"]);
    // Carol cannot read them yet: she keeps them and asks Bob.
    assert_eq!(sync(carol), []);
    assert_eq!(
        sync(alice),
        [
            m("bob", "g", "first"),
            m("bob", "g", "while lost"),
            m("bob", "g", "still lost")
        ]
    );
    // Bob answers with the key Carol was given; Carol reads both, in order.
    sync(bob);
    assert_eq!(
        sync(carol),
        [m("bob", "g", "while lost"), m("bob", "g", "still lost")]
    );
    hush_ok(bob, &["send", "--group", "g", "found"]);
    assert_eq!(sync(carol), [m("bob", "g", "found")]);
}
