//! A WebSocket protocol client over a real socket, for the `/ws` tests (tungstenite, client side).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, WebSocket};

use super::{content_of, READ_TIMEOUT};

/// Over a plain socket unless made [`WsClient::over`] another stream (a TLS one, for wss).
pub struct WsClient<S = Retrying> {
    pub socket: WebSocket<S>,
    pub user_id: String,
    pub core: usize,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// The close frame's code, if the server sent one.
    pub code: Option<u16>,
    /// The protocol frames that came before it.
    pub frames: Vec<Value>,
}

impl WsClient {
    /// Upgrades a new connection to `/ws` on the HTTP port `http`.
    pub fn connect(http: SocketAddr) -> WsClient {
        let stream = TcpStream::connect(http).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        WsClient::over(Retrying(stream), &format!("ws://{http}/ws"))
    }

    /// Connects and logs in; panics unless the reply is a connect_response.
    pub fn login(http: SocketAddr, name: &str) -> WsClient {
        WsClient::connect(http).log_in(name)
    }
}

impl<S: Read + Write> WsClient<S> {
    /// Upgrades `stream`, connected already, to a WebSocket at `url`.
    pub fn over(stream: S, url: &str) -> WsClient<S> {
        let (socket, response) = tungstenite::client(url, stream).expect("WebSocket upgrade");
        assert_eq!(response.status(), 101);
        WsClient {
            socket,
            user_id: String::new(),
            core: usize::MAX,
        }
    }

    /// Logs in; panics unless the reply is a connect_response.
    pub fn log_in(mut self, name: &str) -> WsClient<S> {
        self.send(&serde_json::json!({"type": "connect", "content": name}).to_string());
        let reply = self.next_reply();
        assert_eq!(
            reply["type"], "connect_response",
            "login of {name}: {reply}"
        );
        let content = content_of(&reply);
        self.user_id = content["userID"].as_str().unwrap().to_string();
        self.core = content["core"].as_u64().unwrap() as usize;
        self
    }

    /// Sends one protocol frame as one text message.
    pub fn send(&mut self, frame: &str) {
        self.socket.send(Message::text(frame)).expect("send");
    }

    /// Sends a raw frame as built (tungstenite masks it as a client must).
    pub fn send_frame(&mut self, frame: Frame) {
        self.socket
            .send(Message::Frame(frame))
            .expect("send a frame");
    }

    pub fn read(&mut self) -> tungstenite::Result<Message> {
        self.socket.read()
    }

    /// The next text message, exactly.
    pub fn next_text(&mut self) -> String {
        loop {
            match self.read().expect("read a message") {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next frame that is not a presence announcement.
    pub fn next_reply(&mut self) -> Value {
        loop {
            let text = self.next_text();
            let frame: Value =
                serde_json::from_str(&text).expect("each message is one JSON object");
            if frame["type"] != "presence" {
                return frame;
            }
        }
    }

    /// Reads until the server closes, and returns the close code and the frames before it.
    pub fn expect_closed(&mut self) -> Closed {
        let mut frames = Vec::new();
        loop {
            match self.read() {
                Ok(Message::Text(text)) => frames.push(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(close)) => {
                    let code = close.map(|c| u16::from(c.code));
                    // Answer, and read on until the server's FIN.
                    while self.read().is_ok() {}
                    return Closed { code, frames };
                }
                Ok(_) => continue,
                Err(error) => panic!("expected a close frame, got {error}"),
            }
        }
    }

    /// Closes from the client side with `code`.
    pub fn close(&mut self, code: CloseCode) {
        self.socket
            .close(Some(tungstenite::protocol::CloseFrame {
                code,
                reason: "".into(),
            }))
            .expect("send a close");
    }
}

/// A socket whose reads and writes retry when a signal interrupts them (EINTR), as std's buffered
/// readers do: the server runs in the test process, and tungstenite passes EINTR up as an error.
pub struct Retrying<S = TcpStream>(pub S);

impl<S: Read> Read for Retrying<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl<S: Write> Write for Retrying<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
