//! The signed device list of a multi-device account (`spec/devices.md`,
//! "The device list"): which device keys speak for an account key, signed
//! by the account key, each device consenting with its own key.

use hush_proto::wire;
use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::error::DecodeError;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::primitives::{fixed, hkdf};

/// The most devices an account has, the primary included.
pub const MAX_DEVICES: usize = 8;
/// The longest device name, in bytes of UTF-8.
pub const MAX_NAME: usize = 64;

const LIST_CONTEXT: &[u8] = b"hush-device-list-v1";
const CONSENT_CONTEXT: &[u8] = b"hush-device-v1";

/// Why a device list is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceListError {
    /// The account key's signature over the list does not verify.
    #[error("the device list is not signed by its account")]
    BadSignature,
    /// A device's consent does not verify under its key.
    #[error("a device did not consent to this account")]
    BadConsent,
    /// The first device is not the account key itself.
    #[error("the first device is not the account's primary")]
    PrimaryNotFirst,
    /// A device key appears twice.
    #[error("a device appears twice")]
    Duplicate,
    /// No device, or more than [`MAX_DEVICES`].
    #[error("a device list has 1 to {MAX_DEVICES} devices")]
    Count,
    /// A name is empty, over [`MAX_NAME`] bytes, or has control
    /// characters.
    #[error("device names are 1 to {MAX_NAME} bytes of printable UTF-8")]
    BadName,
    /// The device to remove is the primary, or not in the list.
    #[error("no such linked device")]
    NoSuchDevice,
    /// The version cannot go higher.
    #[error("the device list version is exhausted")]
    VersionExhausted,
}

/// One device of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The device's identity key.
    pub key: IdentityKey,
    /// Its name, shown to the account's own devices.
    pub name: String,
    /// Ed25519(key, "hush-device-v1" || account || key).
    pub consent: [u8; 64],
}

impl Device {
    /// The device `device` agreeing to speak for `account`, named `name`.
    pub fn consent(
        device: &IdentityKeyPair,
        account: &IdentityKey,
        name: &str,
    ) -> Result<Self, DeviceListError> {
        check_name(name)?;
        let key = device.public().clone();
        Ok(Self {
            consent: device.sign(&consent_layout(account, &key)),
            key,
            name: name.to_string(),
        })
    }
}

/// An account's device list, as stored and sent; [`Self::verify`] checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// The account key.
    pub account: IdentityKey,
    /// +1 at every change, from 1.
    pub version: u64,
    /// The devices, the primary first.
    pub devices: Vec<Device>,
    /// Ed25519(account, list layout).
    pub signature: [u8; 64],
}

impl DeviceList {
    /// The list of a new account: its primary alone, version 1.
    pub fn first(primary: &IdentityKeyPair, name: &str) -> Result<Self, DeviceListError> {
        let device = Device::consent(primary, primary.public(), name)?;
        Self::signed(primary, 1, vec![device])
    }

    /// The next version with `device` added (signed by the primary).
    pub fn with_device(
        &self,
        primary: &IdentityKeyPair,
        device: Device,
    ) -> Result<Self, DeviceListError> {
        let mut devices = self.devices.clone();
        devices.push(device);
        Self::signed(primary, self.next_version()?, devices)
    }

    /// The next version without the linked device `key`.
    pub fn without_device(
        &self,
        primary: &IdentityKeyPair,
        key: &IdentityKey,
    ) -> Result<Self, DeviceListError> {
        if key == primary.public() || !self.devices.iter().any(|d| d.key == *key) {
            return Err(DeviceListError::NoSuchDevice);
        }
        let devices = self
            .devices
            .iter()
            .filter(|d| d.key != *key)
            .cloned()
            .collect();
        Self::signed(primary, self.next_version()?, devices)
    }

    fn next_version(&self) -> Result<u64, DeviceListError> {
        self.version
            .checked_add(1)
            .ok_or(DeviceListError::VersionExhausted)
    }

