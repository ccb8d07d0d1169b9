//! Exactly once, in order, whatever happens: three clients exchange
//! 1,000 messages while going offline at random, while the relay is
//! killed (`kill -9`) and restarted, and while clients die between
//! storing what they received and acknowledging it.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::{Relay, temp_dir};
use hush_client::{Client, Options, Status, Unlock};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

fn options() -> Options {
    Options {
        retry_window: Duration::from_secs(600),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

const NAMES: [&str; 3] = ["ann", "ben", "cat"];

struct Peer {
    home: PathBuf,
    client: Option<Client>,
}

impl Peer {
    async fn client(&mut self) -> &mut Client {
        if self.client.is_none() {
            self.client = Some(
                Client::open(&self.home, None, options())
                    .await
                    .expect("reopens"),
            );
        }
        self.client.as_mut().expect("open")
    }

    /// The process dies: nothing is flushed or acknowledged on the way out.
    async fn die(&mut self) {
        if let Some(client) = self.client.take() {
            client.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_through_offline_peers_relay_crashes_and_lost_acks() {
    let mut relay = Relay::start("reliability");
    let (data, addr) = (relay.data.clone(), relay.addr);
    let pin = hush_relay::client::parse_fingerprint(&relay.fingerprint).expect("pin");
    let mut rng = ChaCha20Rng::from_seed([42; 32]);

    let mut peers = Vec::new();
    let mut addresses = Vec::new();
    for name in NAMES {
        let home = temp_dir(name);
        let client = Client::init(&home, &relay.address(), pin, Unlock::KeyFile, options())
            .await
            .expect("init");
        addresses.push(client.address().to_string());
        peers.push(Peer {
            home,
            client: Some(client),
        });
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        for (j, name) in NAMES.iter().enumerate() {
            if i != j {
                peer.client()
                    .await
                    .add_contact(name, &addresses[j])
                    .await
                    .expect("adds");
            }
        }
    }

    // What each sender sent to each recipient, in order.
    let mut sent: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    let mut online = [true; 3];
    let mut crashes = 0;
    let total = 1_000;
    for n in 0..total {
        // Now and then the relay dies and comes back.
        if n > 0 && n % 150 == 0 {
            relay.kill9();
            relay = Relay::start_at(data.clone(), addr);
            crashes += 1;
        }
        // Peers go offline and come back.
        for (i, up) in online.iter_mut().enumerate() {
            if rng.next_u32() % 20 == 0 {
                *up = !*up;
                if !*up {
                    peers[i].die().await;
                }
            }
        }
        // A peer that is online sends (an offline one comes back to).
        let mut from = (rng.next_u32() % 3) as usize;
        if !online[from] {
            from = (0..3).find(|i| online[*i]).unwrap_or(from);
            online[from] = true;
        }
        let to = (from + 1 + (rng.next_u32() % 2) as usize) % 3;
        let text = format!("{}->{} #{n}", NAMES[from], NAMES[to]);
        peers[from]
            .client()
            .await
            .send_text(NAMES[to], &text)
            .await
            .expect("stored in the outbox");
        sent.entry((from, to)).or_default().push(text);
        // Online peers receive; some die before acknowledging.
        for (i, peer) in peers.iter_mut().enumerate() {
            if !online[i] || rng.next_u32() % 4 != 0 {
                continue;
            }
            if rng.next_u32() % 5 == 0 {
                let limit = 1 + (rng.next_u32() % 3) as usize;
                let _ = peer.client().await.sync_up_to(limit).await;
                peer.die().await;
            } else {
                let _ = peer.client().await.sync().await;
            }
        }
    }
    assert!(crashes >= 6, "the relay was killed {crashes} times");

    // Everyone comes back: every outbox drains, every queue empties.
    for _ in 0..50 {
        let mut busy = false;
        for peer in &mut peers {
            let client = peer.client().await;
            let _ = client.sync().await;
            busy |= client.profile().outbox_len().await.expect("outbox") > 0;
        }
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for peer in &mut peers {
        let _ = peer.client().await.sync().await;
    }

    let sent_total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(sent_total, total);
    for (to, peer) in peers.iter_mut().enumerate() {
        let client = peer.client().await;
        for (from, name) in NAMES.iter().enumerate() {
            if from == to {
                continue;
            }
            let (_, history) = client.history(name, 100_000).await.expect("history");
            let received: Vec<String> = history
                .iter()
                .filter(|m| !m.outgoing)
                .map(|m| m.text.clone())
                .collect();
            let expected = sent.get(&(from, to)).cloned().unwrap_or_default();
            let unique: BTreeSet<&String> = received.iter().collect();
            assert_eq!(
                unique.len(),
                received.len(),
                "{name}->{}: shown twice",
                NAMES[to]
            );
            assert_eq!(
                received, expected,
                "{name}->{}: lost or out of order",
                NAMES[to]
            );
            // Our own messages to them: all acknowledged by the relay.
            let failed = history
                .iter()
                .filter(|m| m.outgoing && m.status < Status::Sent)
                .count();
            assert_eq!(failed, 0, "{}->{name}: not all sent", NAMES[to]);
        }
    }
}
