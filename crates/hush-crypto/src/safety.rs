//! Safety numbers (`spec/safety-numbers.md`), after Signal's numeric
//! fingerprints.
//!
//! ```text
//! h_0     = SHA-512(0x00 0x00 || IK || "hush-safety-number")
//! h_i+1   = SHA-512(h_i || IK)                  for i < 5200
//! digits  = for each 5-byte chunk c of h_5200[0..30]: u40_be(c) mod 100000, 5 digits
//! number  = the two 30-digit strings, the smaller first      (60 digits)
//! scan    = 0x00 || h_5200(local)[0..32] || h_5200(remote)[0..32]
//! ```

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::DecodeError;
use crate::identity::IdentityKey;

/// SHA-512 iterations per fingerprint.
pub const ITERATIONS: u32 = 5200;

/// Fingerprint format version.
pub const VERSION: u8 = 0;

const LABEL: &[u8] = b"hush-safety-number";

fn fingerprint(key: &IdentityKey) -> [u8; 64] {
    let mut hash = Sha512::new()
        .chain_update([0u8, VERSION])
        .chain_update(key.as_bytes())
        .chain_update(LABEL)
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key.as_bytes())
            .finalize();
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(&hash);
    out
}

fn digits(hash: &[u8; 64]) -> String {
    let mut out = String::with_capacity(30);
    for chunk in hash[..30].chunks_exact(5) {
        let value = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        out.push_str(&format!("{:05}", value % 100_000));
    }
    out
}

/// The safety number of a pair of identities, the same on both sides.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    digits: String,
    scannable: ScannableSafetyNumber,
}

impl core::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SafetyNumber({})", self.digits)
    }
}

impl SafetyNumber {
    /// Computes the safety number between our identity and a contact's.
    pub fn new(local: &IdentityKey, remote: &IdentityKey) -> Self {
        let local_hash = fingerprint(local);
        let remote_hash = fingerprint(remote);
        let (a, b) = (digits(&local_hash), digits(&remote_hash));
        let digits = if a <= b { a + &b } else { b + &a };
        let mut scannable = ScannableSafetyNumber {
            local: [0u8; 32],
            remote: [0u8; 32],
        };
        scannable.local.copy_from_slice(&local_hash[..32]);
        scannable.remote.copy_from_slice(&remote_hash[..32]);
        Self { digits, scannable }
    }

    /// The 60 digits.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The 60 digits in twelve groups of five, for display.
    pub fn display_groups(&self) -> String {
        let groups: Vec<&str> = (0..12).map(|i| &self.digits[i * 5..i * 5 + 5]).collect();
        groups.join(" ")
    }

    /// Compares with digits a person read from the other device, in
    /// constant time. White space is ignored.
    pub fn matches_digits(&self, typed: &str) -> bool {
        let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        typed.len() == self.digits.len()
            && bool::from(typed.as_bytes().ct_eq(self.digits.as_bytes()))
    }

    /// The form shown as a QR code.
    pub fn scannable(&self) -> &ScannableSafetyNumber {
        &self.scannable
    }
}

/// The scannable form: both fingerprints, ours first.
#[derive(Clone, PartialEq, Eq)]
pub struct ScannableSafetyNumber {
    local: [u8; 32],
    remote: [u8; 32],
}

impl core::fmt::Debug for ScannableSafetyNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ScannableSafetyNumber(..)")
    }
}

impl ScannableSafetyNumber {
    /// The 65 bytes to encode in a QR code.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = VERSION;
        out[1..33].copy_from_slice(&self.local);
        out[33..].copy_from_slice(&self.remote);
        out
    }

    /// Whether a code scanned from the contact's device shows the same
    /// pair of identities (its local is our remote and vice versa).
    /// Constant time.
    pub fn matches(&self, scanned: &ScannableSafetyNumber) -> bool {
        bool::from(self.local.ct_eq(&scanned.remote) & self.remote.ct_eq(&scanned.local))
    }
}

impl TryFrom<&[u8]> for ScannableSafetyNumber {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; 65] = bytes.try_into().map_err(|_| DecodeError::BadLength {
            field: "scannable safety number",
            expected: 65,
            found: bytes.len(),
        })?;
        if bytes[0] != VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: u32::from(bytes[0]),
                supported: u32::from(VERSION),
            });
        }
        let mut local = [0u8; 32];
        let mut remote = [0u8; 32];
        local.copy_from_slice(&bytes[1..33]);
        remote.copy_from_slice(&bytes[33..]);
        Ok(Self { local, remote })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;

    #[test]
    fn both_sides_agree_and_differ_per_pair() {
        let a = IdentityKeyPair::from_seed(&[1; 32]);
        let b = IdentityKeyPair::from_seed(&[2; 32]);
        let c = IdentityKeyPair::from_seed(&[3; 32]);
        let ab = SafetyNumber::new(a.public(), b.public());
        let ba = SafetyNumber::new(b.public(), a.public());
        assert_eq!(ab.digits(), ba.digits());
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|d| d.is_ascii_digit()));
        assert!(ab.scannable().matches(ba.scannable()));
        assert!(ab.matches_digits(&ba.display_groups()));
        let ac = SafetyNumber::new(a.public(), c.public());
        assert_ne!(ab.digits(), ac.digits());
        assert!(!ab.scannable().matches(ac.scannable()));
        assert!(!ab.scannable().matches(ab.scannable()));
        let scanned =
            ScannableSafetyNumber::try_from(&ba.scannable().to_bytes()[..]).expect("decodes");
        assert!(ab.scannable().matches(&scanned));
        assert!(ScannableSafetyNumber::try_from(&[0u8; 64][..]).is_err());
    }
}
