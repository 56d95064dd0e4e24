//! What each inbound frame does: login, chat, user pages, ping, logout.
//!
//! Runs on the connection's own core. The session itself belongs to the connection's reader task,
//! which hands it in with every frame. Everything here is single-threaded except the directory,
//! which is touched at login, logout and `users` only.

use std::rc::Rc;
use std::sync::Arc;

use crate::auth::{Grant, Verifier};
use crate::chat::counters;
use crate::chat::directory::{NameError, Registration};
use crate::chat::protocol::{self, ErrorCode, JsonString, Request};
use crate::chat::rooms::requests as rooms;
use crate::chat::rooms::RoomName;
use crate::chat::shard::{self, Shard};
use crate::chat::user_id::UserId;
use crate::cluster::ClaimOutcome;
use crate::net::guards::Verdict;
use crate::net::{CloseReason, Connection};

/// A logged-in user.
#[derive(Debug)]
pub struct Session {
    pub user_id: UserId,
    /// Shared with the directory: one copy of the name per user.
    pub username: Arc<str>,
    /// The rooms the user is in or joining. Kept here rather than in a map on the core: a
    /// membership then costs one pointer.
    pub rooms: Vec<RoomName>,
    /// What the login token granted (its `sub`, rooms and rate); `None` on an open server.
    pub grant: Option<Grant>,
    registration: Registration,
    /// In a cluster, until the names bucket has answered: the login is pending, the user is not in
    /// the lobby yet, and the connection's reader waits for the answer before it reads on.
    claim: Option<flume::Receiver<ClaimOutcome>>,
}

/// The answer a pending login waits for, if the connection's login is pending (a cluster's name
/// claim); `None` otherwise, always on a single node.
pub fn pending_claim(session: &Option<Session>) -> Option<flume::Receiver<ClaimOutcome>> {
    session.as_ref()?.claim.clone()
}

/// True while the connection's login waits for the cluster: its next frames must wait too.
pub fn is_pending(session: &Option<Session>) -> bool {
    session
        .as_ref()
        .is_some_and(|session| session.claim.is_some())
}

impl Session {
    /// The shared name of `room` if the user is in it (or joining it).
    pub fn room(&self, room: &str) -> Option<RoomName> {
        self.rooms.iter().find(|r| &***r == room).cloned()
    }
}

/// Acts on one frame from `conn`, whose logged-in user (if any) is `session`.
pub fn handle_frame(
    shard: &Shard,
    conn: &Rc<Connection>,
    session: &mut Option<Session>,
    frame: &[u8],
) {
    let verdict = conn.take_token();
    if verdict != Verdict::Allowed {
        shard
            .counters
            .received(conn.transport(), counters::RATE_LIMITED);
    }
    match verdict {
        Verdict::Allowed => {}
        Verdict::Limited => {
            let reason = format!(
                "slow down: at most {} frames per second",
                shard.config.rate_limit
            );
            return conn.reply(protocol::error(ErrorCode::RateLimited, &reason));
        }
        Verdict::Disconnect => {
            let reason = "you kept flooding after being rate limited";
            let frame = protocol::error(ErrorCode::RateLimited, reason);
            return conn.finish(frame, CloseReason::Flood);
        }
    }
    let request = match protocol::parse_request(frame) {
        Ok(request) => request,
        Err(reason) => {
            shard.counters.received(conn.transport(), counters::INVALID);
            return conn.reply(protocol::error(ErrorCode::InvalidMessage, &reason));
        }
    };
    shard.counters.received(conn.transport(), &request.kind);
    match request.kind.as_ref() {
        "connect" => login(shard, conn, session, &request),
        "ping" => conn.reply(protocol::pong(request.content)),
        "pong" => {}
        "disconnect" => disconnect(shard, conn, session),
        kind @ ("chat" | "users" | "join" | "leave" | "rooms" | "members") => {
            let Some(session) = session.as_mut() else {
                return not_connected(conn);
            };
            match kind {
                "chat" if request.room.is_some() => rooms::post(shard, conn, session, &request),
                "chat" => chat(shard, conn, session, &request),
                "users" => users(shard, conn, session, request.content),
                "join" => rooms::join(shard, conn, session, &request),
                "leave" => rooms::leave(shard, conn, session, &request),
                "rooms" => rooms::rooms(shard, conn, &request),
                _ => rooms::members(shard, conn, session, &request),
            }
        }
        other => {
            let reason = format!(
                "unknown type `{}`",
                other.chars().take(64).collect::<String>()
            );
            conn.reply(protocol::error(ErrorCode::UnknownType, &reason));
        }
    }
}

