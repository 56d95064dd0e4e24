//! Protocol v1.1 frames: parsing what clients send, encoding what the server sends.
//!
//! docs/PROTOCOL.md is the contract; this module is its code. Inbound frames are parsed with serde
//! into borrowed fields, and a chat `content` is kept as its raw JSON token, so forwarding a message
//! copies it once into the outgoing frame without unescaping and re-escaping it. Every outbound frame
//! is built once into a `Bytes` and shared by all its recipients.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chat::user_id::UserId;

/// The `senderID` of frames the server makes itself.
pub const SERVER_SENDER: &str = "server";

/// Error codes of protocol v1 (docs/PROTOCOL.md, "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidMessage,
    UnknownType,
    NotConnected,
    AlreadyConnected,
    InvalidUsername,
    NameTaken,
    UserNotFound,
    FrameTooLarge,
    SlowConsumer,
    ServerFull,
    ServerShutdown,
    RateLimited,
    LoginTimeout,
    InvalidRoom,
    NotInRoom,
    TooManyRooms,
    AuthRequired,
    AuthFailed,
    Forbidden,
    ClusterUnavailable,
}

impl ErrorCode {
    /// Every code, for the metrics' list of errors by code.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::NotConnected,
        ErrorCode::AlreadyConnected,
        ErrorCode::InvalidUsername,
        ErrorCode::NameTaken,
        ErrorCode::UserNotFound,
        ErrorCode::FrameTooLarge,
        ErrorCode::SlowConsumer,
        ErrorCode::ServerFull,
        ErrorCode::ServerShutdown,
        ErrorCode::RateLimited,
        ErrorCode::LoginTimeout,
        ErrorCode::InvalidRoom,
        ErrorCode::NotInRoom,
        ErrorCode::TooManyRooms,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::Forbidden,
        ErrorCode::ClusterUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::NotConnected => "NOT_CONNECTED",
            ErrorCode::AlreadyConnected => "ALREADY_CONNECTED",
            ErrorCode::InvalidUsername => "INVALID_USERNAME",
            ErrorCode::NameTaken => "NAME_TAKEN",
            ErrorCode::UserNotFound => "USER_NOT_FOUND",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ServerFull => "SERVER_FULL",
            ErrorCode::ServerShutdown => "SERVER_SHUTDOWN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::LoginTimeout => "LOGIN_TIMEOUT",
            ErrorCode::InvalidRoom => "INVALID_ROOM",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
        }
    }
}

/// The envelope as a client sends it. Missing or `null` fields are empty; unknown ones are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "recipientID", default, borrow)]
    recipient_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    since: Option<Cow<'a, str>>,
    /// Kept raw: without auth a v1 client's `token` of any type must stay an ignored field.
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
    /// Type-checked like the other fields, then ignored: the server sets `senderID` itself.
    #[serde(rename = "senderID", default, borrow)]
    _sender_id: Option<Cow<'a, str>>,
}

/// A parsed inbound frame.
#[derive(Debug)]
pub struct Request<'a> {
    pub kind: Cow<'a, str>,
    pub recipient_id: Cow<'a, str>,
    pub content: JsonString<'a>,
    /// The room a v1.1 frame is about; `None` when absent (a v1 frame).
    pub room: Option<Cow<'a, str>>,
    /// `join`'s replay point, as sent: a string of digits.
    pub since: Option<Cow<'a, str>>,
    /// `connect`'s signed identity (docs/SECURITY.md); a `token` that is not a string is `None`.
    pub token: Option<Cow<'a, str>>,
}

/// A JSON string token exactly as the client sent it, quotes included.
#[derive(Clone, Copy, Debug)]
pub struct JsonString<'a>(&'a str);

impl<'a> JsonString<'a> {
    pub const EMPTY: JsonString<'static> = JsonString("\"\"");

    /// The token, ready to be copied into an outgoing frame.
    pub fn json(self) -> &'a str {
        self.0
    }

    /// The string's value, unescaped.
    pub fn decode(self) -> String {
        serde_json::from_str(self.0).expect("token was validated as a JSON string")
    }

    pub fn is_empty(self) -> bool {
        self.0 == "\"\""
    }
}

