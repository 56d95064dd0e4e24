//! The web page over https in headless Chromium: the browser trusts exactly the test
//! certificate's key (`--ignore-certificate-errors-spki-list` with its SPKI pin, not a switch that
//! trusts every certificate), loads the page, logs in over wss, and chats with a TLS client of the
//! chat port.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

use rustls::{ClientConnection, StreamOwned};
use serde_json::{json, Value};

use super::common::tls::{connect, Pki};
use super::webdriver::{find_program, Driver};
use super::Page;

/// base64(sha256(SubjectPublicKeyInfo)) of the certificate in `pem`, the form Chromium's
/// `--ignore-certificate-errors-spki-list` takes (made with the openssl tool).
fn spki_pin(pem: &Path) -> String {
    let script = r#"openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | openssl base64 -A"#;
    let output = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(pem)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pin = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(pin.len(), 44, "a base64 SHA-256: {pin}");
    pin
}

type Line = BufReader<StreamOwned<ClientConnection, std::net::TcpStream>>;

fn send(client: &mut Line, frame: &Value) {
    let stream = client.get_mut();
    stream.write_all(format!("{frame}\n").as_bytes()).unwrap();
    stream.flush().unwrap();
}

/// The next frame that is not presence.
fn next_reply(client: &mut Line) -> Value {
    loop {
        let mut line = String::new();
        assert!(client.read_line(&mut line).expect("a frame") > 0, "closed");
        let frame: Value = serde_json::from_str(&line).unwrap();
        if frame["type"] != "presence" {
            return frame;
        }
    }
}

#[test]
fn the_page_over_https_logs_in_over_wss_and_chats_with_a_tls_client() {
    let (Some(chromedriver), Some(chromium), Some(_)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
        find_program(&["openssl"]),
    ) else {
        println!(
            "SKIPPED: the https browser test needs chromium, chromedriver and openssl in PATH"
        );
        return;
    };
    let pki = Pki::new("browser-https");
    let server = pki.server(|_| {});
    let port = server.http.expect("the HTTP port is on").port();
    let pin = spki_pin(&pki.files().cert);
    let driver = Driver::start(&chromedriver, chromium);
    let trust = format!("--ignore-certificate-errors-spki-list={pin}");
    let page = Page {
        browser: driver.session_with(1024, 700, &[trust]),
        name: "secure",
    };
    page.browser.navigate(&format!("https://localhost:{port}/"));
    page.log_in();
    assert_eq!(page.browser.run("return location.protocol"), "https:");

    let mut carol = BufReader::new(connect(server.addr, &pki.ca));
    send(&mut carol, &json!({"type": "connect", "content": "carol"}));
    assert_eq!(next_reply(&mut carol)["type"], "connect_response");
    let hello = "Hello over TLS, from the chat port";
    send(&mut carol, &json!({"type": "chat", "content": hello}));
    page.shows("lobby", &[(hello, false, "carol")]);
    let back = "And back over wss";
    page.say(back);
    let frame = next_reply(&mut carol);
    assert_eq!(
        (frame["type"].as_str(), frame["username"].as_str()),
        (Some("chat"), Some("secure")),
        "{frame}"
    );
    assert_eq!(frame["content"], back);
}
