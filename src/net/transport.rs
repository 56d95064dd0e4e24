//! How a client reaches the server. Both transports feed the same sessions, writer and limits; the
//! transport decides only how a frame is put on the wire (and labels the metrics).

/// The wire a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Newline-delimited JSON straight over TCP (the chat port).
    Tcp,
    /// One JSON frame per WebSocket text message (`/ws` on the HTTP port).
    WebSocket,
}

impl Transport {
    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "ws",
        }
    }
}

/// Why the server closes a connection. Over TCP the chat layer's last frame says it; over
/// WebSocket the close frame carries it too, as the code RFC 6455 gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client asked to leave.
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// The client broke the WebSocket protocol (an unmasked frame, a bad opcode, ...).
    Protocol,
    /// A text message that is not UTF-8.
    InvalidData,
    /// A limit the client broke: flood, login timeout, slow consumer.
    Policy,
    /// A frame over `--max-frame-bytes`.
    TooBig,
    /// The server holds its maximum of connections.
    TryAgainLater,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 section 7.4, and 1013 from the IANA registry).
    pub fn websocket_code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::Policy => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::TryAgainLater => 1013,
        }
    }
}
