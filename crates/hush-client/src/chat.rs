//! `hush chat NAME` and `hush chat --group GROUP`: an interactive
//! conversation in the terminal — the history, new messages as they
//! arrive, delivery and read marks, and "typing…" (`spec/client.md`,
//! "CLI"). In a group, each message shows its sender, and there are no
//! typing notices or read receipts.
//!
//! Keys: text and Enter to send, Backspace, Esc or Ctrl-C to leave.
//! Messages shown while the chat is open are marked read (and the
//! sender told so). Typing sends a typing notice at most every 3 s, and
//! "stopped" when the line is sent or emptied.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hush_client::Client;
use hush_client::client::Event;
use hush_client::content::Body;
use hush_client::profile::{Status, StoredMessage};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use tokio::sync::mpsc;

/// How long a typing notice shows without a new one.
const TYPING_SHOWN: Duration = Duration::from_secs(6);
/// Typing notices sent at most this often.
const TYPING_EVERY: Duration = Duration::from_secs(3);

/// Who the chat is with.
pub(crate) enum Target {
    /// A contact, by name.
    Contact(String),
    /// A group, by name.
    Group(String),
}

struct Screen {
    name: String,
    verified: bool,
    /// In a group: the senders' names, by contact row.
    group: Option<std::collections::HashMap<i64, String>>,
    history: Vec<StoredMessage>,
    input: String,
    typing_until: Option<Instant>,
    notice: String,
}

fn mark(status: Status) -> &'static str {
    match status {
        Status::Sending => "[sending]",
        Status::Sent => "[sent]",
        Status::Delivered => "[delivered]",
        Status::Read => "[read]",
        Status::Failed => "[failed]",
    }
}

fn draw(frame: &mut ratatui::Frame<'_>, s: &Screen) {
    let [top, status, input] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(3),
    ])
    .areas(frame.area());
    let lines: Vec<Line<'_>> = s
        .history
        .iter()
        .map(|m| {
            let who = match (&s.group, m.outgoing) {
                (_, true) => "me",
                (Some(names), false) => names.get(&m.contact).map_or("?", String::as_str),
                (None, false) => s.name.as_str(),
            };
            let text = if m.recalled {
                Span::styled("(deleted)", Style::default().add_modifier(Modifier::ITALIC))
            } else {
                Span::raw(m.text.as_str())
            };
            let mut spans = vec![
                Span::styled(
                    format!("{who}: "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                text,
            ];
            if m.outgoing {
                spans.push(Span::raw(format!("  {}", mark(m.status))));
            }
            Line::from(spans)
        })
        .collect();
    let height = top.height.saturating_sub(2) as usize;
    let scroll = lines.len().saturating_sub(height) as u16;
    let title = match &s.group {
        Some(_) => format!(" {} (group) ", s.name),
        None => format!(
            " {} ({}) ",
            s.name,
            if s.verified {
                "verified"
            } else {
                "not verified"
            }
        ),
    };
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(title))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        top,
    );
    let typing = s.typing_until.is_some_and(|t| Instant::now() < t);
    let line = if typing {
        format!("{} is typing…", s.name)
    } else {
        s.notice.clone()
    };
    frame.render_widget(Paragraph::new(line), status);
    frame.render_widget(
        Paragraph::new(format!("> {}", s.input)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Enter: send  Esc: leave "),
        ),
        input,
    );
}

/// Reads key presses on a thread of their own (the terminal read blocks).
fn keys() -> mpsc::Receiver<TermEvent> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// The conversation's last messages; in a group, with the senders'
/// names brought up to date.
async fn load(client: &mut Client, screen: &mut Screen) -> Result<Vec<StoredMessage>> {
    if let Some(names) = screen.group.as_mut() {
        for c in client.contacts().await? {
            names.insert(c.id, c.name);
        }
        return Ok(client.group_history(&screen.name, 1_000).await?.1);
    }
    Ok(client.history(&screen.name, 1_000).await?.1)
}

