//! A small W3C WebDriver client: chromedriver as a child process, headless Chromium sessions, and
//! the handful of commands the browser test needs, over plain HTTP/1.1 on a `TcpStream`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a page gets to show what the test waits for (a hang guard on a shared machine).
pub const PATIENCE: Duration = Duration::from_secs(20);
/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's code for the Enter key, sent as text.
pub const ENTER: &str = "\u{E007}";

/// The first of `names` found as an executable file in `PATH`.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// chromedriver on a free port of 127.0.0.1; killed on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    chromium: PathBuf,
}

impl Driver {
    pub fn start(chromedriver: &Path, chromium: PathBuf) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            chromium,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = request(driver.addr, "GET", "/status", None)
                .is_ok_and(|status| status["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new headless Chromium window whose page is `width` x `height` CSS pixels.
    pub fn session(&self, width: u32, height: u32) -> Browser<'_> {
        self.session_with(width, height, &[])
    }

    /// A new window as [`Driver::session`] makes, with more command-line switches for Chromium.
    pub fn session_with(&self, width: u32, height: u32, extra: &[String]) -> Browser<'_> {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ]
        .map(String::from)
        .into();
        args.push(format!("--window-size={width},{height}"));
        args.extend_from_slice(extra);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.chromium, "args": args},
        }}});
        let reply = self.call("POST", "/session", Some(&capabilities));
        let id = reply["sessionId"].as_str().expect("a session id");
        let browser = Browser {
            driver: self,
            id: id.to_string(),
        };
        browser.viewport(width, height);
        browser
    }

    /// One WebDriver command; panics on a transport failure or a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    /// One WebDriver command; a WebDriver error is `Err("code: message")`.
    fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let value = request(self.addr, method, path, body)?["value"].take();
        match value.get("error") {
            Some(error) => Err(format!(
                "{}: {}",
                error.as_str().unwrap_or("?"),
                value["message"]
            )),
            None => Ok(value),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window, closed on drop.
pub struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        self.driver.call(method, &path, body)
    }

    /// Sizes the page itself (`--window-size` sizes the window around it), through the DevTools
    /// protocol that chromedriver passes on.
    pub fn viewport(&self, width: u32, height: u32) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        let command = json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params});
        self.call("POST", "/goog/cdp/execute", Some(&command));
    }

    pub fn navigate(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    /// The element the CSS selector finds first; panics when there is none.
    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().expect("an element").to_string()
    }

    /// Clicks the element the CSS selector finds; found again if the page redrew it meanwhile.
    pub fn click(&self, css: &str) {
        for _ in 0..3 {
            let path = format!("/session/{}/element/{}/click", self.id, self.element(css));
            match self.driver.try_call("POST", &path, Some(&json!({}))) {
                Err(error) if error.starts_with("stale element reference") => continue,
                result => {
                    return drop(result.unwrap_or_else(|error| panic!("click {css}: {error}")))
                }
            }
        }
        panic!("click {css}: the element went stale three times");
    }

    /// Types `text` into the element, as keystrokes (`ENTER` presses Enter).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        let body = json!({"text": text});
        self.call("POST", &format!("/element/{element}/value"), Some(&body));
    }

    /// Runs `script` (a function body, `return` gives the result) in the page.
    pub fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.call("POST", "/execute/sync", Some(&body))
    }

    /// Runs `script` until `check` accepts what it returns, and returns that; panics after
    /// `PATIENCE` with the last result.
    pub fn wait_for(&self, what: &str, script: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.run(script);
            if check(&value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!("the page never showed {what}; it shows {value:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        decode_base64(encoded.as_str().expect("base64 text"))
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = request(self.driver.addr, "DELETE", &path, None);
    }
}

/// One HTTP/1.1 exchange on a fresh connection; the reply's JSON body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    // Starting a browser can take a while on a busy machine; this only guards against a hang.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body.as_bytes())
        .map_err(|e| e.to_string())?;
    // chromedriver may keep the connection open: read what the head says, not to the end.
    let mut reply = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let read = stream.read(&mut buf).map_err(|e| e.to_string())?;
        reply.extend_from_slice(&buf[..read]);
        if let Some(body) = whole_body(&reply, read == 0)? {
            return serde_json::from_slice(&body)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)));
        }
        if read == 0 {
            return Err("the connection closed mid-response".into());
        }
    }
}

/// The body once `reply` holds the whole response (by `Content-Length`, the chunked encoding's
/// last chunk, or the end of the connection), else `None`.
fn whole_body(reply: &[u8], ended: bool) -> Result<Option<Vec<u8>>, String> {
    let Some(split) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let body = &reply[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body
            .ends_with(b"0\r\n\r\n")
            .then(|| dechunk(body))
            .transpose();
    }
    let length = (head.lines())
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    Ok(match length {
        Some(length) if body.len() >= length => Some(body[..length].to_vec()),
        None if ended => Some(body.to_vec()),
        _ => None,
    })
}

/// The payload of a chunked body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = (body.windows(2).position(|w| w == b"\r\n")).ok_or("a chunk size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        let start = line_end + 2;
        out.extend_from_slice(body.get(start..start + size).ok_or("a whole chunk")?);
        body = body.get(start + size + 2..).ok_or("the chunk's line end")?;
    }
}

/// Standard base64 (the screenshot), padding and line breaks ignored.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = (text.bytes())
        .filter(|c| !matches!(c, b'=' | b'\n' | b'\r'))
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let bits = (group.iter().enumerate())
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&bits.to_be_bytes()[1..group.len()]);
    }
    out
}
