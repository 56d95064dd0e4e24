//! One core's share of the chat: its logged-in users, its presence batch, and how it reaches the
//! users of other cores.
//!
//! Each core owns the users whose connections it accepted, so all of this is plain `Rc`/`RefCell`:
//! no lock and no atomic on the message path. Users of other cores are reached only through the
//! [`Router`]. The path of one broadcast: [`session`](super::session) builds the frame once,
//! [`Shard::broadcast`] hands the same `Bytes` to each other core and queues it for every local
//! member, and each connection's writer sends it with whatever else is queued.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::chat::directory::Directory;
use crate::chat::presence::PresenceBatch;
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::user_id::UserId;
use crate::config::Config;
use crate::hub::{Roster, Router};
use crate::net::outbound::OutFrame;
use crate::net::Connection;

/// What one core's chat tells another.
#[derive(Debug)]
pub enum ShardMsg {
    /// A frame for every logged-in user of the receiving core.
    Broadcast(Bytes),
    /// A chat frame for one user of the receiving core, sent by `from`.
    Direct {
        to: UserId,
        from: UserId,
        frame: Bytes,
    },
    /// The direct message `from` sent to `recipient` found nobody; tell `from`.
    NotFound { from: UserId, recipient: UserId },
}

pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    /// Unique usernames server-wide; locked at login, logout, `users` pages and presence ticks.
    pub directory: Arc<Directory>,
    pub router: Router<ShardMsg>,
    /// Logged-in users of this core, by userID.
    lobby: RefCell<Roster<UserId>>,
    presence: RefCell<PresenceBatch>,
    /// When this core last sent a presence frame: counts-only frames wait a longer interval.
    presence_sent: Cell<Instant>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        directory: Arc<Directory>,
        router: Router<ShardMsg>,
    ) -> Shard {
        Shard {
            id,
            presence: RefCell::new(PresenceBatch::new(config.presence_names)),
            config,
            directory,
            router,
            lobby: RefCell::default(),
            presence_sent: Cell::new(Instant::now()),
        }
    }

    /// Makes `conn` a member of the lobby as `user_id`, and announces the join.
    pub fn add_member(&self, conn: &Rc<Connection>, user_id: UserId, username: &str) {
        self.lobby.borrow_mut().insert(user_id, conn.clone());
        self.presence.borrow_mut().joined(user_id, username);
    }

    /// Takes `user_id` out of the lobby, and announces the leave.
    pub fn remove_member(&self, user_id: UserId, username: &str) {
        self.lobby.borrow_mut().remove(user_id);
        self.presence.borrow_mut().left(user_id, username);
    }

    /// A frame for every logged-in user of every core except the connection `except`.
    pub fn broadcast(&self, frame: Bytes, except: Option<u64>) {
        self.router
            .send_to_others(|| ShardMsg::Broadcast(frame.clone()));
        self.lobby.borrow().fan_out(&OutFrame::new(frame), except);
    }

    /// A chat frame from `from` for `to`, wherever `to` lives.
    pub fn direct(&self, from: UserId, to: UserId, frame: Bytes) {
        if to.core() == self.id {
            self.deliver_direct(from, to, frame);
        } else {
            self.router
                .send(to.core(), ShardMsg::Direct { to, from, frame });
        }
    }

    /// Acts on a message from another core.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Broadcast(frame) => self.lobby.borrow().fan_out(&OutFrame::new(frame), None),
            ShardMsg::Direct { to, from, frame } => self.deliver_direct(from, to, frame),
            ShardMsg::NotFound { from, recipient } => self.report_not_found(from, recipient),
        }
    }

    /// Sends this core's presence frame if anything changed, at most once per
    /// `--presence-count-interval` when it can carry counts only. Called every `--presence-interval`.
    pub fn tick_presence(&self) {
        if self.presence.borrow().is_empty() {
            return;
        }
        let user_count = self.directory.len();
        let counts_only = user_count > self.config.presence_limit;
        if counts_only && self.presence_sent.get().elapsed() < self.config.presence_count_interval {
            return;
        }
        self.presence_sent.set(Instant::now());
        let frame = self
            .presence
            .borrow_mut()
            .take_frame(user_count, self.config.presence_limit);
        if let Some(frame) = frame {
            self.broadcast(frame, None);
        }
    }

    fn deliver_direct(&self, from: UserId, to: UserId, frame: Bytes) {
        let recipient = self.lobby.borrow().get(to).cloned();
        match recipient {
            Some(conn) => conn.reply(frame),
            None => self.report_not_found(from, to),
        }
    }

    fn report_not_found(&self, from: UserId, recipient: UserId) {
        if from.core() != self.id {
            return self
                .router
                .send(from.core(), ShardMsg::NotFound { from, recipient });
        }
        let sender = self.lobby.borrow().get(from).cloned();
        if let Some(conn) = sender {
            conn.reply(user_not_found(&recipient.to_string()));
        }
    }
}

/// The error for a direct message to `recipient` that found nobody.
pub fn user_not_found(recipient: &str) -> Bytes {
    let shown: String = recipient.chars().take(64).collect();
    protocol::error(ErrorCode::UserNotFound, &format!("no user with ID {shown}"))
}
