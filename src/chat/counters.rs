//! What one core's chat counts: frames by kind each way, protocol errors by code, and the rooms it
//! owns. Written by that core alone, read at scrape time (see [`crate::net::counters`] for why
//! single-writer counters cost no more than a local increment).
//!
//! Frames sent are counted from their bytes: every frame the server makes starts with
//! `{"type":"<kind>"`, and an error's code follows at a fixed place. So one tally, in the network
//! layer, counts every frame whoever queued it, and a fan-out is classified once for all its
//! recipients.

use crate::chat::protocol::ErrorCode;
use crate::net::counters::{Counter, FrameTally, Gauge, PerTransport};
use crate::net::Transport;

/// Frame kinds as metrics label them: every `type` either side sends, then three for frames that
/// have none: an unknown `type`, a frame that does not parse, and one flood control dropped unread.
pub const KINDS: [&str; 22] = [
    "chat",
    "connect",
    "connect_response",
    "disconnect",
    "disconnect_response",
    "error",
    "join",
    "join_response",
    "leave",
    "leave_response",
    "member_list",
    "members",
    "ping",
    "pong",
    "presence",
    "room_list",
    "rooms",
    "user_list_update",
    "users",
    OTHER,
    INVALID,
    RATE_LIMITED,
];
pub const OTHER: &str = "other";
/// Where [`OTHER`] is in [`KINDS`].
const OTHER_AT: usize = 19;
pub const INVALID: &str = "invalid";
pub const RATE_LIMITED: &str = "rate_limited";

/// Counters per frame kind, in the order of [`KINDS`].
pub type ByKind = PerTransport<[Counter; KINDS.len()]>;

#[derive(Debug, Default)]
pub struct ChatCounters {
    pub received: ByKind,
    pub sent: ByKind,
    /// Error frames sent, by code, in the order of [`ErrorCode::ALL`].
    pub errors: [Counter; ErrorCode::ALL.len()],
    /// Rooms this core owns, their members, and the bytes their histories hold.
    pub rooms: Gauge,
    pub memberships: Gauge,
    pub history_bytes: Gauge,
}

impl ChatCounters {
    /// Counts one inbound frame of `kind` (a `type`, or [`INVALID`] or [`RATE_LIMITED`]).
    pub fn received(&self, transport: Transport, kind: &str) {
        self.received.get(transport)[kind_index(kind.as_bytes())].add(1);
    }
}

impl FrameTally for ChatCounters {
    fn sent(&self, transport: Transport, frame: &[u8], count: u64) {
        let kind = frame
            .strip_prefix(b"{\"type\":\"")
            .map_or(&b""[..], |rest| until_quote(rest));
        self.sent.get(transport)[kind_index(kind)].add(count);
        if kind == b"error" {
            if let Some(code) = error_code(frame) {
                self.errors[code].add(count);
            }
        }
    }
}

/// The position of `kind` in [`KINDS`]; [`OTHER`] for a kind not there.
fn kind_index(kind: &[u8]) -> usize {
    let position = KINDS.iter().position(|label| label.as_bytes() == kind);
    position.unwrap_or(OTHER_AT)
}

/// The position in [`ErrorCode::ALL`] of an error frame's code (`protocol::error` puts it first).
fn error_code(frame: &[u8]) -> Option<usize> {
    let rest = frame.strip_prefix(b"{\"type\":\"error\",\"senderID\":\"server\",\"code\":\"")?;
    let code = until_quote(rest);
    ErrorCode::ALL
        .iter()
        .position(|known| known.as_str().as_bytes() == code)
}

fn until_quote(text: &[u8]) -> &[u8] {
    let end = memchr::memchr(b'"', text).unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::protocol;

    #[test]
    fn frames_are_counted_by_kind_and_errors_by_code() {
        let counters = ChatCounters::default();
        counters.sent(Transport::Tcp, &protocol::ping(), 3);
        let error = protocol::error(ErrorCode::NameTaken, "taken");
        counters.sent(Transport::WebSocket, &error, 1);
        counters.sent(Transport::Tcp, b"{\"type\":\"echo\"}", 1);
        counters.received(Transport::Tcp, "chat");
        counters.received(Transport::Tcp, "bogus");
        assert_eq!(KINDS[OTHER_AT], OTHER);
        let tcp = counters.sent.get(Transport::Tcp);
        assert_eq!(tcp[kind_index(b"ping")].get(), 3);
        assert_eq!(tcp[OTHER_AT].get(), 1, "an unknown type");
        assert_eq!(counters.sent.get(Transport::WebSocket)[5].get(), 1, "error");
        let taken = ErrorCode::ALL
            .iter()
            .position(|c| *c == ErrorCode::NameTaken);
        assert_eq!(counters.errors[taken.unwrap()].get(), 1);
        let received = counters.received.get(Transport::Tcp);
        assert_eq!((received[0].get(), received[OTHER_AT].get()), (1, 1));
    }
}