/// Runs the chat until the user leaves.
pub(crate) async fn run(client: &mut Client, target: Target) -> Result<()> {
    let mut screen = match &target {
        Target::Contact(name) => {
            let (contact, _) = client.history(name, 0).await?;
            Screen {
                name: contact.name.clone(),
                verified: contact.verified,
                group: None,
                history: Vec::new(),
                input: String::new(),
                typing_until: None,
                notice: String::new(),
            }
        }
        Target::Group(name) => {
            let (group, _) = client.group_history(name, 0).await?;
            Screen {
                name: group.name,
                verified: false,
                group: Some(std::collections::HashMap::new()),
                history: Vec::new(),
                input: String::new(),
                typing_until: None,
                notice: String::new(),
            }
        }
    };
    let mut live = client.sync().await.is_ok();
    if !live {
        screen.notice = "offline: retrying".into();
    }
    if screen.group.is_none() {
        let _ = client.mark_read(&screen.name).await;
    }
    screen.history = load(client, &mut screen).await?;

    let mut terminal = ratatui::try_init().context("starting the terminal interface")?;
    let result = chat_loop(client, &mut screen, &mut terminal, &mut live).await;
    ratatui::try_restore().context("restoring the terminal")?;
    result
}

async fn chat_loop(
    client: &mut Client,
    screen: &mut Screen,
    terminal: &mut ratatui::DefaultTerminal,
    live: &mut bool,
) -> Result<()> {
    let mut keys = keys();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut typing_sent: Option<Instant> = None;
    let name = screen.name.clone();
    let name = name.as_str();
    let group = screen.group.is_some();
    loop {
        terminal.draw(|f| draw(f, screen))?;
        let mut changed = false;
        tokio::select! {
            key = keys.recv() => {
                let Some(TermEvent::Key(key)) = key else { continue };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                match key.code {
                    KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Enter => {
                        let text = std::mem::take(&mut screen.input);
                        if !text.trim().is_empty() {
                            let sent = if group {
                                client.send_group_text(name, &text).await
                            } else {
                                client.send_text(name, &text).await
                            };
                            screen.notice = match sent {
                                Ok(_) => String::new(),
                                Err(e) => e.to_string(),
                            };
                            typing_sent = None;
                            changed = true;
                        }
                    }
                    KeyCode::Backspace => {
                        screen.input.pop();
                        if !group && screen.input.is_empty() && typing_sent.take().is_some() {
                            let _ = client.send_control(name, Body::Typing(false)).await;
                        }
                    }
                    KeyCode::Char(c) => {
                        screen.input.push(c);
                        if !group && typing_sent.is_none_or(|t| t.elapsed() > TYPING_EVERY) {
                            typing_sent = Some(Instant::now());
                            let _ = client.send_control(name, Body::Typing(true)).await;
                        }
                    }
                    _ => {}
                }
            }
            push = client.wait_push(), if *live => match push {
                Some(envelope) => match client.handle_push(envelope).await {
                    Ok(events) => {
                        let _ = client.send_receipts().await;
                        for event in events {
                            match event {
                                Event::Typing { contact, typing } if contact == screen.name => {
                                    screen.typing_until = typing.then(|| Instant::now() + TYPING_SHOWN);
                                }
                                Event::Message(m) if !group && m.group.is_none() && m.from == screen.name => {
                                    screen.typing_until = None;
                                    let _ = client.mark_read(name).await;
                                    changed = true;
                                }
                                _ => changed = true,
                            }
                        }
                    }
                    Err(e) => screen.notice = e.to_string(),
                },
                None => {
                    *live = false;
                    screen.notice = "connection lost: reconnecting".into();
                }
            },
            _ = tick.tick() => {
                if *live {
                    if client.flush().await.is_ok_and(|events| !events.is_empty()) {
                        changed = true;
                    }
                } else if client.sync().await.is_ok() {
                    *live = true;
                    screen.notice.clear();
                    if !group {
                        let _ = client.mark_read(name).await;
                    }
                    changed = true;
                }
            }
        }
        if changed {
            screen.history = load(client, screen).await?;
        }
    }
}
