//! Secret newtypes: zeroized on drop, never `Copy`, `Debug` redacted.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Declares a 32-byte secret newtype with redacted `Debug`.
macro_rules! secret32 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub(crate) struct $name(pub(crate) [u8; 32]);

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }

        impl $name {
            /// Hands out the secret bytes.
            pub(crate) fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }
    };
}

secret32!(
    /// A Double Ratchet root key.
    RootKey
);
secret32!(
    /// A symmetric-ratchet chain key (pairwise or sender key).
    ChainKey
);
secret32!(
    /// A single message key.
    MessageKey
);
secret32!(
    /// A Diffie-Hellman output.
    SharedSecret
);

/// Zeroizing fixed-size scratch buffer for derived key material.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Okm<const N: usize>(pub(crate) [u8; N]);

/// Compile-time proof that a field holding secret bytes wipes itself on
/// drop. A type made of several parts implements the [`ZeroizeOnDrop`]
/// marker by hand only next to a check that passes each of its secret
/// fields here, so changing such a field to a type that does not wipe
/// itself stops the build (`audit/THREAT_MODEL.md`, "Secrets in memory").
pub(crate) fn wipes_on_drop<T: ZeroizeOnDrop + ?Sized>(_: &T) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_newtype_wipes_itself_on_drop() {
        wipes_on_drop(&RootKey([7; 32]));
        wipes_on_drop(&ChainKey([7; 32]));
        wipes_on_drop(&MessageKey([7; 32]));
        wipes_on_drop(&SharedSecret([7; 32]));
        wipes_on_drop(&Okm([7u8; 44]));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", RootKey([7; 32])), "RootKey(..)");
        assert_eq!(format!("{:?}", ChainKey([7; 32])), "ChainKey(..)");
        assert_eq!(format!("{:?}", MessageKey([7; 32])), "MessageKey(..)");
        assert_eq!(format!("{:?}", SharedSecret([7; 32])), "SharedSecret(..)");
    }
}
