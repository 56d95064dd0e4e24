//! Room messages between nodes (docs/CLUSTER.md, "Rooms across nodes"): the [`RoomMsg`]s that
//! cross to a room's owner node or come back from it, as the payloads of cluster messages.
//!
//! Requests (to the owner node's subject, or to this node's owner core through the bridge): join,
//! leave, post, members. From the owner, on the room's subject, so that each node gets one room's
//! traffic in one order: frames, join answers, replies and leave answers. Binary, fixed fields
//! first (userIDs as 16 bytes, numbers big-endian), then the room name with its length, then what
//! is left (a name, a body, a frame) to the end.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::chat::user_id::UserId;

use super::{RoomMsg, RoomName};

/// The kinds of room messages, after the lobby's and direct messages' (`chat::remote`).
pub const JOIN: u8 = 4;
pub const LEAVE: u8 = 5;
pub const POST: u8 = 6;
pub const MEMBERS: u8 = 7;
pub const FRAME: u8 = 8;
pub const JOINED: u8 = 9;
pub const REPLY: u8 = 10;
pub const LEFT: u8 = 11;

/// True for the kinds a member's node sends to a room's owner.
pub fn is_request(kind: u8) -> bool {
    (JOIN..=MEMBERS).contains(&kind)
}

/// The kind and payload of `msg` for another node; `None` for what never leaves a node.
pub fn encode(msg: &RoomMsg) -> Option<(u8, Bytes)> {
    let mut out = BytesMut::new();
    let kind = match msg {
        RoomMsg::Join {
            room,
            user,
            username,
            since,
            ticket,
            restart,
        } => {
            out.put_u128(user.to_bits());
            out.put_u64(*ticket);
            out.put_u8(u8::from(since.is_some()) | (u8::from(*restart) << 1));
            out.put_u64(since.unwrap_or(0));
            put_room(&mut out, room);
            out.put_slice(username.as_bytes());
            JOIN
        }
        RoomMsg::Leave {
            room,
            user,
            username,
            answer,
        } => {
            out.put_u128(user.to_bits());
            out.put_u8(u8::from(*answer));
            put_room(&mut out, room);
            out.put_slice(username.as_bytes());
            LEAVE
        }
        RoomMsg::Post { room, user, body } => {
            out.put_u128(user.to_bits());
            put_room(&mut out, room);
            out.put_slice(body);
            POST
        }
        RoomMsg::Members { room, user, offset } => {
            out.put_u128(user.to_bits());
            out.put_u64(*offset as u64);
            put_room(&mut out, room);
            MEMBERS
        }
        RoomMsg::Frame { room, seq, frame } => {
            out.put_u64(*seq);
            put_room(&mut out, room);
            out.put_slice(frame);
            FRAME
        }
        RoomMsg::Joined {
            room,
            user,
            ticket,
            seq,
            frames,
        } => {
            out.put_u128(user.to_bits());
            out.put_u64(*ticket);
            out.put_u64(*seq);
            put_room(&mut out, room);
            for frame in frames {
                out.put_u32(frame.len() as u32);
                out.put_slice(frame);
            }
            JOINED
        }
        RoomMsg::Reply { user, frame } => {
            out.put_u128(user.to_bits());
            out.put_slice(frame);
            REPLY
        }
        RoomMsg::LeaveAnswered { room, user } => {
            out.put_u128(user.to_bits());
            put_room(&mut out, room);
            LEFT
        }
        RoomMsg::Refused { .. } | RoomMsg::Rejoin { .. } => return None,
    };
    Some((kind, out.freeze()))
}

/// The room message in `payload`, or `None` for one this version did not write.
pub fn decode(kind: u8, mut payload: Bytes) -> Option<RoomMsg> {
    let p = &mut payload;
    let msg = match kind {
        JOIN => {
            let user = user(p)?;
            let ticket = u64_of(p)?;
            let flags = u8_of(p)?;
            let since = u64_of(p)?;
            let room = room(p)?;
            RoomMsg::Join {
                room,
                user,
                username: text(p)?,
                since: (flags & 1 != 0).then_some(since),
                ticket,
                restart: flags & 2 != 0,
            }
        }
        LEAVE => {
            let user = user(p)?;
            let answer = u8_of(p)? != 0;
            let room = room(p)?;
            RoomMsg::Leave {
                room,
                user,
                username: text(p)?,
                answer,
            }
        }
        POST => {
            let user = user(p)?;
            let room = room(p)?;
            RoomMsg::Post {
                room,
                user,
                body: payload,
            }
        }
        MEMBERS => {
            let user = user(p)?;
            let offset = usize::try_from(u64_of(p)?).ok()?;
            RoomMsg::Members {
                room: room(p)?,
                user,
                offset,
            }
        }
        FRAME => {
            let seq = u64_of(p)?;
            let room = room(p)?;
            RoomMsg::Frame {
                room,
                seq,
                frame: payload,
            }
        }
        JOINED => {
            let user = user(p)?;
            let ticket = u64_of(p)?;
            let seq = u64_of(p)?;
            let room = room(p)?;
            let mut frames = Vec::new();
            while p.has_remaining() {
                let len = u32_of(p)? as usize;
                (p.remaining() >= len).then_some(())?;
                frames.push(p.split_to(len));
            }
            RoomMsg::Joined {
                room,
                user,
                ticket,
                seq,
                frames,
            }
        }
        REPLY => RoomMsg::Reply {
            user: user(p)?,
            frame: payload,
        },
        LEFT => {
            let user = user(p)?;
            RoomMsg::LeaveAnswered {
                room: room(p)?,
                user,
            }
        }
        _ => return None,
    };
    Some(msg)
}

