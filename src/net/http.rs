//! HTTP/1.1 request heads and plain responses, sans-IO: bytes in, a parsed head or a verdict out.
//!
//! The HTTP port answers one request per connection (`Connection: close`): health checks and,
//! later, the WebSocket upgrade. What a path means is decided above; this layer only bounds and
//! parses. Parsing is httparse's: request lines and headers are where hand-written parsers break.

/// Most headers a request may carry; more is answered like an oversized head (431).
pub const MAX_HEADERS: usize = 64;

/// A request head, parsed from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes the head took: what follows belongs to the connection's next protocol (WebSocket).
    pub length: usize,
}

impl RequestHead {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        (self.headers.iter())
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head.
    Head(RequestHead),
    /// Not yet a whole head: read more, unless `max_head_bytes` are already there.
    Partial,
    /// The head is (or would grow) larger than allowed: 431.
    TooLarge,
    /// Not HTTP/1.x: 400.
    Invalid,
}

/// Parses the request head at the start of `buf`, bounded by `max_head_bytes`.
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length <= max_head_bytes => {
            let target = request.path.unwrap_or("/");
            let path = target.split('?').next().unwrap_or(target);
            Parsed::Head(RequestHead {
                method: request.method.unwrap_or_default().to_string(),
                path: path.to_string(),
                headers: (request.headers.iter())
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                length,
            })
        }
        Ok(httparse::Status::Complete(_)) => Parsed::TooLarge,
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => Parsed::TooLarge,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLarge,
        Err(_) => Parsed::Invalid,
    }
}

/// A complete response that closes the connection: status line, the given headers, a body (none
/// for HEAD requests, whose `Content-Length` still says what GET would send). The body is plain
/// text unless `extra_headers` names another `Content-Type`.
pub fn response(
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
    head_only: bool,
) -> Vec<u8> {
    let is_type = |name: &str| name.eq_ignore_ascii_case("Content-Type");
    let content_type = (extra_headers.iter())
        .find(|(name, _)| is_type(name))
        .map_or("text/plain; charset=utf-8", |(_, value)| value);
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra_headers.iter().filter(|(name, _)| !is_type(name)) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_arrives_in_pieces_and_drops_its_query() {
        let request = b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: a\r\nX-Test: 1\r\n\r\n";
        for split in 1..request.len() - 1 {
            assert_eq!(
                parse_head(&request[..split], 8192),
                Parsed::Partial,
                "{split}"
            );
        }
        let Parsed::Head(head) = parse_head(request, 8192) else {
            panic!("a whole head");
        };
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("GET", "/readyz")
        );
        assert_eq!(head.header("x-TEST"), Some(&b"1"[..]));
    }

    #[test]
    fn oversized_heads_and_garbage_are_refused() {
        let mut long = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse_head(&long, 8192), Parsed::TooLarge, "no end in sight");
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_head(&long, 8192),
            Parsed::TooLarge,
            "complete but too long"
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(request.as_bytes(), 8192), Parsed::TooLarge);
        assert_eq!(
            parse_head(b"{\"type\":\"connect\"}\n", 8192),
            Parsed::Invalid
        );
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let text =
            String::from_utf8(response(405, &[("Allow", "GET, HEAD")], "no\n", false)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\nAllow: GET, HEAD\r\n\r\nno\n"
        );
        let typed = response(200, &[("content-type", "text/x")], "", false);
        assert!(String::from_utf8(typed)
            .unwrap()
            .starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/x\r\nContent-Length: 0\r\n"));
        assert!(String::from_utf8(response(200, &[], "ok\n", true))
            .unwrap()
            .ends_with(
                "Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
            ));
    }
}
