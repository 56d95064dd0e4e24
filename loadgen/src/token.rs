//! Login tokens for uring-chat servers that require signed identity (`--auth-jwt-secret`): each
//! client's `connect` carries an HS256 JWT minted here for its own name, before the timed window.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a minted token stays valid: longer than any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    exp: u64,
}

/// A token for `name` (also its `sub`), signed with `secret`'s bytes as the server takes them.
pub fn mint(secret: &str, name: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: name,
        name,
        exp: (now + TOKEN_LIFETIME).as_secs(),
    };
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("any bytes are an HS256 key");
    encode(&Header::default(), &claims, &key).expect("HS256 signing with a byte key cannot fail")
}
