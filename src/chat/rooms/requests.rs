//! What the room frames from a client do: `join`, `leave`, `rooms`, `members`, and `chat` with a
//! `room`. Each checks its fields and hands the request to the shard's room paths.

use std::rc::Rc;

use crate::chat::protocol::{self, ErrorCode, Request};
use crate::chat::session::{parse_offset, Session};
use crate::chat::shard::Shard;
use crate::net::Connection;

use super::validate_room_name;

pub fn join(shard: &Shard, conn: &Rc<Connection>, session: &mut Session, request: &Request<'_>) {
    let Some(room) = room_name(conn, request) else {
        return;
    };
    if session
        .grant
        .as_ref()
        .is_some_and(|grant| !grant.may_join(room))
    {
        let reason = format!("your login token does not let you join `{room}`");
        return conn.reply(protocol::error(ErrorCode::Forbidden, &reason));
    }
    let since = match request.since.as_deref() {
        None => None,
        Some(text) => match parse_seq(text) {
            Some(seq) => Some(seq),
            None => {
                let reason = "`since` takes a seq: a string of digits";
                return conn.reply(protocol::error(ErrorCode::InvalidMessage, reason));
            }
        },
    };
    shard.join_room(conn, session, room, since);
}

pub fn leave(shard: &Shard, conn: &Rc<Connection>, session: &mut Session, request: &Request<'_>) {
    if let Some(room) = room_name(conn, request) {
        shard.leave_room(conn, session, room);
    }
}

/// A `chat` with a `room`: a message for the room's members.
pub fn post(shard: &Shard, conn: &Rc<Connection>, session: &Session, request: &Request<'_>) {
    if !request.recipient_id.is_empty() {
        let reason = "a chat goes to a room or to a recipientID, not both";
        return conn.reply(protocol::error(ErrorCode::InvalidMessage, reason));
    }
    if let Some(room) = room_name(conn, request) {
        shard.post_to_room(conn, session, room, request.content);
    }
}

pub fn members(shard: &Shard, conn: &Rc<Connection>, session: &Session, request: &Request<'_>) {
    let Some(room) = room_name(conn, request) else {
        return;
    };
    if let Some(offset) = parse_offset(conn, "members", request.content) {
        shard.room_members(conn, session, room, offset);
    }
}

pub fn rooms(shard: &Shard, conn: &Rc<Connection>, request: &Request<'_>) {
    if let Some(offset) = parse_offset(conn, "rooms", request.content) {
        shard.room_page(conn, offset);
    }
}

/// The request's `room`, if it is a valid name; otherwise `INVALID_ROOM` is sent and `None`.
fn room_name<'r>(conn: &Rc<Connection>, request: &'r Request<'_>) -> Option<&'r str> {
    let room = request.room.as_deref().unwrap_or("");
    match validate_room_name(room) {
        Ok(()) => Some(room),
        Err(reason) => {
            conn.reply(protocol::error(ErrorCode::InvalidRoom, reason));
            None
        }
    }
}

/// A seq as clients send it: ASCII digits only, no sign, no spaces.
fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