    /// A list of `devices` (the primary first) at `version`, signed by
    /// the primary. [`Self::with_device`] and [`Self::without_device`]
    /// are the usual way; this one is for tests and restores.
    pub fn signed(
        primary: &IdentityKeyPair,
        version: u64,
        devices: Vec<Device>,
    ) -> Result<Self, DeviceListError> {
        let mut list = Self {
            account: primary.public().clone(),
            version,
            devices,
            signature: [0; 64],
        };
        list.check_shape()?;
        list.signature = primary.sign(&list.layout());
        Ok(list)
    }

    /// Checks every rule of `spec/devices.md`: the account's signature,
    /// each device's consent, the primary first, no duplicates, the
    /// count and the names.
    pub fn verify(&self) -> Result<(), DeviceListError> {
        self.check_shape()?;
        if !self.account.verify(&self.layout(), &self.signature) {
            return Err(DeviceListError::BadSignature);
        }
        for device in &self.devices {
            if !device
                .key
                .verify(&consent_layout(&self.account, &device.key), &device.consent)
            {
                return Err(DeviceListError::BadConsent);
            }
        }
        Ok(())
    }

    fn check_shape(&self) -> Result<(), DeviceListError> {
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return Err(DeviceListError::Count);
        }
        if self.devices[0].key != self.account {
            return Err(DeviceListError::PrimaryNotFirst);
        }
        for (i, device) in self.devices.iter().enumerate() {
            check_name(&device.name)?;
            if self.devices[..i].iter().any(|d| d.key == device.key) {
                return Err(DeviceListError::Duplicate);
            }
        }
        Ok(())
    }

    /// The signed layout (`spec/devices.md`).
    fn layout(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.devices.len() * 170);
        out.extend_from_slice(LIST_CONTEXT);
        out.extend_from_slice(self.account.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        // At most MAX_DEVICES, checked before any layout is made.
        out.push(self.devices.len() as u8);
        for d in &self.devices {
            out.extend_from_slice(d.key.as_bytes());
            // At most MAX_NAME bytes, likewise.
            out.push(d.name.len() as u8);
            out.extend_from_slice(d.name.as_bytes());
            out.extend_from_slice(&d.consent);
        }
        out
    }

    /// Whether `key` is one of the devices.
    pub fn contains(&self, key: &IdentityKey) -> bool {
        self.devices.iter().any(|d| d.key == *key)
    }

    /// Encodes as a `hush.wire.v1.DeviceList`.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::DeviceList {
            account: self.account.as_bytes().to_vec(),
            version: self.version,
            devices: self
                .devices
                .iter()
                .map(|d| wire::Device {
                    key: d.key.as_bytes().to_vec(),
                    name: d.name.clone(),
                    consent: d.consent.to_vec(),
                })
                .collect(),
            signature: self.signature.to_vec(),
        }
        .encode_to_vec()
    }
}

impl TryFrom<&[u8]> for DeviceList {
    type Error = DecodeError;

    /// Decodes the fields; [`DeviceList::verify`] checks the rules.
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let proto = wire::DeviceList::decode(bytes)?;
        Ok(Self {
            account: IdentityKey::decode("account", &proto.account)?,
            version: proto.version,
            devices: proto
                .devices
                .iter()
                .map(|d| {
                    Ok(Device {
                        key: IdentityKey::decode("devices.key", &d.key)?,
                        name: d.name.clone(),
                        consent: fixed("devices.consent", &d.consent)?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            signature: fixed("signature", &proto.signature)?,
        })
    }
}

/// Crockford's base32 alphabet.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a typed link code is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkCodeError {
    /// Not 16 symbols (dashes and spaces aside).
    #[error("a link code has 16 characters (dashes and spaces aside)")]
    BadLength,
    /// A character that is not in the code's alphabet.
    #[error("{0:?} is not a link code character")]
    BadCharacter(char),
}

/// The one-time link code of `spec/devices.md`, "Linking": 10 random
/// bytes, typed as 16 characters of Crockford base32 in groups of four.
/// It is the secret of the link: never `Copy`, wiped on drop, `Debug`
/// prints `..`.
pub struct LinkCode(Zeroizing<[u8; 10]>);

/// The code's bytes wipe themselves when it is dropped.
impl zeroize::ZeroizeOnDrop for LinkCode {}
const _: fn(&LinkCode) = |code| crate::secret::wipes_on_drop(&code.0);

impl core::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LinkCode(..)")
    }
}

