//! Settings that name key files: the login-token key and the TLS certificate and key.

use std::path::{Path, PathBuf};

use crate::config::AuthKey;

/// The PEM files of `--tls-cert` and `--tls-key`; read (and checked) when the server starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS is on with both files and off with neither; one alone is a mistake.
pub(super) fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, String> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
    }
}

/// The one key the three `--auth-jwt-*` settings may name, read from its file.
pub(super) fn auth_key(
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    public_key: Option<PathBuf>,
) -> Result<AuthKey, String> {
    match (secret, secret_file, public_key) {
        (None, None, None) => Ok(AuthKey::Off),
        (Some(secret), None, None) if !secret.is_empty() => {
            Ok(AuthKey::Secret(secret.into_bytes()))
        }
        (Some(_), None, None) => Err("--auth-jwt-secret must not be empty".into()),
        (None, Some(path), None) => read_secret_file(&path).map(AuthKey::Secret),
        (None, None, Some(path)) => std::fs::read(&path)
            .map(AuthKey::PublicKeyPem)
            .map_err(|e| format!("cannot read --auth-jwt-public-key {}: {e}", path.display())),
        _ => Err(
            "give one of --auth-jwt-secret, --auth-jwt-secret-file and --auth-jwt-public-key"
                .into(),
        ),
    }
}

/// A secret from a file, less one trailing newline (editors and `echo` add one).
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(secret)
}
