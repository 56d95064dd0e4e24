//! The shard's room paths: each request goes to the room's owner core, each stamped frame to the
//! cores with members. When the owner is this core the same code runs without a channel hop.
//!
//! In a cluster (docs/CLUSTER.md) every request goes through the bridge, which knows each room's
//! owner node and hands it to that node's owner core (this node's included); the owner answers
//! members of other nodes, and sends them its frames once per node, on the room's subject. A
//! member core checks that those frames come gap-free, and joins its members again if not.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::protocol::{self, ErrorCode, JsonString};
use crate::chat::session::Session;
use crate::chat::shard::{self, Shard, ShardMsg};
use crate::chat::user_id::UserId;
use crate::net::outbound::OutFrame;
use crate::net::Connection;

use super::frames;
use super::local::{Arrival, Rejoins};
use super::owned::not_in_room;
use super::{owner_core, wire, RoomMsg, RoomName};

impl Shard {
    /// The session's user asks to join `room`; the owner answers with the `join_response` and
    /// any replay. The caps are checked here: the user's, and the server's, whose room directory
    /// takes the name before the join leaves for the owner, so the owner never has to refuse.
    pub fn join_room(
        &self,
        conn: &Rc<Connection>,
        session: &mut Session,
        room: &str,
        since: Option<u64>,
    ) {
        let room = match session.room(room) {
            Some(room) => room,
            None => {
                let max = self.config.max_rooms_per_user;
                if session.rooms.len() >= max {
                    let reason = format!("you are in {max} rooms, the most one user may be in");
                    return conn.reply(protocol::error(ErrorCode::TooManyRooms, &reason));
                }
                let room: RoomName = room.into();
                // In a cluster only the owner node lists a room (docs/CLUSTER.md).
                let admitted = match self.cluster {
                    None => self.room_directory.admit(&room),
                    Some(_) => self.room_directory.may_admit(&room),
                };
                if admitted.is_err() {
                    let reason = "the server holds its maximum number of rooms";
                    return conn.reply(protocol::error(ErrorCode::TooManyRooms, reason));
                }
                session.rooms.push(room.clone());
                room
            }
        };
        let user = session.user_id;
        let name = self.cluster.as_ref().map(|_| &session.username);
        let (ticket, new) = self.rooms.borrow_mut().request_join(user, &room, name);
        if new {
            self.watch(&room, true);
        }
        let username = session.username.clone();
        self.to_owner(RoomMsg::Join {
            room,
            user,
            username,
            since,
            ticket,
            restart: false,
        });
    }

    /// The session's user leaves `room`: no more of its frames from now on. The owner answers, so
    /// that the `leave_response` follows the answer to a `join` sent just before.
    pub fn leave_room(&self, conn: &Rc<Connection>, session: &mut Session, room: &str) {
        let Some(at) = session.rooms.iter().position(|r| &**r == room) else {
            return conn.reply(not_in_room(room));
        };
        let room = session.rooms.swap_remove(at);
        if self.refused_here(&room) {
            // Its join never reached the owner: nothing to undo there.
            return conn.reply(frames::leave_response(&room));
        }
        self.leave(session.user_id, &session.username, room, true);
    }

    /// Takes a logged-out user out of all its rooms.
    pub fn leave_all_rooms(&self, user: UserId, username: &Arc<str>, rooms: Vec<RoomName>) {
        for room in rooms {
            self.leave(user, username, room, false);
        }
    }

    /// Stops `room`'s frames to `user` here, and tells the owner (which answers when `answer`).
    fn leave(&self, user: UserId, username: &Arc<str>, room: RoomName, answer: bool) {
        let gone = self.rooms.borrow_mut().leave(user, &room, answer);
        if gone {
            self.watch(&room, false);
        }
        let username = username.clone();
        self.to_owner(RoomMsg::Leave {
            room,
            user,
            username,
            answer,
        });
    }

    /// A chat message from the session's user for `room`, to be stamped by the owner.
    pub fn post_to_room(
        &self,
        conn: &Rc<Connection>,
        session: &Session,
        room: &str,
        content: JsonString<'_>,
    ) {
        let Some(room) = session.room(room).filter(|room| !self.refused_here(room)) else {
            return conn.reply(not_in_room(room));
        };
        let user = session.user_id;
        let body = protocol::room_chat_body(user, &session.username, &room, content);
        self.to_owner(RoomMsg::Post { room, user, body });
    }