impl LinkCode {
    /// A fresh code. Draws 10 bytes.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut secret = Zeroizing::new([0u8; 10]);
        rng.fill_bytes(secret.as_mut());
        Self(secret)
    }

    /// The code as shown: `7K2M-9QXD-4HAB-R1TE`.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut bits = Zeroizing::new(u128::from_be_bytes({
            let mut wide = [0u8; 16];
            wide[6..].copy_from_slice(self.0.as_ref());
            wide
        }));
        let mut symbols = Zeroizing::new([0u8; 16]);
        for symbol in symbols.iter_mut().rev() {
            *symbol = CROCKFORD[(*bits & 31) as usize];
            *bits >>= 5;
        }
        let mut text = Zeroizing::new(String::with_capacity(19));
        for (i, symbol) in symbols.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                text.push('-');
            }
            text.push(char::from(*symbol));
        }
        text
    }

    /// Reads a typed code: case does not matter, dashes and spaces are
    /// ignored, and `I`/`L` read as `1`, `O` as `0` (Crockford).
    pub fn parse(text: &str) -> Result<Self, LinkCodeError> {
        let mut bits = Zeroizing::new(0u128);
        let mut count = 0;
        for c in text.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
            let value = match c.to_ascii_uppercase() {
                'I' | 'L' => 1,
                'O' => 0,
                upper => CROCKFORD
                    .iter()
                    .position(|s| char::from(*s) == upper)
                    .ok_or(LinkCodeError::BadCharacter(c))?,
            };
            count += 1;
            if count > 16 {
                return Err(LinkCodeError::BadLength);
            }
            *bits = (*bits << 5) | value as u128;
        }
        if count != 16 {
            return Err(LinkCodeError::BadLength);
        }
        let mut secret = Zeroizing::new([0u8; 10]);
        secret.copy_from_slice(&bits.to_be_bytes()[6..]);
        Ok(Self(secret))
    }

    /// The relay mailbox the link meets in:
    /// `HKDF(salt = none, ikm = code, info = "hush-link-v1 mailbox")`.
    pub fn mailbox(&self) -> [u8; 32] {
        hkdf::<32>(None, self.0.as_ref(), &[b"hush-link-v1 mailbox"]).0
    }

    /// The key the link's messages are sealed with:
    /// `HKDF(salt = none, ikm = code, info = "hush-link-v1 key")`.
    pub fn key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hkdf::<32>(None, self.0.as_ref(), &[b"hush-link-v1 key"]).0)
    }
}

fn consent_layout(account: &IdentityKey, device: &IdentityKey) -> Vec<u8> {
    [CONSENT_CONTEXT, account.as_bytes(), device.as_bytes()].concat()
}

