//! Printable addresses (`spec/identity.md`, "Address").
//!
//! `address = "hush" || base32(0x01 || ed25519_public || checksum)` where
//! `checksum = SHA-256("hush-address-v1" || version || ed25519_public)[0..4]`
//! and base32 is RFC 4648's alphabet in lower case without padding:
//! 37 bytes become 60 characters, 64 with the prefix. Parsing ignores
//! case, spaces and `-`; a typo fails the checksum with probability
//! 1 - 2^-32.

use sha2::{Digest, Sha256};

use crate::error::AddressError;
use crate::identity::IdentityKey;
use crate::primitives::ct_eq;

const PREFIX: &str = "hush";
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 32 + 4;
const ENCODED_LEN: usize = (PAYLOAD_LEN * 8).div_ceil(5);
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A checked printable address: the encoding of an identity key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    key: IdentityKey,
}

impl Address {
    /// The identity key this address names.
    pub fn identity(&self) -> &IdentityKey {
        &self.key
    }
}

impl From<&IdentityKey> for Address {
    fn from(key: &IdentityKey) -> Self {
        Self { key: key.clone() }
    }
}

fn checksum(version: u8, key: &[u8; 32]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(b"hush-address-v1")
        .chain_update([version])
        .chain_update(key)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = VERSION;
        payload[1..33].copy_from_slice(self.key.as_bytes());
        payload[33..].copy_from_slice(&checksum(VERSION, self.key.as_bytes()));
        f.write_str(PREFIX)?;
        let mut acc: u32 = 0;
        let mut bits = 0;
        for byte in payload {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                let index = ((acc >> bits) & 31) as usize;
                write!(f, "{}", char::from(ALPHABET[index]))?;
            }
        }
        if bits > 0 {
            let index = ((acc << (5 - bits)) & 31) as usize;
            write!(f, "{}", char::from(ALPHABET[index]))?;
        }
        Ok(())
    }
}

impl core::fmt::Debug for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Address({self})")
    }
}

impl core::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let rest = match trimmed.get(..PREFIX.len()) {
            Some(head) if head.eq_ignore_ascii_case(PREFIX) => &trimmed[PREFIX.len()..],
            _ => return Err(AddressError::BadPrefix),
        };
        let mut values = Vec::with_capacity(ENCODED_LEN);
        for (offset, ch) in rest.char_indices() {
            if ch == '-' || ch == ' ' {
                continue;
            }
            let lower = ch.to_ascii_lowercase();
            match ALPHABET.iter().position(|&a| char::from(a) == lower) {
                Some(v) => values.push(v as u32),
                None => {
                    return Err(AddressError::BadCharacter {
                        position: trimmed.len() - rest.len() + offset,
                    });
                }
            }
        }
        if values.len() != ENCODED_LEN {
            return Err(AddressError::BadLength {
                expected: ENCODED_LEN,
                found: values.len(),
            });
        }
        let mut payload = [0u8; PAYLOAD_LEN];
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut out = 0;
        for value in values {
            acc = (acc << 5) | value;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if out < PAYLOAD_LEN {
                    payload[out] = (acc >> bits) as u8;
                }
                out += 1;
            }
            acc &= (1 << bits) - 1;
        }
        // The 4 trailing bits of the last character must be zero, or two
        // spellings would name one address.
        if acc != 0 {
            return Err(AddressError::BadChecksum);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[1..33]);
        if !ct_eq(&payload[33..], &checksum(payload[0], &key)) {
            return Err(AddressError::BadChecksum);
        }
        if payload[0] != VERSION {
            return Err(AddressError::UnsupportedVersion(payload[0]));
        }
        Ok(Self {
            key: IdentityKey::from_bytes(&key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;

    fn sample() -> Address {
        Address::from(IdentityKeyPair::from_seed(&[4; 32]).public())
    }

    #[test]
    fn round_trip() {
        let address = sample();
        let text = address.to_string();
        assert_eq!(text.len(), 4 + ENCODED_LEN);
        assert_eq!(text.parse::<Address>(), Ok(address.clone()));
        assert_eq!(text.to_uppercase().parse::<Address>(), Ok(address.clone()));
        let spaced: String = text
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                if i > 4 && i % 4 == 0 {
                    vec!['-', c]
                } else {
                    vec![c]
                }
            })
            .collect();
        assert_eq!(spaced.parse::<Address>(), Ok(address));
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let text = sample().to_string();
        for position in 4..text.len() {
            for replacement in ALPHABET.iter().map(|&b| char::from(b)) {
                let mut chars: Vec<char> = text.chars().collect();
                if chars[position] == replacement {
                    continue;
                }
                chars[position] = replacement;
                let typo: String = chars.into_iter().collect();
                assert!(
                    typo.parse::<Address>().is_err(),
                    "typo at {position} accepted"
                );
            }
        }
    }

    #[test]
    fn errors() {
        let text = sample().to_string();
        assert_eq!("nope".parse::<Address>(), Err(AddressError::BadPrefix));
        assert_eq!("".parse::<Address>(), Err(AddressError::BadPrefix));
        assert_eq!(
            format!("{}1", &text[..10]).parse::<Address>(),
            Err(AddressError::BadCharacter { position: 10 })
        );
        assert!(matches!(
            text[..text.len() - 1].parse::<Address>(),
            Err(AddressError::BadLength { .. })
        ));
        assert!(matches!(
            "hushé".parse::<Address>(),
            Err(AddressError::BadCharacter { position: 4 })
        ));
    }
}
