//! The shard's room paths: each request goes to the room's owner core, each stamped frame to the
//! cores with members. When the owner is this core the same code runs without a channel hop.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::protocol::{self, ErrorCode, JsonString};
use crate::chat::session::Session;
use crate::chat::shard::{Shard, ShardMsg};
use crate::chat::user_id::UserId;
use crate::net::outbound::OutFrame;
use crate::net::Connection;

use super::frames;
use super::owned::not_in_room;
use super::{owner_core, RoomMsg, RoomName};

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
                if self.room_directory.admit(&room).is_err() {
                    let reason = "the server holds its maximum number of rooms";
                    return conn.reply(protocol::error(ErrorCode::TooManyRooms, reason));
                }
                session.rooms.push(room.clone());
                room
            }
        };
        let user = session.user_id;
        let ticket = self.rooms.borrow_mut().request_join(user, &room);
        let username = session.username.clone();
        let owner = self.owner_of(&room);
        self.to_core(
            owner,
            RoomMsg::Join {
                room,
                user,
                username,
                since,
                ticket,
            },
        );
    }

    /// The session's user leaves `room`: no more of its frames from now on. The owner answers, so
    /// that the `leave_response` follows the answer to a `join` sent just before.
    pub fn leave_room(&self, conn: &Rc<Connection>, session: &mut Session, room: &str) {
        let Some(at) = session.rooms.iter().position(|r| &**r == room) else {
            return conn.reply(not_in_room(room));
        };
        let room = session.rooms.swap_remove(at);
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
        self.rooms.borrow_mut().leave(user, &room);
        let owner = self.owner_of(&room);
        let username = username.clone();
        self.to_core(
            owner,
            RoomMsg::Leave {
                room,
                user,
                username,
                answer,
            },
        );
    }

    /// A chat message from the session's user for `room`, to be stamped by the owner.
    pub fn post_to_room(
        &self,
        conn: &Rc<Connection>,
        session: &Session,
        room: &str,
        content: JsonString<'_>,
    ) {
        let Some(room) = session.room(room) else {
            return conn.reply(not_in_room(room));
        };
        let user = session.user_id;
        let body = protocol::room_chat_body(user, &session.username, &room, content);
        self.to_core(self.owner_of(&room), RoomMsg::Post { room, user, body });
    }

    /// A page of `room`'s members, from its owner.
    pub fn room_members(
        &self,
        conn: &Rc<Connection>,
        session: &Session,
        room: &str,
        offset: usize,
    ) {
        let Some(room) = session.room(room) else {
            return conn.reply(not_in_room(room));
        };
        let user = session.user_id;
        self.to_core(
            self.owner_of(&room),
            RoomMsg::Members { room, user, offset },
        );
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
            self.send_room_frame(&room, frame);
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
            } => {
                let frames = self.owned.borrow_mut().join(&room, user, &username, since);
                let joined = RoomMsg::Joined {
                    room,
                    user,
                    ticket,
                    frames,
                };
                self.to_core(user.core(), joined);
            }
            RoomMsg::Joined {
                room,
                user,
                ticket,
                frames,
            } => {
                let Some(conn) = self.user_connection(user) else {
                    return;
                };
                self.rooms.borrow_mut().joined(&room, user, ticket, &conn);
                for frame in frames {
                    conn.reply(frame);
                }
            }
            RoomMsg::Leave {
                room,
                user,
                username,
                answer,
            } => {
                self.owned.borrow_mut().leave(&room, user, &username);
                if answer {
                    let frame = frames::leave_response(&room);
                    self.to_core(user.core(), RoomMsg::Reply { user, frame });
                }
            }
            RoomMsg::Post { room, user, body } => {
                let stamped = self.owned.borrow_mut().post(&room, user, &body);
                match stamped {
                    Some(frame) => self.send_room_frame(&room, frame),
                    None => self.to_core(
                        user.core(),
                        RoomMsg::Reply {
                            user,
                            frame: not_in_room(&room),
                        },
                    ),
                }
            }
            RoomMsg::Frame { room, frame } => {
                self.rooms.borrow().fan_out(&room, &OutFrame::new(frame));
            }
            RoomMsg::Members { room, user, offset } => {
                let frame = self.owned.borrow().members_page(&room, user, offset);
                self.to_core(user.core(), RoomMsg::Reply { user, frame });
            }
            RoomMsg::Reply { user, frame } => self.reply_to(user, frame),
        }
    }

    /// Sends a frame of an owned room once to each core with members, this one included.
    fn send_room_frame(&self, room: &RoomName, frame: Bytes) {
        let owned = self.owned.borrow();
        for &core in owned.cores_of(room) {
            if core == self.id {
                self.rooms
                    .borrow()
                    .fan_out(room, &OutFrame::new(frame.clone()));
            } else {
                let room = room.clone();
                let frame = frame.clone();
                self.router
                    .send(core, ShardMsg::Room(RoomMsg::Frame { room, frame }));
            }
        }
    }

    fn reply_to(&self, user: UserId, frame: Bytes) {
        if let Some(conn) = self.user_connection(user) {
            conn.reply(frame);
        }
    }

    fn owner_of(&self, room: &str) -> usize {
        owner_core(room, self.router.cores())
    }

    fn to_core(&self, core: usize, msg: RoomMsg) {
        if core == self.id {
            self.handle_room(msg);
        } else {
            self.router.send(core, ShardMsg::Room(msg));
        }
    }
}
