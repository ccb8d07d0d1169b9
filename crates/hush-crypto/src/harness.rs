//! Action harness (filled below).
