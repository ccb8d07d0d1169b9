//! Shared rules for persisted state records (`spec/state.md`).

use crate::DecodeError;

/// The state format version this build writes and reads (exactly).
pub(crate) const STATE_VERSION: u32 = 1;

/// Rejects records from an unknown (newer, or unset) format version.
pub(crate) fn check_version(found: u32) -> Result<(), DecodeError> {
    if found == STATE_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion {
            found,
            supported: STATE_VERSION,
        })
    }
}
