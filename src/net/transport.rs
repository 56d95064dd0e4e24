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

/// Why a connection ended: the metrics' label, and over WebSocket the close frame's code (after
/// the chat layer's error frame, when there is one). The first reason given wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (or reset) before the server closed anything.
    PeerClosed,
    /// The client asked: `disconnect`, or a WebSocket close frame.
    Disconnect,
    /// Turned away at accept (`SERVER_FULL`); counted as a rejection, not a close.
    Refused,
    LoginTimeout,
    /// Silent through two pings.
    PingTimeout,
    SlowConsumer,
    Flood,
    FrameTooLarge,
    /// The client broke the WebSocket protocol (an unmasked frame, a bad opcode, ...).
    Protocol,
    /// A WebSocket text message that is not UTF-8.
    InvalidUtf8,
    /// The server stopped (`SERVER_SHUTDOWN`, or the drain timeout).
    Shutdown,
    /// A write failed: the peer is gone.
    WriteFailed,
    /// A login without the token the server requires (`AUTH_REQUIRED`).
    AuthRequired,
    /// A login whose token did not check out (`AUTH_FAILED`).
    AuthFailed,
    /// Plain text on a TLS port.
    TlsPlaintext,
    /// A failed TLS handshake or record: an untrusted certificate, a protocol error.
    TlsFailed,
    /// The login timeout found the TLS handshake unfinished.
    TlsHandshakeTimeout,
    /// In a cluster, another node took the user's name while this node was cut off from NATS.
    NameLost,
}

impl CloseReason {
    pub const ALL: [CloseReason; 18] = [
        CloseReason::PeerClosed,
        CloseReason::Disconnect,
        CloseReason::Refused,
        CloseReason::LoginTimeout,
        CloseReason::PingTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Flood,
        CloseReason::FrameTooLarge,
        CloseReason::Protocol,
        CloseReason::InvalidUtf8,
        CloseReason::Shutdown,
        CloseReason::WriteFailed,
        CloseReason::AuthRequired,
        CloseReason::AuthFailed,
        CloseReason::TlsPlaintext,
        CloseReason::TlsFailed,
        CloseReason::TlsHandshakeTimeout,
        CloseReason::NameLost,
    ];

    /// The label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Disconnect => "disconnect",
            CloseReason::Refused => "refused",
            CloseReason::LoginTimeout => "login_timeout",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Flood => "flood",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Protocol => "websocket_protocol",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::Shutdown => "shutdown",
            CloseReason::WriteFailed => "write_failed",
            CloseReason::AuthRequired => "auth_required",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::TlsPlaintext => "tls_plaintext",
            CloseReason::TlsFailed => "tls_failed",
            CloseReason::TlsHandshakeTimeout => "tls_handshake_timeout",
            CloseReason::NameLost => "name_lost",
        }
    }

    /// The WebSocket close code (RFC 6455 section 7.4; 1013 from the IANA registry). Reasons the
    /// server never sends a close frame for (the peer is gone) get 1000.
    pub fn websocket_code(self) -> u16 {
        match self {
            CloseReason::Disconnect | CloseReason::PeerClosed | CloseReason::WriteFailed => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::Protocol | CloseReason::TlsPlaintext | CloseReason::TlsFailed => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::LoginTimeout
            | CloseReason::PingTimeout
            | CloseReason::SlowConsumer
            | CloseReason::Flood
            | CloseReason::AuthRequired
            | CloseReason::AuthFailed
            | CloseReason::TlsHandshakeTimeout
            | CloseReason::NameLost => 1008,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::Refused => 1013,
        }
    }
}