    /// A page of `room`'s members, from its owner.
    pub fn room_members(
        &self,
        conn: &Rc<Connection>,
        session: &Session,
        room: &str,
        offset: usize,
    ) {
        let Some(room) = session.room(room).filter(|room| !self.refused_here(room)) else {
            return conn.reply(not_in_room(room));
        };
        let user = session.user_id;
        self.to_owner(RoomMsg::Members { room, user, offset });
    }

    /// A page of the server's rooms.
    pub fn room_page(&self, conn: &Rc<Connection>, offset: usize) {
        let limit = self.config.user_list_limit;
        let (rooms, count) = self.room_directory.page(offset, limit);
        conn.reply(frames::room_list(offset, &rooms, count));
    }

    /// Sends the owned rooms' presence that is due, and drops rooms idle past their time.
    pub fn tick_rooms(&self) {
        let due = self.owned.borrow_mut().tick(Instant::now());
        for (room, frame) in due {
            self.send_room_frame(&room, 0, frame);
        }
    }

    /// Acts on a room message, from another core or from this one.
    pub fn handle_room(&self, msg: RoomMsg) {
        match msg {
            RoomMsg::Join {
                room,
                user,
                username,
                since,
                ticket,
                restart,
            } => {
                let joined = (self.owned.borrow_mut()).join(&room, user, &username, since, restart);
                let (frames, seq) = joined;
                let answer = RoomMsg::Joined {
                    room: room.clone(),
                    user,
                    ticket,
                    seq,
                    frames,
                };
                self.answer(&room, answer);
            }
            RoomMsg::Joined {
                room,
                user,
                ticket,
                seq,
                frames,
            } => {
                let Some(conn) = self.user_connection(user) else {
                    return self.answered(&room, user, None);
                };
                let tracked = self.cluster.is_some();
                let (rejoin, gone) =
                    (self.rooms.borrow_mut()).joined(&room, user, ticket, seq, &conn, tracked);
                for frame in frames {
                    conn.reply(frame);
                }
                if gone {
                    self.watch(&room, false);
                }
                // The answer's seq is past the frames the other members here got: join them again.
                self.send_rejoins(&room, rejoin, false);
            }
            RoomMsg::Leave {
                room,
                user,
                username,
                answer,
            } => {
                self.owned.borrow_mut().leave(&room, user, &username);
                if answer {
                    let answer = RoomMsg::LeaveAnswered {
                        room: room.clone(),
                        user,
                    };
                    self.answer(&room, answer);
                }
            }
            RoomMsg::LeaveAnswered { room, user } => {
                self.answered(&room, user, None);
                self.reply_to(user, frames::leave_response(&room));
            }
            RoomMsg::Post { room, user, body } => {
                let stamped = self.owned.borrow_mut().post(&room, user, &body);
                match stamped {
                    Some((seq, frame)) => self.send_room_frame(&room, seq, frame),
                    None => {
                        let frame = not_in_room(&room);
                        self.answer(&room, RoomMsg::Reply { user, frame });
                    }
                }
            }
            RoomMsg::Frame { room, seq, frame } => self.deliver_room_frame(&room, seq, frame),
            RoomMsg::Members { room, user, offset } => {
                let frame = self.owned.borrow().members_page(&room, user, offset);
                self.answer(&room, RoomMsg::Reply { user, frame });
            }
            RoomMsg::Reply { user, frame } => self.reply_to(user, frame),
            RoomMsg::Refused {
                room,
                user,
                ticket,
                answer,
            } => {
                if ticket.is_some() || answer {
                    self.answered(&room, user, ticket);
                }
                let what = "the node that owns the room cannot be reached, so the request was not carried out";
                self.reply_to(user, shard::cluster_unavailable(what));
            }
            RoomMsg::Rejoin { room } => {
                let rejoin = self.rooms.borrow_mut().rejoin(&room, true);
                self.send_rejoins(&room, rejoin, true);
            }
        }
    }

    /// Sends a frame of an owned room once to each core with members, this one included, and in a
    /// cluster once on the room's subject if other nodes have members.
    fn send_room_frame(&self, room: &RoomName, seq: u64, frame: Bytes) {
        let owned = self.owned.borrow();
        let mut here = false;
        for &core in owned.cores_of(room) {
            if core == self.id {
                here = true;
            } else {
                let room = room.clone();
                let frame = frame.clone();
                let msg = RoomMsg::Frame { room, seq, frame };
                self.router.send(core, ShardMsg::Room(msg));
            }
        }
        if let Some(cluster) = (self.cluster.as_ref()).filter(|_| owned.has_members_elsewhere(room))
        {
            let msg = RoomMsg::Frame {
                room: room.clone(),
                seq,
                frame: frame.clone(),
            };
            let (kind, payload) = wire::encode(&msg).expect("frames cross nodes");
            // Refused while cut off: the other nodes see the gap and join again once back.
            let _ = cluster.room_feed(room, kind, payload);
        }
        drop(owned);
        if here {
            self.deliver_room_frame(room, seq, frame);
        }
    }

