//! `hush chat` in a real terminal: two people in tmux, reading the
//! screen as a person would.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Relay, hush_ok, init, temp_dir};

/// A tmux server of this test's own.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is needed for the terminal test (.ci/test installs it)"
        );
        // One server per test: tests run at once in one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            socket: format!("hush-test-{}-{n}", std::process::id()),
        }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("runs tmux")
    }

    fn start(&self, name: &str, command: &str) {
        let out = self.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "24",
            command,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
    }

    fn screen(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }

    fn wait_for(&self, name: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen(name);
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}'s screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_text(&self, name: &str, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", name, "-l", text])
                .status
                .success()
        );
    }

    fn key(&self, name: &str, key: &str) {
        assert!(self.tmux(&["send-keys", "-t", name, key]).status.success());
    }

    fn running(&self, name: &str) -> bool {
        self.tmux(&["has-session", "-t", name]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn two_people_chat_in_terminals_with_marks_and_typing() {
    let relay = Relay::start("tui");
    let (alice, bob) = (temp_dir("tui-alice"), temp_dir("tui-bob"));
    let a = init(&alice, &relay);
    let b = init(&bob, &relay);
    hush_ok(&alice, &["contact", "add", "bob", &b]);
    hush_ok(&bob, &["contact", "add", "alice", &a]);
    hush_ok(&alice, &["send", "bob", "written before the chat"]);

    let tmux = Tmux::new();
    let hush = env!("CARGO_BIN_EXE_hush");
    tmux.start(
        "alice",
        &format!("{hush} --home {} chat bob", alice.display()),
    );
    tmux.start(
        "bob",
        &format!("{hush} --home {} chat alice", bob.display()),
    );

    // History, and what was waiting, on opening.
    tmux.wait_for("bob", "alice (not verified)");
    tmux.wait_for("bob", "alice: written before the chat");
    // Bob's open chat marked it read; Alice sees the mark arrive.
    tmux.wait_for("alice", "me: written before the chat  [read]");

    tmux.type_text("alice", "hello bob");
    tmux.wait_for("bob", "alice is typing");
    tmux.key("alice", "Enter");
    tmux.wait_for("bob", "alice: hello bob");
    tmux.wait_for("alice", "me: hello bob  [read]");

    tmux.type_text("bob", "hi alice");
    tmux.key("bob", "Enter");
    tmux.wait_for("alice", "bob: hi alice");
    tmux.wait_for("bob", "me: hi alice  [read]");

    if std::env::var_os("HUSH_SHOW_SCREENS").is_some() {
        eprintln!("{}\n{}", tmux.screen("alice"), tmux.screen("bob"));
    }
    // Esc leaves, and the history is kept.
    tmux.key("bob", "Escape");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.running("bob") {
        assert!(Instant::now() < deadline, "chat did not exit on Esc");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.key("alice", "Escape");
    let history = hush_ok(&bob, &["history", "alice"]);
    assert!(history.contains("alice: hello bob"), "{history}");
    assert!(history.contains("me: hi alice"), "{history}");
}

#[test]
fn a_group_chat_in_terminals_names_each_sender() {
    let relay = Relay::start("tui-group");
    let homes = [
        temp_dir("tui-g-alice"),
        temp_dir("tui-g-bob"),
        temp_dir("tui-g-carol"),
    ];
    let names = ["alice", "bob", "carol"];
    let addresses: Vec<String> = homes.iter().map(|h| init(h, &relay)).collect();
    for (i, home) in homes.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j {
                hush_ok(home, &["contact", "add", name, &addresses[j]]);
            }
        }
    }
    let [alice, bob, carol] = &homes;
    hush_ok(alice, &["group", "create", "friends", "bob", "carol"]);
    hush_ok(bob, &["sync"]);
    hush_ok(carol, &["sync"]);
    hush_ok(carol, &["send", "--group", "friends", "carol was here"]);

    let tmux = Tmux::new();
    let hush = env!("CARGO_BIN_EXE_hush");
    tmux.start(
        "alice",
        &format!("{hush} --home {} chat --group friends", alice.display()),
    );
    tmux.start(
        "bob",
        &format!("{hush} --home {} chat --group friends", bob.display()),
    );
    tmux.wait_for("bob", "friends (group)");
    tmux.wait_for("bob", "carol: carol was here");
    tmux.wait_for("alice", "carol: carol was here");

    tmux.type_text("alice", "hello friends");
    tmux.key("alice", "Enter");
    tmux.wait_for("bob", "alice: hello friends");
    tmux.wait_for("alice", "me: hello friends  [delivered]");
    tmux.type_text("bob", "hi all");
    tmux.key("bob", "Enter");
    tmux.wait_for("alice", "bob: hi all");
    tmux.key("alice", "Escape");
    tmux.key("bob", "Escape");
    let out = hush_ok(carol, &["sync"]);
    assert_eq!(
        out,
        "[friends] alice: hello friends\n[friends] bob: hi all\n"
    );
}
