//! `hush-conformance`: checks an implementation of hush against
//! `spec/vectors/` and a relay against `spec/relay.md`
//! (`spec/conformance.md`).
//!
//! - `hush-conformance vectors [--dir DIR] [--timeout SECONDS] [--impl
//!   COMMAND ARGS...]`: runs every vector against hush itself, or against
//!   COMMAND speaking the JSON-lines protocol on stdin/stdout; one
//!   pass/fail line per vector.
//! - `hush-conformance serve`: hush's own implementation of that protocol.
//! - `hush-conformance relay ADDR --pin FP [--json] [--timeout SECS]
//!   [--limit KEY=VALUE]... [--only PREFIX]...`: a scripted session
//!   against a running relay (`spec/conformance-relay.md`).

mod relay;
mod vectors;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("vectors") => vectors::main(&args[1..]),
        Some("serve") => vectors::serve(),
        Some("relay") => relay::main(&args[1..]),
        _ => bail!(
            "usage: hush-conformance vectors [--dir DIR] [--timeout SECONDS] [--impl COMMAND ARGS...]\n       \
             hush-conformance serve\n       \
             hush-conformance relay ADDR --pin FP [--json] [--timeout SECS] [--limit KEY=VALUE]... [--only PREFIX]..."
        ),
    }
}
