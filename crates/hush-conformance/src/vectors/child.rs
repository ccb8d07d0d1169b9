//! The implementation under test: a child process that answers one JSON
//! line on stdout per request line on stdin (`spec/conformance.md`,
//! "Protocol").
//!
//! Reading and writing happen on two threads, so a child that stops
//! reading or answering cannot block the checker: every request waits at
//! most the timeout. After a timeout, an exit or an answer that breaks
//! the protocol, the child is killed and the next request starts a new
//! one.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// A running child and the two channels to its threads.
struct Running {
    child: Child,
    requests: Sender<String>,
    answers: Receiver<String>,
}

/// The implementation under test.
pub(crate) struct Implementation {
    command: Vec<OsString>,
    timeout: Duration,
    running: Option<Running>,
}

impl Implementation {
    /// Starts `command` (program, then arguments); each request waits at
    /// most `timeout` for its answer.
    pub(crate) fn start(command: Vec<OsString>, timeout: Duration) -> Result<Self> {
        let mut implementation = Self {
            command,
            timeout,
            running: None,
        };
        implementation.running = Some(implementation.spawn()?);
        Ok(implementation)
    }

    fn spawn(&self) -> Result<Running> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| anyhow!("no implementation command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                let shown: Vec<_> = self.command.iter().map(|a| a.to_string_lossy()).collect();
                format!("starting the implementation `{}`", shown.join(" "))
            })?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => {
                stop(&mut child);
                bail!("the implementation's stdin or stdout is not a pipe");
            }
        };
        let (requests, to_write) = mpsc::channel::<String>();
        thread::spawn(move || write_lines(stdin, &to_write));
        let (answer, answers) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if answer.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            requests,
            answers,
        })
    }

    /// Sends `request` (which has an `id`) and returns the answer object
    /// with the same `id`, or why there is none. On any failure the child
    /// is stopped; the next call starts it again.
    pub(crate) fn ask(&mut self, request: &Value) -> Result<Value, String> {
        let result = self.exchange(request);
        if result.is_err()
            && let Some(mut running) = self.running.take()
        {
            stop(&mut running.child);
        }
        result
    }

    fn exchange(&mut self, request: &Value) -> Result<Value, String> {
        let running = match &mut self.running {
            Some(running) => running,
            None => self
                .running
                .insert(self.spawn().map_err(|e| format!("{e:#}"))?),
        };
        running
            .requests
            .send(request.to_string())
            .map_err(|_| "the implementation stopped reading its input".to_string())?;
        let line = match running.answers.recv_timeout(self.timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no answer within {} s (timeout)",
                    self.timeout.as_secs_f32()
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(match exit_within(&mut running.child, self.timeout) {
                    Some(status) => {
                        format!("the implementation exited ({status}) without answering")
                    }
                    None => "the implementation closed its output without answering".into(),
                });
            }
        };
        let answer: Value = serde_json::from_str(line.trim_end())
            .map_err(|e| format!("the answer is not JSON ({e}): {}", excerpt(&line)))?;
        if !answer.is_object() {
            return Err(format!(
                "the answer is not a JSON object: {}",
                excerpt(&line)
            ));
        }
        if answer.get("id") != request.get("id") {
            return Err(format!(
                "the answer has id {}, the request {}",
                answer.get("id").unwrap_or(&Value::Null),
                request.get("id").unwrap_or(&Value::Null)
            ));
        }
        Ok(answer)
    }
}

impl Drop for Implementation {
    /// Closes the child's input, gives it the timeout to exit, then kills
    /// it.
    fn drop(&mut self) {
        if let Some(Running {
            mut child,
            requests,
            answers,
        }) = self.running.take()
        {
            drop(requests);
            drop(answers);
            if exit_within(&mut child, self.timeout).is_none() {
                stop(&mut child);
            }
        }
    }
}

/// Waits at most `timeout` for the child to exit.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

fn write_lines(mut stdin: ChildStdin, lines: &Receiver<String>) {
    for line in lines {
        let written = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if written.is_err() {
            break;
        }
    }
}

fn stop(child: &mut Child) {
    // Either may fail only because the child already exited.
    let _ = child.kill();
    let _ = child.wait();
}

/// The start of a line, for error messages.
fn excerpt(line: &str) -> String {
    let mut short: String = line.chars().take(80).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    short
}
