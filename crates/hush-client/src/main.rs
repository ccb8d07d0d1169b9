//! `hush`: the hush command-line client (`spec/client.md`, "CLI").
//!
//! ```text
//! hush [--home DIR] init --relay HOST:PORT --pin FINGERPRINT [--passphrase]
//! hush [--home DIR] address
//! hush [--home DIR] contact add NAME ADDRESS | contact list
//! hush [--home DIR] send NAME TEXT [--retry-secs N]
//! hush [--home DIR] sync [--json]
//! hush [--home DIR] listen [--json]
//! hush [--home DIR] verify NAME [--accept]
//! hush [--home DIR] history NAME [--json]
//! hush [--home DIR] chat NAME
//! ```

mod chat;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hush_client::client::Event;
use hush_client::profile::Profile;
use hush_client::{Client, Options, Received, Unlock};
use zeroize::Zeroizing;

const USAGE: &str = "usage: hush [--home DIR] COMMAND

  init --relay HOST:PORT --pin FINGERPRINT [--passphrase]
                          create a profile and register it with the relay
                          (--passphrase: encrypt it under a passphrase from
                          HUSH_PASSPHRASE or standard input, instead of a key file)
  address                 print this profile's address
  contact add NAME ADDRESS
  contact list
  send NAME TEXT [--retry-secs N]
                          send; exits 0 once the relay has stored it
  send --group GROUP TEXT send to every member of a group
  group create GROUP MEMBER...
                          make a group of you and these contacts (you are its admin)
  group add GROUP MEMBER...   (admins) add contacts; they read only what comes after
  group remove GROUP MEMBER   (admins) remove a member; it reads nothing after
  group rename GROUP NEW_NAME (admins)
  group leave GROUP
  group list              the groups you are in, with their members
  sync [--json]           fetch and print everything waiting, then exit
  listen [--json]         stay connected and print messages as they arrive
  verify NAME [--accept]  print the safety number (--accept: mark verified,
                          accepting a changed identity)
  history NAME [--json]   print the conversation
  chat NAME               talk with NAME in the terminal (Enter sends, Esc leaves)
  chat --group GROUP      talk in a group in the terminal

The profile directory is --home, else HUSH_HOME, else ~/.hush.";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hush: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(std::env::args().skip(1).collect())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line arguments: flags anywhere, the rest positional.
struct Args {
    home: PathBuf,
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(raw: Vec<String>) -> Result<Self> {
        const VALUED: &[&str] = &["--home", "--relay", "--pin", "--retry-secs", "--group"];
        const SWITCHES: &[&str] = &["--json", "--passphrase", "--accept", "-h", "--help"];
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut it = raw.into_iter();
        while let Some(arg) = it.next() {
            if VALUED.contains(&arg.as_str()) {
                let value = it.next().with_context(|| format!("{arg} needs a value"))?;
                flags.push((arg, Some(value)));
            } else if SWITCHES.contains(&arg.as_str()) {
                flags.push((arg, None));
            } else if arg.starts_with("--") {
                bail!("unknown option {arg} (see hush --help)");
            } else {
                positional.push(arg);
            }
        }
        let home = match flags.iter().find(|(f, _)| f == "--home") {
            Some((_, Some(dir))) => PathBuf::from(dir),
            _ => match std::env::var_os("HUSH_HOME") {
                Some(dir) => PathBuf::from(dir),
                None => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(".hush"),
                    None => bail!("no profile directory: give --home DIR or set HUSH_HOME"),
                },
            },
        };
        Ok(Self {
            home,
            positional,
            flags,
        })
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }

    fn value(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(f, _)| f == flag)
            .and_then(|(_, v)| v.as_deref())
    }

    fn words(&self, n: usize, usage: &str) -> Result<&[String]> {
        if self.positional.len() != n {
            bail!("usage: hush {usage}");
        }
        Ok(&self.positional)
    }
}

fn passphrase(prompt: &str) -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("HUSH_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    eprint!("{prompt}");
    let p = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        read_unechoed().context("reading the passphrase")?
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the passphrase")?;
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string())
    };
    if p.is_empty() {
        bail!("an empty passphrase is not allowed");
    }
    Ok(p)
}

/// Reads a line from the terminal without showing it (raw mode: nothing
/// typed is echoed, so the passphrase stays off the screen and out of
/// the scrollback). Enter ends it; Backspace erases; Esc or Ctrl-C
/// abandons.
fn read_unechoed() -> Result<Zeroizing<String>> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use ratatui::crossterm::terminal;
    terminal::enable_raw_mode()?;
    // Room enough that typing never moves the text (a move would leave
    // a copy behind).
    let mut line = Zeroizing::new(String::with_capacity(1024));
    let read = loop {
        match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Esc => break Err(anyhow::anyhow!("abandoned")),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err(anyhow::anyhow!("abandoned"));
                }
                KeyCode::Char(c) if line.len() + c.len_utf8() <= line.capacity() => line.push(c),
                KeyCode::Backspace => {
                    line.pop();
                }
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
    };
    let restored = terminal::disable_raw_mode();
    eprintln!();
    read?;
    restored?;
    Ok(line)
}