    /// A room frame for this core's members. In a cluster its seq must follow the last one
    /// delivered: one seen already is dropped, and after a gap the members join again with
    /// `since`, so that they get the replay or `recovered: false` instead of a silent hole.
    fn deliver_room_frame(&self, room: &RoomName, seq: u64, frame: Bytes) {
        if self.cluster.is_some() && seq != 0 {
            let arrival = self.rooms.borrow_mut().take(room, seq);
            match arrival {
                Arrival::Deliver => {}
                Arrival::Drop => return,
                Arrival::Gap { since } => {
                    tracing::debug!(%room, since, seq, "a room frame went missing: its members here join again");
                    let rejoin = self.rooms.borrow_mut().rejoin(room, false);
                    return self.send_rejoins(room, rejoin, false);
                }
            }
        }
        self.rooms.borrow().fan_out(room, &OutFrame::new(frame));
    }

    /// Sends the joins of members made pending again, after `since` (the last seq they got);
    /// `restart`: the owner changed.
    fn send_rejoins(&self, room: &RoomName, (since, members): Rejoins, restart: bool) {
        for (user, username, ticket) in members {
            self.to_owner(RoomMsg::Join {
                room: room.clone(),
                user,
                username,
                since,
                ticket,
                restart,
            });
        }
    }

    /// An answer that makes nobody a member arrived; forgets the room here once it is empty.
    fn answered(&self, room: &str, user: UserId, ticket: Option<u64>) {
        if self.rooms.borrow_mut().answered(room, user, ticket) {
            self.watch(room, false);
        }
    }

    fn reply_to(&self, user: UserId, frame: Bytes) {
        if let Some(conn) = self.user_connection(user) {
            conn.reply(frame);
        }
    }

    /// A request for the owner of its room: the owner core of this node, or in a cluster through
    /// the bridge to whichever node owns the room.
    fn to_owner(&self, msg: RoomMsg) {
        let Some(room) = request_room(&msg) else {
            return;
        };
        let Some(cluster) = &self.cluster else {
            return self.to_core(owner_core(room, self.router.cores()), msg);
        };
        let (kind, payload) = wire::encode(&msg).expect("requests cross nodes");
        if cluster.to_owner(room, kind, payload).is_err() {
            if let Some(refused) = wire::refused(msg) {
                self.handle_room(refused);
            }
        }
    }

    /// An owner's answer for a member: on this node through its core, on another through the
    /// room's subject (in order with the room's frames).
    fn answer(&self, room: &RoomName, msg: RoomMsg) {
        let Some(user) = wire::user_of(&msg) else {
            return;
        };
        if user.node() == self.node {
            return self.to_core(user.core(), msg);
        }
        if let Some(cluster) = &self.cluster {
            if let Some((kind, payload)) = wire::encode(&msg) {
                let _ = cluster.room_feed(room, kind, payload);
            }
        }
    }

    /// In a cluster: whether the session lists `room` only because its join was refused
    /// (`CLUSTER_UNAVAILABLE`). This core then has nothing of the room, nor its subscription, so
    /// the owner's answers could not arrive: the request is answered here. Never on a single node.
    fn refused_here(&self, room: &str) -> bool {
        self.cluster.is_some() && !self.rooms.borrow().has(room)
    }

    /// In a cluster: this core starts or stops having members of `room`.
    fn watch(&self, room: &str, watch: bool) {
        if let Some(cluster) = &self.cluster {
            cluster.watch_room(room, self.id, watch);
        }
    }

    fn to_core(&self, core: usize, msg: RoomMsg) {
        if core == self.id {
            self.handle_room(msg);
        } else {
            self.router.send(core, ShardMsg::Room(msg));
        }
    }
}

/// The room a request is about.
fn request_room(msg: &RoomMsg) -> Option<&RoomName> {
    match msg {
        RoomMsg::Join { room, .. }
        | RoomMsg::Leave { room, .. }
        | RoomMsg::Post { room, .. }
        | RoomMsg::Members { room, .. } => Some(room),
        _ => None,
    }
}
