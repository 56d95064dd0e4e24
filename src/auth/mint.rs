//! `uring-chat token`: mints a login token for trying auth out, with the same crate the server
//! checks it with. An issuer in production is the operator's identity service, not this.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::{parse_duration, read_secret_file};

/// Prints a signed login token (a JWT) to stdout.
#[derive(Parser, Debug)]
#[command(
    name = "uring-chat token",
    about = "Print a login token (JWT) for a server started with --auth-jwt-secret or --auth-jwt-public-key."
)]
pub struct TokenArgs {
    /// HS256 secret: the string's bytes are the key (as --auth-jwt-secret).
    #[arg(
        long,
        env = "URING_CHAT_AUTH_JWT_SECRET",
        hide_env_values = true,
        group = "key"
    )]
    secret: Option<String>,
    /// A file holding the HS256 secret; one trailing newline is dropped (as --auth-jwt-secret-file).
    #[arg(long, env = "URING_CHAT_AUTH_JWT_SECRET_FILE", group = "key")]
    secret_file: Option<PathBuf>,
    /// A PEM private key: RSA signs RS256, EC P-256 ES256, Ed25519 EdDSA.
    #[arg(long, group = "key")]
    private_key: Option<PathBuf>,
    /// The user's stable ID (`sub`).
    #[arg(long)]
    sub: String,
    /// The only username the token logs in as (`name`); any name when absent.
    #[arg(long)]
    name: Option<String>,
    /// Rooms the user may join, comma-separated; `ops-*` is a prefix (`rooms`). Any room when absent.
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// Frames per second for this user, when above the server's --rate-limit (`rate`).
    #[arg(long)]
    rate: Option<u32>,
    /// How long the token is valid (`exp`), e.g. 10m or 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<u32>,
    iat: u64,
    exp: u64,
}

/// The token `uring-chat token` prints for `args`; the error is ready to print.
pub fn token(args: &TokenArgs) -> Result<String, String> {
    let (algorithm, key) = signing_key(args)?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: &args.sub,
        name: args.name.as_deref(),
        rooms: args.rooms.as_deref(),
        rate: args.rate,
        iat: now,
        exp: now + args.ttl.as_secs(),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).map_err(|e| e.to_string())
}

fn signing_key(args: &TokenArgs) -> Result<(Algorithm, EncodingKey), String> {
    let secret = match (&args.secret, &args.secret_file, &args.private_key) {
        (Some(secret), _, _) => secret.clone().into_bytes(),
        (_, Some(path), _) => read_secret_file(path)?,
        (_, _, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --private-key {}: {e}", path.display()))?;
            return private_key(&pem);
        }
        _ => return Err("give the key: --secret, --secret-file or --private-key".into()),
    };
    let key = EncodingKey::from_secret(&secret).map_err(|e| e.to_string())?;
    Ok((Algorithm::HS256, key))
}

fn private_key(pem: &[u8]) -> Result<(Algorithm, EncodingKey), String> {
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Ok((Algorithm::ES256, key));
    }
    if let Ok(key) = EncodingKey::from_ed_pem(pem) {
        return Ok((Algorithm::EdDSA, key));
    }
    EncodingKey::from_rsa_pem(pem)
        .map(|key| (Algorithm::RS256, key))
        .map_err(|_| "--private-key is not a PEM RSA, EC P-256 or Ed25519 private key".into())
}