fn check_name(name: &str) -> Result<(), DeviceListError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        Err(DeviceListError::BadName)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn keys(n: usize) -> Vec<IdentityKeyPair> {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        (0..n)
            .map(|_| IdentityKeyPair::generate(&mut rng))
            .collect()
    }

    #[test]
    fn devices_are_linked_and_unlinked_by_the_primary() {
        let k = keys(3);
        let first = DeviceList::first(&k[0], "phone").expect("first");
        assert_eq!(first.verify(), Ok(()));
        let laptop = Device::consent(&k[1], k[0].public(), "laptop").expect("consent");
        let second = first.with_device(&k[0], laptop).expect("linked");
        assert_eq!((second.version, second.devices.len()), (2, 2));
        assert_eq!(second.verify(), Ok(()));
        assert_eq!(
            DeviceList::try_from(second.to_bytes().as_slice()),
            Ok(second.clone())
        );
        let third = second
            .without_device(&k[0], k[1].public())
            .expect("unlinked");
        assert_eq!((third.version, third.devices.len()), (3, 1));
        assert!(!third.contains(k[1].public()));
        assert_eq!(
            third.without_device(&k[0], k[0].public()),
            Err(DeviceListError::NoSuchDevice)
        );
    }

    #[test]
    fn forged_lists_are_refused() {
        let k = keys(4);
        let laptop = Device::consent(&k[1], k[0].public(), "laptop").expect("consent");
        let list = DeviceList::first(&k[0], "phone")
            .and_then(|l| l.with_device(&k[0], laptop.clone()))
            .expect("list");

        // Someone else signs the account's list.
        let mut forged = list.clone();
        forged.signature = k[2].sign(&list.layout());
        assert_eq!(forged.verify(), Err(DeviceListError::BadSignature));
        // A changed version, name or device after signing.
        let mut bumped = list.clone();
        bumped.version += 1;
        assert_eq!(bumped.verify(), Err(DeviceListError::BadSignature));
        let mut renamed = list.clone();
        renamed.devices[1].name = "desktop".into();
        assert_eq!(renamed.verify(), Err(DeviceListError::BadSignature));
        // The account lists a device that never consented (its consent
        // was for another account).
        let elsewhere = Device::consent(&k[3], k[2].public(), "theirs").expect("consent");
        let stolen = list.with_device(&k[0], elsewhere).expect("signed");
        assert_eq!(stolen.verify(), Err(DeviceListError::BadConsent));
        // Shape rules hold even for the primary's own signature.
        assert_eq!(
            list.with_device(&k[0], laptop).err(),
            Some(DeviceListError::Duplicate)
        );
        let mut second_first = list.clone();
        second_first.devices.swap(0, 1);
        assert_eq!(second_first.verify(), Err(DeviceListError::PrimaryNotFirst));
        assert_eq!(
            Device::consent(&k[2], k[0].public(), ""),
            Err(DeviceListError::BadName)
        );
    }

    #[test]
    fn link_codes_survive_typing() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        for _ in 0..200 {
            let code = LinkCode::generate(&mut rng);
            let text = code.to_text();
            assert_eq!(text.len(), 19);
            assert_eq!(text.matches('-').count(), 3);
            let typed = text
                .to_lowercase()
                .replace('-', " ")
                .replace('1', "l")
                .replace('0', "o");
            let back = LinkCode::parse(&typed).expect("parses");
            assert_eq!(back.0, code.0);
            assert_eq!(back.mailbox(), code.mailbox());
            assert_ne!(code.mailbox(), *code.key());
        }
        assert_eq!(
            LinkCode::parse("7K2M-9QXD-4HAB-R1T").err(),
            Some(LinkCodeError::BadLength)
        );
        assert_eq!(
            LinkCode::parse("7K2M-9QXD-4HAB-R1TEE").err(),
            Some(LinkCodeError::BadLength)
        );
        assert_eq!(
            LinkCode::parse("7K2M-9QXD-4HAB-R1TU").err(),
            Some(LinkCodeError::BadCharacter('U'))
        );
        assert_eq!(
            format!("{:?}", LinkCode::generate(&mut rng)),
            "LinkCode(..)"
        );
    }

    #[test]
    fn at_most_max_devices() {
        let k = keys(MAX_DEVICES + 1);
        let mut list = DeviceList::first(&k[0], "primary").expect("first");
        for (i, key) in k.iter().enumerate().skip(1) {
            let device = Device::consent(key, k[0].public(), &format!("d{i}")).expect("consent");
            let next = list.with_device(&k[0], device);
            if i < MAX_DEVICES {
                list = next.expect("room");
            } else {
                assert_eq!(next.err(), Some(DeviceListError::Count));
            }
        }
        assert_eq!(list.devices.len(), MAX_DEVICES);
    }
}
