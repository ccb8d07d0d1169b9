//! `hush`: the hush command-line client.

fn main() {}
