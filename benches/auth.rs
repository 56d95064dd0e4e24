//! What a login with a token costs its core: `Verifier::verify` of one valid token per key type.
//! Verification runs on the connection's core between its other work, so this is how long a login
//! holds up that core's other connections (docs/SECURITY.md quotes the figures).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uring_chat::auth::Verifier;
use uring_chat::config::AuthKey;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/auth/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn verify(c: &mut Criterion) {
    let claims = serde_json::json!({
        "sub": "user-1", "name": "alice", "rooms": ["rust", "ops-*"], "rate": 100,
        "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    let secret = b"a benchmark secret of at least thirty-two bytes".to_vec();
    let cases = [
        (
            "HS256",
            AuthKey::Secret(secret.clone()),
            EncodingKey::from_secret(&secret).unwrap(),
        ),
        (
            "ES256",
            AuthKey::PublicKeyPem(fixture("es256-public.pem")),
            EncodingKey::from_ec_pem(&fixture("es256-private.pem")).unwrap(),
        ),
        (
            "EdDSA",
            AuthKey::PublicKeyPem(fixture("ed25519-public.pem")),
            EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap(),
        ),
        (
            "RS256",
            AuthKey::PublicKeyPem(fixture("rsa-public.pem")),
            EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("auth/verify");
    group.measurement_time(Duration::from_secs(3));
    for (name, key, signing) in cases {
        let algorithm: Algorithm = name.parse().unwrap();
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &signing).unwrap();
        let verifier = Verifier::from_config(&key, Duration::ZERO)
            .unwrap()
            .unwrap();
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(black_box(&token), "alice").unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
