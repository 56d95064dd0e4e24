//! User IDs: UUID strings that also name the node and the core owning the user.
//!
//! A direct message must reach the recipient's core without a global lookup on the message path, so
//! the first byte of every ID is its core's index, and bytes 1 to 4 are its node's tag (random per
//! start; in a cluster it names the node's subject, docs/CLUSTER.md). The rest is random, with the
//! RFC 9562 version-8 ("custom") and variant bits set (bytes 6 and 8), so the ID is a well-formed
//! UUID that old clients treat as opaque.

use std::fmt;

/// A user's ID: 128 bits, core index in the top byte, node tag in the next four.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UserId(u128);

/// Length of the textual form, `8-4-4-4-12` hex digits.
pub const USER_ID_LEN: usize = 36;

impl UserId {
    /// A fresh random ID owned by `core` of the node tagged `node`.
    pub fn new(core: usize, node: u32) -> UserId {
        let mut bytes: [u8; 16] = rand::random();
        bytes[0] = core as u8;
        bytes[1..5].copy_from_slice(&node.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        UserId(u128::from_be_bytes(bytes))
    }

    /// The core that owns this user.
    pub fn core(self) -> usize {
        (self.0 >> 120) as usize
    }

    /// The tag of the node that owns this user.
    pub fn node(self) -> u32 {
        (self.0 >> 88) as u32
    }

    /// The 128 bits, as the cluster layer carries them.
    pub fn to_bits(self) -> u128 {
        self.0
    }

    pub fn from_bits(bits: u128) -> UserId {
        UserId(bits)
    }

    /// Parses the canonical lower- or upper-case text form; anything else is not a userID.
    pub fn parse(text: &str) -> Option<UserId> {
        let bytes = text.as_bytes();
        if bytes.len() != USER_ID_LEN {
            return None;
        }
        let mut value: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b != b'-' {
                    return None;
                }
                continue;
            }
            let digit = (b as char).to_digit(16)?;
            value = (value << 4) | digit as u128;
        }
        Some(UserId(value))
    }

    /// The canonical text form, without allocating.
    pub fn to_text(self) -> [u8; USER_ID_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; USER_ID_LEN];
        let mut nibble = 0;
        for (i, slot) in out.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            *slot = HEX[((self.0 >> (124 - 4 * nibble)) & 0xf) as usize];
            nibble += 1;
        }
        out
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        f.write_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_its_core() {
        for (core, node) in [(0, 0), (1, 0xdead_beef), (7, 1), (255, u32::MAX)] {
            let id = UserId::new(core, node);
            let text = id.to_string();
            assert_eq!(text.len(), USER_ID_LEN);
            assert_eq!(&text[14..15], "8", "version nibble");
            assert_eq!(UserId::parse(&text), Some(id));
            assert_eq!(UserId::parse(&text.to_uppercase()), Some(id));
            assert_eq!(id.core(), core);
            assert_eq!(id.node(), node);
            assert_eq!(
                &text[19..20].chars().next().unwrap().to_digit(16).unwrap() & 0xc,
                8,
                "variant bits"
            );
            assert_eq!(UserId::from_bits(id.to_bits()), id);
        }
    }

    #[test]
    fn rejects_what_is_not_a_uuid() {
        assert_eq!(UserId::parse(""), None);
        assert_eq!(UserId::parse("bob"), None);
        assert_eq!(UserId::parse("0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0"), None);
        assert_eq!(UserId::parse("0138f2c4x5b1e-8d3a-9f4e-2a6b7c8d9e0f"), None);
        assert_eq!(UserId::parse("0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0g"), None);
    }
}
