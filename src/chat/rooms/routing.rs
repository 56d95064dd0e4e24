//! The shard's room paths: each request goes to the room's owner core, each stamped frame to the
//! cores with members. When the owner is this core the same code runs without a channel hop.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::protocol::{self, ErrorCode, JsonString};
use crate::chat::shard::{Shard, ShardMsg};
use crate::chat::user_id::UserId;
use crate::net::outbound::OutFrame;
use crate::net::Connection;

use super::frames;
use super::local::TooMany;
use super::owned::not_in_room;
use super::{owner_core, RoomMsg, RoomName};

impl Shard {
    /// `user` asks to join `room`; the owner answers with the `join_response` and any replay.
    pub fn join_room(
        &self,
        conn: &Rc<Connection>,
        user: UserId,
        username: &Arc<str>,
        room: RoomName,
        since: Option<u64>,
    ) {
        let max = self.config.max_rooms_per_user;
        let ticket = match self.rooms.borrow_mut().request_join(user, &room, max) {
            Ok(ticket) => ticket,
            Err(TooMany) => {
                let reason = format!("you are in {max} rooms, the most one user may be in");
                return conn.reply(protocol::error(ErrorCode::TooManyRooms, &reason));
            }
        };
        let username = username.clone();
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

    /// `user` leaves `room`: no more of its frames from now on. The owner answers, so that the
    /// `leave_response` follows the answer to a `join` sent just before.
    pub fn leave_room(&self, conn: &Rc<Connection>, user: UserId, username: &Arc<str>, room: &str) {
        let Some(room) = self.rooms.borrow().room_of(user, room) else {
            return conn.reply(not_in_room(room));
        };
        self.rooms.borrow_mut().leave(user, &room);
        let username = username.clone();
        let owner = self.owner_of(&room);
        self.to_core(
            owner,
            RoomMsg::Leave {
                room,
                user,
                username,
                answer: true,
            },
        );
    }

    /// Takes a logged-out user out of all its rooms.
    pub fn leave_all_rooms(&self, user: UserId, username: &Arc<str>) {
        let rooms = self.rooms.borrow_mut().leave_all(user);
        for room in rooms {
            let username = username.clone();
            let owner = self.owner_of(&room);
            self.to_core(
                owner,
                RoomMsg::Leave {
                    room,
                    user,
                    username,
                    answer: false,
                },
            );
        }
    }

    /// A chat message from `user` for `room`, to be stamped by the owner.
    pub fn post_to_room(
        &self,
        conn: &Rc<Connection>,
        user: UserId,
        username: &str,
        room: &str,
        content: JsonString<'_>,
    ) {
        let Some(room) = self.rooms.borrow().room_of(user, room) else {
            return conn.reply(not_in_room(room));
        };
        let body = protocol::room_chat_body(user, username, &room, content);
        self.to_core(self.owner_of(&room), RoomMsg::Post { room, user, body });
    }

    /// A page of `room`'s members, from its owner.
    pub fn room_members(&self, conn: &Rc<Connection>, user: UserId, room: &str, offset: usize) {
        let Some(room) = self.rooms.borrow().room_of(user, room) else {
            return conn.reply(not_in_room(room));
        };
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
                let answer = self.owned.borrow_mut().join(&room, user, &username, since);
                let reply = match answer {
                    Ok(frames) => RoomMsg::Joined {
                        room,
                        user,
                        ticket,
                        frames,
                    },
                    Err(frame) => RoomMsg::Refused { room, user, frame },
                };
                self.to_core(user.core(), reply);
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
            RoomMsg::Refused { room, user, frame } => {
                self.rooms.borrow_mut().leave(user, &room);
                self.reply_to(user, frame);
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
