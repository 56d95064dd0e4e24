//! The bytes of rooms (protocol v1.1): `join` frames and their `join_response`, posts into a room
//! (uring-chat `chat` with `room`, Redis `PUBLISH room-N`), and the `room` and `seq` fields of a
//! delivered room message, found by byte scanning as `stamp.rs` finds the stamp.

use crate::options::Protocol;
use crate::redis;
use crate::stamp::{write_payload, Stamp};
use memchr::memmem;
use serde::Deserialize;

const ROOM_KEY: &[u8] = br#""room":"room-"#;
const SEQ_KEY: &[u8] = br#""seq":"#;

/// Appends `{"type":"join","room":"room-<r>"}`.
pub fn push_join(out: &mut Vec<u8>, r: u32) {
    out.extend_from_slice(br#"{"type":"join","room":"room-"#);
    out.extend_from_slice(r.to_string().as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Appends the post of message `stamp` into room `r`.
pub fn encode_post(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    protocol: Protocol,
    r: u32,
    stamp: Stamp,
    size: usize,
) {
    match protocol {
        Protocol::UringChat => {
            out.extend_from_slice(br#"{"type":"chat","room":"room-"#);
            out.extend_from_slice(r.to_string().as_bytes());
            out.extend_from_slice(br#"","content":""#);
            write_payload(out, stamp, size);
            out.extend_from_slice(b"\"}\n");
        }
        Protocol::Redis => {
            scratch.clear();
            write_payload(scratch, stamp, size);
            redis::publish(out, crate::rooms::name(r).as_bytes(), scratch);
        }
    }
}

/// The room index of a delivered frame's `"room":"room-<r>"`, if it has one of ours.
pub fn room_of(line: &[u8]) -> Option<u32> {
    let at = memmem::find(line, ROOM_KEY)? + ROOM_KEY.len();
    let rest = &line[at..];
    let end = memchr::memchr(b'"', rest)?;
    parse_u64(&rest[..end]).and_then(|r| u32::try_from(r).ok())
}

/// The `seq` of a delivered room message (a JSON number; a string of digits is accepted too).
pub fn seq_of(line: &[u8]) -> Option<u64> {
    let at = memmem::find(line, SEQ_KEY)? + SEQ_KEY.len();
    let rest = line[at..].strip_prefix(b"\"").unwrap_or(&line[at..]);
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    parse_u64(&rest[..end])
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One line read while joining.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinLine {
    /// A `join_response`: the room and its last seq when this member joined.
    Joined { room: u32, seq: u64 },
    /// An error frame: its code and content.
    Refused(String),
    /// Anything else (presence, pings, a reply to something else).
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct JoinContent {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    seq: Option<serde_json::Value>,
}

/// Classifies one line during the join phase. Parsed with serde: it happens K times per client,
/// not per delivery.
pub fn join_line(line: &[u8]) -> JoinLine {
    let Ok(env) = serde_json::from_slice::<Envelope>(line) else {
        return JoinLine::Other;
    };
    match env.kind.as_str() {
        "join_response" => {
            let inner: Option<JoinContent> = env
                .content
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok());
            let name = inner.as_ref().and_then(|i| i.room.clone()).or(env.room);
            let room = name.and_then(|n| parse_u64(n.strip_prefix("room-")?.as_bytes()));
            let seq = inner.and_then(|i| match i.seq? {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            });
            match (room.and_then(|r| u32::try_from(r).ok()), seq) {
                (Some(room), Some(seq)) => JoinLine::Joined { room, seq },
                _ => JoinLine::Refused(format!(
                    "join_response without a room-N room or a seq: {}",
                    String::from_utf8_lossy(line)
                )),
            }
        }
        "error" => JoinLine::Refused(format!(
            "{} {}",
            env.code.as_deref().unwrap_or("error"),
            env.content.as_deref().unwrap_or("")
        )),
        _ => JoinLine::Other,
    }
}