fn not_connected(conn: &Rc<Connection>) {
    let reason = "log in first with {\"type\":\"connect\",\"content\":\"<name>\"}";
    conn.reply(protocol::error(ErrorCode::NotConnected, reason));
}

fn login(
    shard: &Shard,
    conn: &Rc<Connection>,
    session: &mut Option<Session>,
    request: &Request<'_>,
) {
    if session.is_some() {
        let reason = "this connection is already logged in";
        return conn.reply(protocol::error(ErrorCode::AlreadyConnected, reason));
    }
    let username: Arc<str> = request.content.decode().into();
    let grant = match &shard.auth {
        None => None,
        Some(verifier) => match authenticate(verifier, conn, request, &username) {
            Some(grant) => Some(grant),
            None => return,
        },
    };
    let user_id = UserId::new(shard.id, shard.node);
    let registration = match shard.directory.register(username.clone(), user_id) {
        Ok(registration) => registration,
        Err(NameError::Invalid(reason)) => {
            return conn.reply(protocol::error(ErrorCode::InvalidUsername, reason));
        }
        Err(NameError::Taken) => return conn.reply(name_taken(&username)),
    };
    let claim = match &shard.cluster {
        None => None,
        Some(cluster) => match cluster.claim(&username, user_id.to_bits()) {
            Ok(answer) => Some(answer),
            Err(_) => {
                shard.directory.unregister(registration);
                return conn.reply(shard::cluster_unavailable(
                    "no name can be promised unique, so logins wait until it is back",
                ));
            }
        },
    };
    let new = Session {
        user_id,
        username,
        rooms: Vec::new(),
        grant,
        registration,
        claim,
    };
    if new.claim.is_none() {
        welcome(shard, conn, &new);
    }
    *session = Some(new);
}

fn name_taken(username: &str) -> bytes::Bytes {
    let reason = format!("the name `{username}` is taken");
    protocol::error(ErrorCode::NameTaken, &reason)
}

/// Completes a login: `connect_response`, then the user joins the lobby.
fn welcome(shard: &Shard, conn: &Rc<Connection>, session: &Session) {
    let (user_list, user_count) = shard
        .directory
        .first_page_json(shard.config.user_list_limit);
    let Session {
        user_id,
        username,
        grant,
        ..
    } = session;
    conn.reply(protocol::connect_response(
        *user_id, username, &user_list, user_count,
    ));
    let subject = grant.as_ref().map(|grant| &*grant.subject);
    tracing::debug!(conn = conn.id, %user_id, %username, ?subject, "logged in");
    if let Some(rate) = grant.as_ref().and_then(|grant| grant.rate) {
        conn.raise_rate_limit(rate);
    }
    shard.add_member(conn, *user_id, username);
    conn.set_identified(true);
}

/// Ends a pending login with the cluster's answer: welcomed, or refused (the name is free again).
pub fn settle_login(
    shard: &Shard,
    conn: &Rc<Connection>,
    session: &mut Option<Session>,
    outcome: ClaimOutcome,
) {
    let Some(pending) = session.as_mut() else {
        return;
    };
    pending.claim = None;
    let refusal = match outcome {
        ClaimOutcome::Claimed => return welcome(shard, conn, pending),
        ClaimOutcome::Taken => name_taken(&pending.username),
        ClaimOutcome::Unavailable => shard::cluster_unavailable(
            "the cluster's names could not be asked, so no name can be promised unique",
        ),
    };
    let refused = session.take().expect("pending above");
    shard.directory.unregister(refused.registration);
    conn.reply(refusal);
}

