//! A 200-member group, every member a real client with its own profile,
//! all in this process, against the real relay.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use common::{Relay, client};
use hush_client::Event;

const MEMBERS: usize = 200;

fn texts(events: &[Event]) -> Vec<(String, Option<String>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.from.clone(), m.group.clone(), m.text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_members_each_read_every_message_once() {
    // One client fetches many bundles and sends many pairwise messages.
    let relay = Relay::start_with(
        "big-group",
        "send_burst = 1000000\nsend_refill_micros = 1\nbundle_burst = 100000\nbundle_refill_secs = 1\n",
    );
    let mut clients = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        clients.push(client(&relay, &format!("member-{i}")).await);
    }
    let addresses: Vec<String> = clients.iter().map(|c| c.address().to_string()).collect();
    let names: Vec<String> = (1..MEMBERS).map(|i| format!("m{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        clients[0]
            .add_contact(name, &addresses[i + 1])
            .await
            .expect("adds");
    }
    clients[0]
        .create_group("big", &names)
        .await
        .expect("creates");
    for c in clients.iter_mut().skip(1) {
        let events = c.sync().await.expect("syncs");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Group { group, member: true, .. } if group == "big"))
        );
    }

    // The creator speaks: every member reads it once.
    clients[0]
        .send_group_text("big", "hello, all 200")
        .await
        .expect("sends");
    let creator = clients[0].address().to_string();
    for c in clients.iter_mut().skip(1) {
        let got = texts(&c.sync().await.expect("syncs"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1.as_deref(), Some("big"));
        assert_eq!(got[0].2, "hello, all 200");
        assert!(got[0].0.starts_with("unknown-") && creator.contains(&got[0].0[8..]));
    }

    // A member who knows nobody but the group speaks too.
    clients[7]
        .send_group_text("big", "hello from m7")
        .await
        .expect("sends");
    for (i, c) in clients.iter_mut().enumerate() {
        let got = texts(&c.sync().await.expect("syncs"));
        if i == 7 {
            assert_eq!(got, []);
        } else {
            assert_eq!(got.len(), 1, "member {i}: {got:?}");
            assert_eq!(got[0].2, "hello from m7");
        }
    }
    // Nothing twice.
    for c in &mut clients {
        assert_eq!(texts(&c.sync().await.expect("syncs")), []);
    }
}
