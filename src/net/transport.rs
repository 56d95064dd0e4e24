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
