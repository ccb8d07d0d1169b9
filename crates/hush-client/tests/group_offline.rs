//! A five-member group where members go offline and come back: each
//! gets every other member's messages exactly once, in each sender's
//! order.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use common::{Relay, client};
use hush_client::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_going_offline_catch_up_in_order() {
    let relay = Relay::start("group-offline");
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(client(&relay, &format!("offline-{i}")).await);
    }
    let addresses: Vec<String> = clients.iter().map(|c| c.address().to_string()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for (j, a) in addresses.iter().enumerate() {
            if i != j {
                c.add_contact(&format!("m{j}"), a).await.unwrap();
            }
        }
    }
    let names: Vec<String> = (1..5).map(|j| format!("m{j}")).collect();
    clients[0].create_group("five", &names).await.unwrap();
    // received[i]: (sender name, text) in the order member i stored them.
    let mut received: Vec<Vec<(String, String)>> = vec![Vec::new(); 5];
    let mut joined = [true, false, false, false, false];
    let mut sent = [0u32; 5];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12 {
        for i in 0..5 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Online this round about two times in three.
            if seed.is_multiple_of(3) {
                continue;
            }
            for e in clients[i].sync().await.unwrap() {
                match e {
                    Event::Message(m) => {
                        assert_eq!(m.group.as_deref(), Some("five"));
                        received[i].push((m.from, m.text));
                    }
                    Event::Group { member: true, .. } => joined[i] = true,
                    _ => {}
                }
            }
            if joined[i] && seed.is_multiple_of(2) {
                sent[i] += 1;
                let text = format!("{i}:{} (round {round})", sent[i]);
                clients[i].send_group_text("five", &text).await.unwrap();
            }
        }
    }
    // Everyone comes back.
    for i in 0..5 {
        for e in clients[i].sync().await.unwrap() {
            if let Event::Message(m) = e {
                received[i].push((m.from, m.text));
            }
        }
    }
    assert!(sent.iter().sum::<u32>() >= 10, "{sent:?}");
    for (i, got) in received.iter().enumerate() {
        for (j, count) in sent.iter().enumerate() {
            if i == j {
                continue;
            }
            // Member j's texts, as member i stored them.
            let from_j: Vec<u32> = got
                .iter()
                .filter(|(_, t)| t.starts_with(&format!("{j}:")))
                .map(|(_, t)| t[2..].split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(
                from_j,
                (1..=*count).collect::<Vec<_>>(),
                "member {i} from member {j}"
            );
        }
    }
}