/// The member a message is about: the one to answer, or to tell that its request was refused.
pub fn user_of(msg: &RoomMsg) -> Option<UserId> {
    match msg {
        RoomMsg::Join { user, .. }
        | RoomMsg::Joined { user, .. }
        | RoomMsg::Leave { user, .. }
        | RoomMsg::Post { user, .. }
        | RoomMsg::Members { user, .. }
        | RoomMsg::Reply { user, .. }
        | RoomMsg::LeaveAnswered { user, .. }
        | RoomMsg::Refused { user, .. } => Some(*user),
        RoomMsg::Frame { .. } | RoomMsg::Rejoin { .. } => None,
    }
}

/// What a member's core is told when its request could not reach the owner node.
pub fn refused(request: RoomMsg) -> Option<RoomMsg> {
    let (room, user, ticket, answer) = match request {
        RoomMsg::Join {
            room, user, ticket, ..
        } => (room, user, Some(ticket), false),
        RoomMsg::Leave {
            room, user, answer, ..
        } => (room, user, None, answer),
        RoomMsg::Post { room, user, .. } | RoomMsg::Members { room, user, .. } => {
            (room, user, None, false)
        }
        _ => return None,
    };
    Some(RoomMsg::Refused {
        room,
        user,
        ticket,
        answer,
    })
}

fn put_room(out: &mut BytesMut, room: &str) {
    out.put_u16(room.len() as u16);
    out.put_slice(room.as_bytes());
}

fn user(p: &mut Bytes) -> Option<UserId> {
    (p.remaining() >= 16).then(|| UserId::from_bits(p.get_u128()))
}

fn u64_of(p: &mut Bytes) -> Option<u64> {
    (p.remaining() >= 8).then(|| p.get_u64())
}

fn u32_of(p: &mut Bytes) -> Option<u32> {
    (p.remaining() >= 4).then(|| p.get_u32())
}

fn u8_of(p: &mut Bytes) -> Option<u8> {
    (p.remaining() >= 1).then(|| p.get_u8())
}

fn room(p: &mut Bytes) -> Option<RoomName> {
    let len = (p.remaining() >= 2).then(|| p.get_u16())? as usize;
    (p.remaining() >= len).then_some(())?;
    let name = std::str::from_utf8(&p.split_to(len)).ok()?.into();
    Some(name)
}

fn text(p: &mut Bytes) -> Option<Arc<str>> {
    Some(std::str::from_utf8(p).ok()?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: RoomMsg) -> RoomMsg {
        let (kind, payload) = encode(&msg).unwrap();
        decode(kind, payload).unwrap()
    }

    #[test]
    fn room_messages_cross_nodes_intact() {
        let user = UserId::new(1, 0xabcd_ef01);
        let joined = round_trip(RoomMsg::Join {
            room: "rüst".into(),
            user,
            username: "zoë".into(),
            since: Some(7),
            ticket: 3,
            restart: true,
        });
        assert!(
            matches!(joined, RoomMsg::Join { ref room, since: Some(7), ticket: 3, restart: true, ref username, .. } if &**room == "rüst" && &**username == "zoë")
        );
        let frames = vec![Bytes::from_static(b"answer"), Bytes::from_static(b"")];
        let answer = round_trip(RoomMsg::Joined {
            room: "r".into(),
            user,
            ticket: 3,
            seq: 9,
            frames: frames.clone(),
        });
        assert!(
            matches!(answer, RoomMsg::Joined { seq: 9, frames: ref f, user: u, .. } if *f == frames && u == user)
        );
        let post = round_trip(RoomMsg::Post {
            room: "r".into(),
            user,
            body: Bytes::from_static(b"{\"type\":\"chat\""),
        });
        assert!(
            matches!(post, RoomMsg::Post { ref body, .. } if &body[..] == b"{\"type\":\"chat\"")
        );
        let frame = round_trip(RoomMsg::Frame {
            room: "r".into(),
            seq: 5,
            frame: Bytes::from_static(b"x"),
        });
        assert!(matches!(frame, RoomMsg::Frame { seq: 5, .. }));
        assert!(decode(JOIN, Bytes::from_static(b"short")).is_none());
        assert!(decode(99, Bytes::new()).is_none());
    }
}