/// Parses one frame found by the codec. The error is a reason for an `INVALID_MESSAGE` frame.
pub fn parse_request(frame: &[u8]) -> Result<Request<'_>, String> {
    let envelope: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| e.to_string())?;
    let kind = envelope.kind.ok_or("missing field `type`")?;
    let content = match envelope.content {
        None => JsonString::EMPTY,
        Some(raw) if raw.get().starts_with('"') => JsonString(raw.get()),
        Some(raw) => return Err(format!("`content` must be a string, got {}", raw.get())),
    };
    Ok(Request {
        kind,
        recipient_id: envelope.recipient_id.unwrap_or_default(),
        content,
        room: envelope.room,
        since: envelope.since,
        token: envelope
            .token
            .and_then(|raw| serde_json::from_str(raw.get()).ok()),
    })
}

/// `{"userID","username"}` as in the old server's user lists.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
}

impl UserEntry {
    pub fn new(user_id: UserId, username: &str) -> UserEntry {
        UserEntry {
            user_id: user_id.to_string(),
            username: username.to_string(),
        }
    }
}

/// Appends `text` as a JSON string token.
pub(crate) fn put_json_string(out: &mut BytesMut, text: &str) {
    serde_json::to_writer(out.writer(), text).expect("writing to memory cannot fail");
}

/// Where a server frame is addressed, beyond its type: the user it answers, the room it is about.
#[derive(Clone, Copy, Default)]
pub(crate) struct To<'a> {
    pub recipient: Option<UserId>,
    pub room: Option<&'a str>,
}

impl To<'_> {
    const NOBODY: To<'static> = To {
        recipient: None,
        room: None,
    };

    fn user(user: UserId) -> To<'static> {
        To {
            recipient: Some(user),
            room: None,
        }
    }
}

/// A frame from the server:
/// `{"type":kind,"senderID":"server"[,"recipientID":..][,"room":..][,"code":..],"content":..}`.
fn server_frame(kind: &str, to: To<'_>, code: Option<ErrorCode>, content_json: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(80 + kind.len() + content_json.len());
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"senderID\":\"server\"");
    if let Some(recipient) = to.recipient {
        out.put_slice(b",\"recipientID\":\"");
        out.put_slice(&recipient.to_text());
        out.put_u8(b'"');
    }
    if let Some(room) = to.room {
        out.put_slice(b",\"room\":");
        put_json_string(&mut out, room);
    }
    if let Some(code) = code {
        out.put_slice(b",\"code\":\"");
        out.put_slice(code.as_str().as_bytes());
        out.put_u8(b'"');
    }
    out.put_slice(b",\"content\":");
    out.put_slice(content_json.as_bytes());
    out.put_slice(b"}\n");
    out.freeze()
}

/// A server frame whose content is a JSON document encoded as a string, as the old server did.
pub(crate) fn server_document<T: Serialize>(kind: &str, to: To<'_>, document: &T) -> Bytes {
    let inner = serde_json::to_string(document).expect("documents serialise");
    let mut token = BytesMut::with_capacity(inner.len() + 16);
    put_json_string(&mut token, &inner);
    server_frame(
        kind,
        to,
        None,
        std::str::from_utf8(&token).expect("JSON is UTF-8"),
    )
}

pub fn error(code: ErrorCode, reason: &str) -> Bytes {
    let mut token = BytesMut::with_capacity(reason.len() + 2);
    put_json_string(&mut token, reason);
    server_frame(
        "error",
        To::NOBODY,
        Some(code),
        std::str::from_utf8(&token).expect("JSON is UTF-8"),
    )
}

/// The server's keepalive ping.
pub fn ping() -> Bytes {
    Bytes::from_static(b"{\"type\":\"ping\",\"senderID\":\"server\",\"content\":\"\"}\n")
}

pub fn pong(content: JsonString<'_>) -> Bytes {
    server_frame("pong", To::NOBODY, None, content.json())
}

/// A user list as JSON (`[{"userID":..,"username":..},..]`), for the directory to cache.
pub fn user_list_json(list: &[UserEntry]) -> String {
    serde_json::to_string(list).expect("user lists serialise")
}

