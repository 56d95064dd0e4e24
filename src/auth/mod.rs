//! Signed identity: checking the JWT a `connect` carries when the server is configured with a key
//! (docs/SECURITY.md). A leaf beside [`crate::config`]: the chat layer asks it at login, on the
//! connection's own core, and gets back who the user is and what the token grants.
//!
//! Verification is `jsonwebtoken`'s; this module only pins what it may accept: the configured
//! key's algorithm family (so `alg: none` and algorithm confusion fail), a required `exp` and `sub`,
//! `nbf` when present, and a small leeway for clocks.

pub mod mint;

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthKey;

/// HS256 secrets shorter than this are accepted but warned about: RFC 7518 asks for a key at least
/// as long as the hash (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks login tokens against one key. Cheap to clone: every core holds its own.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// What a valid token says about its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub`: the user's stable ID at the issuer (the userID still names the core).
    pub subject: Box<str>,
    /// The rooms the user may join; `None` is any room.
    pub rooms: Option<Box<[RoomPattern]>>,
    /// Frames per second the issuer grants this user; the server's `--rate-limit` when higher.
    pub rate: Option<u32>,
}

impl Grant {
    /// Whether the `rooms` claim lets the user join `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|pattern| pattern.matches(room)))
    }
}

/// One entry of a `rooms` claim: a room's name, or a prefix ending in `*` (`"ops-*"`; `"*"` is any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl RoomPattern {
    pub fn parse(text: &str) -> RoomPattern {
        match text.strip_suffix('*') {
            Some(prefix) => RoomPattern::Prefix(prefix.into()),
            None => RoomPattern::Exact(text.into()),
        }
    }

    pub fn matches(&self, room: &str) -> bool {
        match self {
            RoomPattern::Exact(name) => **name == *room,
            RoomPattern::Prefix(prefix) => room.starts_with(&**prefix),
        }
    }
}

/// The claims the server reads; `exp`, `nbf` and `sub` are checked by `jsonwebtoken` as well.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    rate: Option<u32>,
}

impl Verifier {
    /// The verifier for `key`, or `None` when auth is off. The error names the problem with the key.
    pub fn from_config(key: &AuthKey, leeway: Duration) -> Result<Option<Verifier>, String> {
        let (key, algorithms) = match key {
            AuthKey::Off => return Ok(None),
            AuthKey::Secret(secret) => {
                let key = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
                (key, AlgorithmFamily::Hmac.algorithms().to_vec())
            }
            AuthKey::PublicKeyPem(pem) => public_key(pem)?,
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Some(Verifier { key, validation }))
    }

    /// Checks `token` for a login as `name`. The error is the reason for `AUTH_FAILED`.
    pub fn verify(&self, token: &str, name: &str) -> Result<Grant, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(&e))?;
        let claims = data.claims;
        if claims
            .name
            .as_deref()
            .is_some_and(|claimed| claimed != name)
        {
            return Err(format!("the token is not for the name `{name}`"));
        }
        Ok(Grant {
            subject: claims.sub.into(),
            rooms: claims
                .rooms
                .map(|rooms| rooms.iter().map(|r| RoomPattern::parse(r)).collect()),
            rate: claims.rate,
        })
    }
}

/// Why a token was refused, in words a user can act on (the crate's own names, such as
/// `ExpiredSignature`, are for programmers).
fn refusal(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => {
            "the token's signature does not match the server's key".into()
        }
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not the server key's".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => format!("invalid token: {error}"),
    }
}

/// A public key in PEM (SPKI, PKCS#1 or a certificate), and the algorithms it may verify: the type
/// is read from the PEM, never from a token's header.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err("--auth-jwt-public-key holds a private key: give the public key".into());
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // The uncompressed point's length says the curve: P-256 for ES256, P-384 for ES384.
        let algorithm = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => {
                return Err(
                    "--auth-jwt-public-key: an EC key on a curve other than P-256 or P-384".into(),
                )
            }
        };
        return Ok((key, vec![algorithm]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, AlgorithmFamily::Rsa.algorithms().to_vec()));
    }
    Err("--auth-jwt-public-key is not a PEM RSA, EC (P-256, P-384) or Ed25519 public key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_patterns_are_names_or_prefixes() {
        let grant = Grant {
            subject: "u1".into(),
            rooms: Some(["lobby", "ops-*"].map(RoomPattern::parse).into()),
            rate: None,
        };
        assert!(grant.may_join("lobby") && grant.may_join("ops-") && grant.may_join("ops-east"));
        assert!(!grant.may_join("lobby2") && !grant.may_join("ops") && !grant.may_join("dev"));
        let any = Grant {
            rooms: Some([RoomPattern::parse("*")].into()),
            ..grant.clone()
        };
        assert!(any.may_join("anything"));
        assert!(Grant {
            rooms: None,
            ..grant
        }
        .may_join("dev"));
    }

    #[test]
    fn a_minted_token_verifies_and_keys_are_typed_by_their_pem() {
        use clap::Parser;
        let args = mint::TokenArgs::parse_from([
            "token", "--secret", "s", "--sub", "u1", "--name", "bot", "--rooms", "a,ops-*",
            "--rate", "500",
        ]);
        let token = mint::token(&args).unwrap();
        let key = AuthKey::Secret(b"s".to_vec());
        let verifier = Verifier::from_config(&key, Duration::ZERO)
            .unwrap()
            .unwrap();
        let grant = verifier.verify(&token, "bot").unwrap();
        assert_eq!((&*grant.subject, grant.rate), ("u1", Some(500)));
        assert!(grant.may_join("ops-1") && !grant.may_join("b"));
        assert!(verifier.verify(&token, "not-bot").is_err());

        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"));
            AuthKey::PublicKeyPem(std::fs::read(path).unwrap())
        };
        for (name, algorithm) in [
            ("es256-public.pem", Algorithm::ES256),
            ("ed25519-public.pem", Algorithm::EdDSA),
            ("rsa-public.pem", Algorithm::RS256),
        ] {
            let verifier = Verifier::from_config(&fixture(name), Duration::ZERO);
            let algorithms = verifier.unwrap().unwrap().validation.algorithms;
            assert_eq!(algorithms[0], algorithm, "{name}");
        }
        let private = Verifier::from_config(&fixture("es256-private.pem"), Duration::ZERO);
        assert!(private.unwrap_err().contains("private key"));
        let garbage = AuthKey::PublicKeyPem(b"not a key".to_vec());
        assert!(Verifier::from_config(&garbage, Duration::ZERO).is_err());
    }
}
