//! The WebSocket opening handshake of `--transport ws`, through tungstenite's client handshake
//! pieces: `generate_request` writes the `GET /ws` upgrade with a random 16-byte base64
//! `Sec-WebSocket-Key`, httparse (behind `Response::try_parse`) reads the answer, and
//! `derive_accept_key` gives the `Sec-WebSocket-Accept` the server must return. It is part of a
//! client's connect + login in phase 1, outside the measured window.

use crate::stream::Stream;
use std::io;
use std::net::SocketAddr;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{generate_request, Response};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse;

/// The longest upgrade response accepted.
const MAX_RESPONSE: usize = 16 * 1024;

/// Upgrades `stream` (connected to `target`) to a WebSocket at `/ws`. Returns the bytes that came
/// after the response (frames the server sent at once), to be read as frames.
pub async fn upgrade(stream: &mut Stream, target: SocketAddr) -> io::Result<Vec<u8>> {
    let request = format!("ws://{target}/ws")
        .into_client_request()
        .map_err(|e| fail(format!("building the upgrade request: {e}")))?;
    let (request, key) =
        generate_request(request).map_err(|e| fail(format!("upgrade request: {e}")))?;
    stream.write_all(&request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(fail("server closed during the WebSocket upgrade".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match Response::try_parse(&buf) {
            Ok(Some((used, response))) => {
                check(&response, &key).map_err(fail)?;
                return Ok(buf[used..].to_vec());
            }
            Ok(None) if buf.len() < MAX_RESPONSE => {}
            Ok(None) => return Err(fail("upgrade response larger than 16 KiB".into())),
            Err(e) => {
                return Err(fail(format!(
                    "not an HTTP answer to the WebSocket upgrade ({e}): is --port the server's \
                     HTTP port?"
                )))
            }
        }
    }
}

/// Checks the server's answer to an upgrade sent with `key` (RFC 6455 4.1): status 101,
/// `Upgrade: websocket`, `Connection: Upgrade`, and the `Sec-WebSocket-Accept` derived from the key.
fn check(response: &Response, key: &str) -> Result<(), String> {
    if response.status().as_u16() != 101 {
        return Err(format!(
            "WebSocket upgrade refused: HTTP {}",
            response.status()
        ));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if !header("Upgrade").eq_ignore_ascii_case("websocket") {
        return Err("upgrade response without Upgrade: websocket".into());
    }
    if !header("Connection")
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err("upgrade response without Connection: Upgrade".into());
    }
    if header("Sec-WebSocket-Accept") != derive_accept_key(key.as_bytes()) {
        return Err("upgrade response with a wrong Sec-WebSocket-Accept".into());
    }
    Ok(())
}

fn fail(msg: String) -> io::Error {
    io::Error::other(msg)
}