async fn open(args: &Args, options: Options) -> Result<Client> {
    let secret = if Profile::needs_passphrase(&args.home).await? {
        Some(passphrase("passphrase: ")?)
    } else {
        None
    };
    Ok(Client::open(&args.home, secret.as_deref().map(String::as_str), options).await?)
}

fn print_message(m: &Received, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "from": m.from,
                "address": m.address,
                "id": hex::encode(m.id),
                "text": m.text,
                "sent_at": m.sent_at_ms,
                "counter": m.counter,
                "seq": m.seq,
                "group": m.group,
            })
        );
    } else {
        match &m.group {
            Some(group) => println!("[{group}] {}: {}", m.from, m.text),
            None => println!("{}: {}", m.from, m.text),
        }
    }
}

fn print_events(events: &[Event], json: bool) {
    for event in events {
        match event {
            Event::Message(m) => print_message(m, json),
            Event::Group { group, by, member } => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"group_event": group, "by": by, "member": member})
                    );
                } else if *member {
                    eprintln!("hush: {by} updated group {group:?} (you are a member)");
                } else {
                    eprintln!("hush: {by} removed you from group {group:?}");
                }
            }
            _ => {}
        }
    }
}

async fn run(raw: Vec<String>) -> Result<()> {
    let args = Args::parse(raw)?;
    if args.has("-h") || args.has("--help") || args.positional.is_empty() {
        println!("{USAGE}");
        return Ok(());
    }
    let mut options = Options::default();
    if let Some(secs) = args.value("--retry-secs") {
        let secs: u64 = secs
            .parse()
            .with_context(|| format!("--retry-secs {secs}: expected whole seconds"))?;
        options.retry_window = Duration::from_secs(secs);
    }
    let json = args.has("--json");
    match args.positional[0].as_str() {
        "init" => {
            args.words(1, "init --relay HOST:PORT --pin FINGERPRINT")?;
            let relay = args
                .value("--relay")
                .context("init needs --relay HOST:PORT")?;
            let pin = args
                .value("--pin")
                .context("init needs --pin FINGERPRINT")?;
            let pin = hush_relay::client::parse_fingerprint(pin).context(
                "--pin: a relay fingerprint is 64 hex digits, as `hush-relay fingerprint` prints",
            )?;
            let unlock = if args.has("--passphrase") {
                Unlock::Passphrase(passphrase("new passphrase: ")?)
            } else {
                Unlock::KeyFile
            };
            let client = Client::init(&args.home, relay, pin, unlock, options).await?;
            println!("{}", client.address());
        }
        "address" => {
            args.words(1, "address")?;
            println!("{}", open(&args, options).await?.address());
        }
        "contact" => match args.positional.get(1).map(String::as_str) {
            Some("add") => {
                let w = args.words(4, "contact add NAME ADDRESS")?;
                let mut client = open(&args, options).await?;
                let (contact, changed) = client.add_contact(&w[2], &w[3]).await?;
                if changed {
                    eprintln!(
                        "hush: {} now has a different identity; it is marked unverified and sending waits until you compare safety numbers (hush verify {})",
                        contact.name, contact.name
                    );
                }
            }
            Some("list") => {
                args.words(2, "contact list")?;
                let client = open(&args, options).await?;
                for c in client.contacts().await? {
                    let mark = match (c.changed, c.verified) {
                        (true, _) => "  (identity changed)",
                        (false, true) => "  (verified)",
                        (false, false) => "",
                    };
                    println!("{}  {}{mark}", c.name, c.address());
                }
            }
            _ => bail!("usage: hush contact add NAME ADDRESS | hush contact list"),
        },
        "send" => {
            let mut client;
            let id = if let Some(group) = args.value("--group") {
                let w = args.words(2, "send --group GROUP TEXT")?;
                client = open(&args, options).await?;
                client.send_group_text(group, &w[1]).await?
            } else {
                let w = args.words(3, "send NAME TEXT")?;
                client = open(&args, options).await?;
                client.send_text(&w[1], &w[2]).await?
            };
            client.wait_sent(&[id]).await?;
        }
        "group" => match args.positional.get(1).map(String::as_str) {
            Some("create") if args.positional.len() >= 4 => {
                let mut client = open(&args, options).await?;
                client
                    .create_group(&args.positional[2], &args.positional[3..])
                    .await?;
            }
            Some("list") => {
                args.words(2, "group list")?;
                let client = open(&args, options).await?;
                let contacts = client.contacts().await?;
                let me = client.address().to_string();
                for g in client.groups().await? {
                    if !g.member {
                        continue;
                    }
                    let names: Vec<String> = g
                        .members
                        .iter()
                        .map(|m| {
                            let address = hush_crypto::Address::from(m).to_string();
                            if address == me {
                                "me".to_string()
                            } else {
                                contacts
                                    .iter()
                                    .find(|c| c.identity == *m)
                                    .map_or(address, |c| c.name.clone())
                            }
                        })
                        .collect();
                    println!("{}  {}", g.name, names.join(" "));
                }
            }
            Some("add") if args.positional.len() >= 4 => {
                let mut client = open(&args, options).await?;
                client
                    .group_add(&args.positional[2], &args.positional[3..])
                    .await?;
            }
            Some("remove") => {
                let w = args.words(4, "group remove GROUP MEMBER")?;
                let mut client = open(&args, options).await?;
                client.group_remove(&w[2], &w[3]).await?;
            }
            Some("rename") => {
                let w = args.words(4, "group rename GROUP NEW_NAME")?;
                let mut client = open(&args, options).await?;
                client.group_rename(&w[2], &w[3]).await?;
            }
            Some("leave") => {
                let w = args.words(3, "group leave GROUP")?;
                let mut client = open(&args, options).await?;
                client.group_leave(&w[2]).await?;
            }
            _ => bail!(
                "usage: hush group create GROUP MEMBER... | group add GROUP MEMBER... | group remove GROUP MEMBER | group rename GROUP NEW_NAME | group leave GROUP | group list"
            ),
        },
        "sync" => {
            args.words(1, "sync [--json]")?;
            let mut client = open(&args, options).await?;
            let events = client.sync().await?;
            print_events(&events, json);
        }
        "listen" => {
            args.words(1, "listen [--json]")?;
            let mut client = open(&args, options).await?;
            listen(&mut client, json).await?;
        }
        "verify" => {
            let w = args.words(2, "verify NAME [--accept]")?;
            let mut client = open(&args, options).await?;
            if args.has("--accept") {
                client.verify(&w[1]).await?;
            }
            let (contact, number) = client.safety_number(&w[1]).await?;
            println!("{}", number.display_groups());
            if contact.changed {
                eprintln!(
                    "hush: {}'s identity changed; compare this number with them, then run hush verify {} --accept",
                    contact.name, contact.name
                );
            }
        }
        "history" => {
            let w = args.words(2, "history NAME [--json]")?;
            let mut client = open(&args, options).await?;
            let (contact, messages) = client.history(&w[1], 10_000).await?;
            for m in messages {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "from": if m.outgoing { "me" } else { contact.name.as_str() },
                            "id": hex::encode(m.id),
                            "text": m.text,
                            "sent_at": m.sent_at_ms,
                            "counter": m.counter,
                            "status": m.status.name(),
                            "recalled": m.recalled,
                        })
                    );
                } else {
                    let who = if m.outgoing {
                        "me"
                    } else {
                        contact.name.as_str()
                    };
                    let mark = if m.outgoing {
                        format!("  [{}]", m.status.name())
                    } else {
                        String::new()
                    };
                    let text = if m.recalled {
                        "(deleted)"
                    } else {
                        m.text.as_str()
                    };
                    println!("{who}: {text}{mark}");
                }
            }
        }
        "chat" => {
            let target = match args.value("--group") {
                Some(group) => {
                    args.words(1, "chat --group GROUP")?;
                    chat::Target::Group(group.to_string())
                }
                None => chat::Target::Contact(args.words(2, "chat NAME")?[1].clone()),
            };
            let mut client = open(&args, options).await?;
            chat::run(&mut client, target).await?;
        }
        other => bail!("unknown command {other:?} (see hush --help)"),
    }
    Ok(())
}

/// Stays connected: catches up, then prints pushes as they come, and
/// after a lost connection reconnects with randomised exponential backoff
/// (so clients that lost the relay together do not return together),
/// catching up again each time.
async fn listen(client: &mut Client, json: bool) -> Result<()> {
    let mut failures = 0u32;
    loop {
        match client.sync().await {
            Ok(events) => {
                failures = 0;
                print_events(&events, json);
                loop {
                    let push = tokio::select! {
                        push = client.wait_push() => push,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            // Retry whatever the outbox holds.
                            let _ = client.flush().await;
                            continue;
                        }
                    };
                    let Some(envelope) = push else { break };
                    match client.handle_push(envelope).await {
                        Ok(events) => {
                            print_events(&events, json);
                            let _ = client.send_receipts().await;
                        }
                        Err(e) => {
                            eprintln!("hush: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("hush: {e}; reconnecting");
            }
        }
        client.disconnect();
        let ceiling = 250u64.saturating_mul(1 << failures.min(7)).min(30_000);
        let mut jitter = [0u8; 8];
        let _ = getrandom::fill(&mut jitter);
        let wait = ceiling / 2 + u64::from_le_bytes(jitter) % (ceiling / 2 + 1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}