/// Checks the token a login needs on this server. Without one it sends `AUTH_REQUIRED`, with a bad
/// one `AUTH_FAILED`, and closes either way: a client cannot try tokens on one connection.
fn authenticate(
    verifier: &Verifier,
    conn: &Rc<Connection>,
    request: &Request<'_>,
    username: &str,
) -> Option<Grant> {
    let Some(token) = request.token.as_deref().filter(|token| !token.is_empty()) else {
        let reason = "this server needs a signed login: {\"type\":\"connect\",\"content\":\"<name>\",\"token\":\"<jwt>\"}";
        let frame = protocol::error(ErrorCode::AuthRequired, reason);
        conn.finish(frame, CloseReason::AuthRequired);
        return None;
    };
    match verifier.verify(token, username) {
        Ok(grant) => Some(grant),
        Err(reason) => {
            tracing::debug!(conn = conn.id, %reason, "login refused");
            conn.finish(
                protocol::error(ErrorCode::AuthFailed, &reason),
                CloseReason::AuthFailed,
            );
            None
        }
    }
}

fn chat(shard: &Shard, conn: &Rc<Connection>, session: &Session, request: &Request<'_>) {
    if request.recipient_id.is_empty() {
        let frame = protocol::chat(session.user_id, &session.username, None, request.content);
        if shard.broadcast(frame, Some(conn.id)).is_err() {
            conn.reply(shard::cluster_unavailable(
                "your message reached this node's users only, not the other nodes'",
            ));
        }
        return;
    }
    let local = |id: &UserId| id.node() != shard.node || id.core() < shard.router.cores();
    match UserId::parse(&request.recipient_id).filter(local) {
        Some(recipient) => {
            let frame = protocol::chat(
                session.user_id,
                &session.username,
                Some(recipient),
                request.content,
            );
            if shard.direct(session.user_id, recipient, frame).is_err() {
                conn.reply(shard::cluster_unavailable(
                    "your direct message for a user of another node was not sent",
                ));
            }
        }
        None => conn.reply(shard::user_not_found(&request.recipient_id)),
    }
}

fn users(shard: &Shard, conn: &Rc<Connection>, session: &Session, content: JsonString<'_>) {
    let Some(offset) = parse_offset(conn, "users", content) else {
        return;
    };
    let (user_list, user_count) = shard.directory.page(offset, shard.config.user_list_limit);
    conn.reply(protocol::user_list_update(
        session.user_id,
        offset,
        &user_list,
        user_count,
    ));
}

/// The offset a page request (`users`, `rooms`, `members`) carries in its content: empty is 0.
/// Anything but a non-negative integer gets `INVALID_MESSAGE` and `None`.
pub fn parse_offset(conn: &Rc<Connection>, kind: &str, content: JsonString<'_>) -> Option<usize> {
    let text = content.decode();
    if text.is_empty() {
        return Some(0);
    }
    let offset = text.trim().parse::<usize>().ok();
    if offset.is_none() {
        let reason = format!("`{kind}` takes an offset: a non-negative integer as a string");
        conn.reply(protocol::error(ErrorCode::InvalidMessage, &reason));
    }
    offset
}

fn disconnect(shard: &Shard, conn: &Rc<Connection>, session: &mut Option<Session>) {
    let user = session.as_ref().map(|s| (s.user_id, s.username.as_ref()));
    let reply = protocol::disconnect_response(user);
    logout(shard, conn, session);
    conn.finish(reply, CloseReason::Disconnect);
}

/// Logs the connection's user out, if it has one: frees the name and announces the leave.
pub fn logout(shard: &Shard, conn: &Connection, session: &mut Option<Session>) {
    let Some(session) = session.take() else {
        return;
    };
    tracing::debug!(conn = conn.id, user_id = %session.user_id, username = %session.username, "logged out");
    if session.claim.is_none() {
        shard.remove_member(session.user_id, &session.username, session.rooms);
    }
    shard.directory.unregister(session.registration);
    if let Some(cluster) = &shard.cluster {
        cluster.release(&session.username, session.user_id.to_bits());
    }
}
