//! The room frames of protocol v1.1 that the server sends (docs/PROTOCOL.md, "Rooms"). Room chat
//! frames are built in [`protocol`](crate::chat::protocol), beside the other chat frames.

use bytes::Bytes;
use serde::Serialize;

use crate::chat::protocol::{server_document, To, UserEntry};

/// What the owner knows of a room when it answers a join.
#[derive(Serialize, Debug)]
pub struct JoinAnswer<'a> {
    pub room: &'a str,
    pub epoch: &'a str,
    /// The room's last seq when the member joined: live messages start after it.
    pub seq: u64,
    /// Present when the join asked for a replay: whether every message after `since` was held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(rename = "memberCount")]
    pub member_count: usize,
    pub members: &'a [UserEntry],
}

pub fn join_response(answer: &JoinAnswer<'_>) -> Bytes {
    server_document("join_response", room(answer.room), answer)
}

#[derive(Serialize)]
struct RoomOnly<'a> {
    room: &'a str,
}

pub fn leave_response(name: &str) -> Bytes {
    server_document("leave_response", room(name), &RoomOnly { room: name })
}

/// One room in a `room_list` page.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomEntry {
    pub room: String,
    #[serde(rename = "memberCount")]
    pub member_count: usize,
}

#[derive(Serialize)]
struct RoomPage<'a> {
    offset: usize,
    rooms: &'a [RoomEntry],
    #[serde(rename = "roomCount")]
    room_count: usize,
}

pub fn room_list(offset: usize, rooms: &[RoomEntry], room_count: usize) -> Bytes {
    let page = RoomPage {
        offset,
        rooms,
        room_count,
    };
    server_document("room_list", To::default(), &page)
}

#[derive(Serialize)]
struct MemberPage<'a> {
    room: &'a str,
    offset: usize,
    members: &'a [UserEntry],
    #[serde(rename = "memberCount")]
    member_count: usize,
}

pub fn member_list(name: &str, offset: usize, members: &[UserEntry], member_count: usize) -> Bytes {
    let page = MemberPage {
        room: name,
        offset,
        members,
        member_count,
    };
    server_document("member_list", room(name), &page)
}

fn room(name: &str) -> To<'_> {
    To {
        recipient: None,
        room: Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_leave_responses_are_exact() {
        let answer = JoinAnswer {
            room: "rust",
            epoch: "e1",
            seq: 41,
            recovered: Some(true),
            member_count: 1,
            members: &[UserEntry {
                user_id: "u".into(),
                username: "alice".into(),
            }],
        };
        assert_eq!(
            &join_response(&answer)[..],
            b"{\"type\":\"join_response\",\"senderID\":\"server\",\"room\":\"rust\",\"content\":\"{\\\"room\\\":\\\"rust\\\",\\\"epoch\\\":\\\"e1\\\",\\\"seq\\\":41,\\\"recovered\\\":true,\\\"memberCount\\\":1,\\\"members\\\":[{\\\"userID\\\":\\\"u\\\",\\\"username\\\":\\\"alice\\\"}]}\"}\n"
        );
        assert_eq!(
            &leave_response("rust")[..],
            b"{\"type\":\"leave_response\",\"senderID\":\"server\",\"room\":\"rust\",\"content\":\"{\\\"room\\\":\\\"rust\\\"}\"}\n"
        );
    }
}