/// The login reply. `user_list_json` comes from [`user_list_json`], usually cached: building a
/// hundred-user list for each of ten thousand logins is what made a join storm slow.
pub fn connect_response(
    user_id: UserId,
    username: &str,
    user_list_json: &str,
    user_count: usize,
) -> Bytes {
    let mut document = String::with_capacity(user_list_json.len() + 160);
    document.push_str("{\"userID\":\"");
    document.push_str(&user_id.to_string());
    document.push_str("\",\"username\":");
    document.push_str(&serde_json::to_string(username).expect("strings serialise"));
    document.push_str(",\"userList\":");
    document.push_str(user_list_json);
    document.push_str(&format!(
        ",\"userCount\":{user_count},\"core\":{}}}",
        user_id.core()
    ));
    let mut token = BytesMut::with_capacity(document.len() + document.len() / 4 + 2);
    put_json_string(&mut token, &document);
    server_frame(
        "connect_response",
        To::user(user_id),
        None,
        std::str::from_utf8(&token).expect("JSON is UTF-8"),
    )
}

#[derive(Serialize)]
struct UserPage<'a> {
    offset: usize,
    #[serde(rename = "userList")]
    user_list: &'a [UserEntry],
    #[serde(rename = "userCount")]
    user_count: usize,
}

pub fn user_list_update(
    recipient: UserId,
    offset: usize,
    user_list: &[UserEntry],
    user_count: usize,
) -> Bytes {
    let page = UserPage {
        offset,
        user_list,
        user_count,
    };
    server_document("user_list_update", To::user(recipient), &page)
}

pub fn disconnect_response(user: Option<(UserId, &str)>) -> Bytes {
    match user {
        Some((user_id, username)) => {
            let entry = UserEntry {
                user_id: user_id.to_string(),
                username: username.to_string(),
            };
            server_document("disconnect_response", To::user(user_id), &entry)
        }
        None => Bytes::from_static(b"{\"type\":\"disconnect_response\",\"senderID\":\"server\",\"recipientID\":\"\",\"content\":\"{}\"}\n"),
    }
}

/// Joins and leaves since the last presence frame: one core's users, or one room's members.
#[derive(Serialize, Debug)]
pub struct PresenceDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<&'a [UserEntry]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<&'a [UserEntry]>,
    #[serde(rename = "joinedCount")]
    pub joined_count: usize,
    #[serde(rename = "leftCount")]
    pub left_count: usize,
    /// Users logged in server-wide (lobby presence).
    #[serde(rename = "userCount", skip_serializing_if = "Option::is_none")]
    pub user_count: Option<usize>,
    /// Members of the room (room presence).
    #[serde(rename = "memberCount", skip_serializing_if = "Option::is_none")]
    pub member_count: Option<usize>,
}

/// A presence frame: the lobby's when `room` is `None`.
pub fn presence(room: Option<&str>, document: &PresenceDocument<'_>) -> Bytes {
    let to = To {
        recipient: None,
        room,
    };
    server_document("presence", to, document)
}

/// The chat frame every recipient gets: one allocation, one copy of the content as the client
/// escaped it.
pub fn chat(
    sender: UserId,
    username: &str,
    recipient: Option<UserId>,
    content: JsonString<'_>,
) -> Bytes {
    let mut out = chat_body(sender, username, recipient, None, content);
    out.put_slice(b"}\n");
    out.freeze()
}

/// A room message as the sender's core builds it: everything but its `seq`, which only the room's
/// owner core knows ([`stamp_room_chat`]).
pub fn room_chat_body(
    sender: UserId,
    username: &str,
    room: &str,
    content: JsonString<'_>,
) -> Bytes {
    chat_body(sender, username, None, Some(room), content).freeze()
}

/// Completes a room message with its `seq`: one allocation, one copy, on the owner core.
pub fn stamp_room_chat(body: &[u8], seq: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 32);
    out.put_slice(body);
    out.put_slice(b",\"seq\":");
    out.put_slice(seq.to_string().as_bytes());
    out.put_slice(b"}\n");
    out.freeze()
}

