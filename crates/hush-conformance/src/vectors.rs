//! Vector conformance (placeholder).

use anyhow::{Result, bail};

pub(crate) fn main(_args: &[String]) -> Result<()> {
    bail!("not yet implemented")
}

pub(crate) fn serve() -> Result<()> {
    bail!("not yet implemented")
}
