//! The web page with a login token in its address (`/#token=<jwt>`) on a server that requires one:
//! it logs in, and when its token has expired by the time it reconnects, it says so and stops
//! retrying (the same token can never work again), instead of reconnecting for ever.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use uring_chat::config::AuthKey;

use super::common::TestServer;
use super::webdriver::{find_program, Driver};
use super::{Page, FRAME_LIMIT};

const SECRET: &[u8] = b"the browser test's HS256 secret, 32 bytes or more";

/// How long the page's token is valid: long enough to log in, short enough to wait out.
const TOKEN_TTL: Duration = Duration::from_secs(3);

#[test]
fn an_expired_token_stops_the_page_reconnecting_and_says_why() {
    let (Some(chromedriver), Some(chromium)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        println!("SKIPPED: the token browser test needs chromium and chromedriver in PATH");
        return;
    };
    let server = TestServer::start_with(|config| {
        config.auth_key = AuthKey::Secret(SECRET.to_vec());
        config.auth_leeway = Duration::ZERO;
        config.max_frame_bytes = FRAME_LIMIT;
    });
    let http = server.http.expect("the HTTP port is on");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires = now + TOKEN_TTL;
    let claims = json!({"sub": "user-7", "name": "dora", "exp": expires.as_secs()});
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let token = jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap();

    let driver = Driver::start(&chromedriver, chromium);
    let page = Page {
        browser: driver.session(1024, 700),
        name: "dora",
    };
    page.browser
        .navigate(&format!("http://{http}/#token={token}"));
    page.log_in();

    // Wait the token out (a wait, not a timing assertion), then have the server cut the page off
    // with a frame over its limit: the page reconnects with the expired token.
    let expired = UNIX_EPOCH + expires + Duration::from_millis(1100);
    if let Ok(left) = expired.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
    page.say(&"x".repeat(FRAME_LIMIT + 100));
    let status = page.browser.wait_for(
        "the refused token reported",
        "return [document.querySelector('[data-test=status]').dataset.state, document.querySelector('[data-test=banner]').textContent];",
        |s| s[1].as_str().is_some_and(|text| text.contains("new token")),
    );
    assert_eq!(status[0], "offline", "{status}");
    assert!(
        status[1].as_str().unwrap().contains("expired"),
        "the server's reason is shown: {status}"
    );
    // It stopped: no "Reconnecting in" countdown replaced the notice, and the server refused
    // exactly one login with that token (a page retrying for ever would pile refusals up).
    let refused = "uring_chat_connections_closed_total{reason=\"auth_failed\"}";
    assert_eq!(server.metric(refused), 1.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.metric(refused), 1.0, "the page did not try again");
    let after = page
        .browser
        .run("return document.querySelector('[data-test=banner]').textContent");
    assert!(!after.as_str().unwrap().contains("Reconnecting"), "{after}");
}
