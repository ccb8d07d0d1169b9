//! `hush-vectors generate DIR` writes spec/vectors; `hush-vectors check
//! DIR` checks hush against them and prints one line per vector.

use std::path::PathBuf;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "spec/vectors".into()));
    match command.as_str() {
        "generate" => {
            hush_vectors::write_all(&dir)?;
            println!("wrote vectors to {}", dir.display());
            Ok(())
        }
        "check" => {
            let outcomes = hush_vectors::check_all(&dir)?;
            let mut failed = 0;
            for outcome in &outcomes {
                match &outcome.failure {
                    None => println!("pass {}", outcome.vector),
                    Some(why) => {
                        failed += 1;
                        println!("FAIL {}: {why}", outcome.vector);
                    }
                }
            }
            println!("{} passed, {failed} failed", outcomes.len() - failed);
            if failed > 0 {
                bail!("{failed} vectors failed");
            }
            Ok(())
        }
        _ => bail!("usage: hush-vectors generate|check [DIR]"),
    }
}