/// `{"type":"chat","senderID":..,"recipientID":..[,"room":..],"content":..,"username":..` with the
/// object left open for the caller to close.
fn chat_body(
    sender: UserId,
    username: &str,
    recipient: Option<UserId>,
    room: Option<&str>,
    content: JsonString<'_>,
) -> BytesMut {
    let content = content.json().as_bytes();
    let room_len = room.map_or(0, |room| room.len() + 16);
    let mut out = BytesMut::with_capacity(160 + username.len() + room_len + content.len());
    out.put_slice(b"{\"type\":\"chat\",\"senderID\":\"");
    out.put_slice(&sender.to_text());
    out.put_slice(b"\",\"recipientID\":\"");
    if let Some(recipient) = recipient {
        out.put_slice(&recipient.to_text());
    }
    out.put_u8(b'"');
    if let Some(room) = room {
        out.put_slice(b",\"room\":");
        put_json_string(&mut out, room);
    }
    out.put_slice(b",\"content\":");
    out.put_slice(content);
    out.put_slice(b",\"username\":");
    put_json_string(&mut out, username);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_old_envelope_and_ignores_unknown_fields() {
        let request = parse_request(
            br#"{"type":"chat","recipientID":"x","content":"hi \"you\"","extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(request.kind, "chat");
        assert_eq!(request.recipient_id, "x");
        assert_eq!(request.content.json(), r#""hi \"you\"""#);
        assert_eq!(request.content.decode(), "hi \"you\"");
        let bare = parse_request(br#"{"type":"disconnect","content":null}"#).unwrap();
        assert!(bare.content.is_empty() && bare.recipient_id.is_empty());
    }

    #[test]
    fn rejects_wrong_types_missing_type_and_bad_utf8() {
        assert!(parse_request(br#"{"type":"chat","content":5}"#)
            .unwrap_err()
            .contains("content"));
        assert!(parse_request(br#"{"type":7}"#).is_err());
        assert!(parse_request(br#"{"senderID":1,"type":"chat"}"#).is_err());
        assert!(parse_request(br#"{"content":"x"}"#)
            .unwrap_err()
            .contains("type"));
        assert!(parse_request(b"{\"type\":\"chat\",\"content\":\"\xff\xfe\"}").is_err());
        assert!(parse_request(b"[1]").is_err());
    }

    #[test]
    fn chat_frames_are_exact() {
        let sender = UserId::parse("0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f").unwrap();
        let request = parse_request(br#"{"type":"chat","content":"hi\n"}"#).unwrap();
        assert_eq!(
            &chat(sender, "al\"ice", None, request.content)[..],
            b"{\"type\":\"chat\",\"senderID\":\"0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f\",\"recipientID\":\"\",\"content\":\"hi\\n\",\"username\":\"al\\\"ice\"}\n"
        );
    }

    #[test]
    fn room_chat_frames_are_exact() {
        let sender = UserId::parse("0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f").unwrap();
        let request = parse_request(br#"{"type":"chat","room":"rust","content":"hi"}"#).unwrap();
        assert_eq!(request.room.as_deref(), Some("rust"));
        let body = room_chat_body(sender, "alice", "ru\"st", request.content);
        assert_eq!(
            &stamp_room_chat(&body, 42)[..],
            b"{\"type\":\"chat\",\"senderID\":\"0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f\",\"recipientID\":\"\",\"room\":\"ru\\\"st\",\"content\":\"hi\",\"username\":\"alice\",\"seq\":42}\n"
        );
    }

    #[test]
    fn errors_and_documents_are_exact() {
        assert_eq!(
            &error(ErrorCode::NotConnected, "log in first")[..],
            b"{\"type\":\"error\",\"senderID\":\"server\",\"code\":\"NOT_CONNECTED\",\"content\":\"log in first\"}\n"
        );
        let user = UserId::parse("0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f").unwrap();
        let frame = disconnect_response(Some((user, "alice")));
        let value: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        let content: serde_json::Value =
            serde_json::from_str(value["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["username"], "alice");
        assert_eq!(content["userID"], user.to_string());
    }
}
