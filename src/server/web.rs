//! The web chat page, embedded in the binary: the files under `web/` (HTML, CSS and JavaScript
//! modules, no build step, nothing fetched from elsewhere), served by every core's HTTP port. The
//! page speaks the protocol of docs/PROTOCOL.md over the WebSocket at `/ws` of the same port.

use crate::net::http::response;

/// One embedded file: its `Content-Type` and its text.
pub type Asset = (&'static str, &'static str);

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The page's files by path. `index.html` is also `/`.
const ASSETS: &[(&str, Asset)] = &[
    ("/index.html", (HTML, include_str!("../../web/index.html"))),
    ("/style.css", (CSS, include_str!("../../web/style.css"))),
    ("/app.js", (JS, include_str!("../../web/app.js"))),
    ("/chat.js", (JS, include_str!("../../web/chat.js"))),
    (
        "/connection.js",
        (JS, include_str!("../../web/connection.js")),
    ),
    ("/view.js", (JS, include_str!("../../web/view.js"))),
];

/// Headers on every file besides its type: the browser revalidates instead of keeping a stale
/// page after an upgrade, scripts come only from this origin (user text never becomes markup, and
/// this is the second fence), and nothing sniffs a type other than the one given.
const HEADERS: [(&str, &str); 4] = [
    ("Cache-Control", "no-cache"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

/// The embedded file at `path`, if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    (ASSETS.iter())
        .find(|(name, _)| *name == path)
        .map(|(_, asset)| *asset)
}

/// The whole response to a GET (or, without the body, a HEAD) of an asset.
pub fn answer((content_type, body): Asset, head_only: bool) -> Vec<u8> {
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend(HEADERS);
    response(200, &headers, body, head_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page loads is embedded: a script added under `web/` but not to `ASSETS`
    /// would be a 404 in the browser.
    #[test]
    fn every_file_the_page_imports_is_served() {
        let mut wanted = vec!["/style.css".to_string(), "/app.js".to_string()];
        for (name, (content_type, body)) in ASSETS {
            assert!(!body.is_empty(), "{name}");
            if *content_type != JS {
                continue;
            }
            for import in body.split("from \"./").skip(1) {
                wanted.push(format!("/{}", import.split('"').next().unwrap()));
            }
        }
        for path in wanted {
            assert!(
                asset(&path).is_some(),
                "{path} is imported but not embedded"
            );
        }
        assert_eq!(asset("/").unwrap().0, HTML);
        assert!(asset("/nope.js").is_none() && asset("/web/app.js").is_none());
    }
}
