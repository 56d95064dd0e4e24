//! What each inbound frame does: login, chat, user pages, ping, logout.
//!
//! Runs on the connection's own core. Everything here is single-threaded except the directory,
//! which is touched at login, logout and `users` only.

use std::rc::Rc;
use std::sync::Arc;

use crate::connection::Connection;
use crate::core::Core;
use crate::directory::{NameError, Registration};
use crate::guards::Verdict;
use crate::protocol::{self, ErrorCode, JsonString, Request};
use crate::user_id::UserId;

/// A logged-in user.
#[derive(Debug)]
pub struct Session {
    pub user_id: UserId,
    /// Shared with the directory: one copy of the name per user.
    pub username: Arc<str>,
    registration: Registration,
}

/// Acts on one frame from `conn`.
pub fn handle_frame(core: &Rc<Core>, conn: &Rc<Connection>, frame: &[u8]) {
    match conn.take_token(core) {
        Verdict::Allowed => {}
        Verdict::Limited => {
            let reason = format!(
                "slow down: at most {} frames per second",
                core.config.rate_limit
            );
            return conn.reply(core, protocol::error(ErrorCode::RateLimited, &reason));
        }
        Verdict::Disconnect => {
            return conn.fail(
                core,
                ErrorCode::RateLimited,
                "you kept flooding after being rate limited",
            );
        }
    }
    let request = match protocol::parse_request(frame) {
        Ok(request) => request,
        Err(reason) => {
            return conn.reply(core, protocol::error(ErrorCode::InvalidMessage, &reason))
        }
    };
    match request.kind.as_ref() {
        "connect" => login(core, conn, request.content),
        "chat" => chat(core, conn, &request),
        "users" => users(core, conn, request.content),
        "ping" => conn.reply(core, protocol::pong(request.content)),
        "pong" => {}
        "disconnect" => disconnect(core, conn),
        other => {
            let reason = format!(
                "unknown type `{}`",
                other.chars().take(64).collect::<String>()
            );
            conn.reply(core, protocol::error(ErrorCode::UnknownType, &reason));
        }
    }
}

fn not_connected(core: &Core, conn: &Rc<Connection>) {
    let reason = "log in first with {\"type\":\"connect\",\"content\":\"<name>\"}";
    conn.reply(core, protocol::error(ErrorCode::NotConnected, reason));
}

fn login(core: &Rc<Core>, conn: &Rc<Connection>, content: JsonString<'_>) {
    if conn.session.borrow().is_some() {
        let reason = "this connection is already logged in";
        return conn.reply(core, protocol::error(ErrorCode::AlreadyConnected, reason));
    }
    let username: Arc<str> = content.decode().into();
    let user_id = UserId::new(core.id);
    let registration = match core.shared.directory.register(username.clone(), user_id) {
        Ok(registration) => registration,
        Err(NameError::Invalid(reason)) => {
            return conn.reply(core, protocol::error(ErrorCode::InvalidUsername, reason));
        }
        Err(NameError::Taken) => {
            let reason = format!("the name `{username}` is taken");
            return conn.reply(core, protocol::error(ErrorCode::NameTaken, &reason));
        }
    };
    let (user_list, user_count) = core
        .shared
        .directory
        .first_page_json(core.config.user_list_limit);
    conn.reply(
        core,
        protocol::connect_response(user_id, &username, &user_list, user_count),
    );
    tracing::debug!(conn = conn.id, %user_id, %username, "logged in");
    core.presence.borrow_mut().joined(user_id, &username);
    *conn.session.borrow_mut() = Some(Session {
        user_id,
        username,
        registration,
    });
    core.add_member(conn, user_id);
}

fn chat(core: &Rc<Core>, conn: &Rc<Connection>, request: &Request<'_>) {
    let session = conn.session.borrow();
    let Some(session) = session.as_ref() else {
        return not_connected(core, conn);
    };
    if request.recipient_id.is_empty() {
        let frame = protocol::chat(session.user_id, &session.username, None, request.content);
        core.broadcast(frame, Some(conn.id));
        return;
    }
    match UserId::parse(&request.recipient_id).filter(|id| id.core() < core.router.cores()) {
        Some(recipient) => {
            let frame = protocol::chat(
                session.user_id,
                &session.username,
                Some(recipient),
                request.content,
            );
            core.direct(session.user_id, recipient, frame);
        }
        None => user_not_found(core, conn, &request.recipient_id),
    }
}

/// Tells `conn` that its direct message to `recipient` found nobody.
pub fn user_not_found(core: &Core, conn: &Rc<Connection>, recipient: &str) {
    let shown: String = recipient.chars().take(64).collect();
    let reason = format!("no user with ID {shown}");
    conn.reply(core, protocol::error(ErrorCode::UserNotFound, &reason));
}

fn users(core: &Rc<Core>, conn: &Rc<Connection>, content: JsonString<'_>) {
    let Some(user_id) = conn.session.borrow().as_ref().map(|s| s.user_id) else {
        return not_connected(core, conn);
    };
    let text = content.decode();
    let offset = if text.is_empty() {
        Ok(0)
    } else {
        text.trim().parse::<usize>()
    };
    let Ok(offset) = offset else {
        let reason = "`users` takes an offset: a non-negative integer as a string";
        return conn.reply(core, protocol::error(ErrorCode::InvalidMessage, reason));
    };
    let (user_list, user_count) = core
        .shared
        .directory
        .page(offset, core.config.user_list_limit);
    conn.reply(
        core,
        protocol::user_list_update(user_id, offset, &user_list, user_count),
    );
}

fn disconnect(core: &Rc<Core>, conn: &Rc<Connection>) {
    let user = conn
        .session
        .borrow()
        .as_ref()
        .map(|s| (s.user_id, s.username.clone()));
    let reply = protocol::disconnect_response(user.as_ref().map(|(id, name)| (*id, name.as_ref())));
    logout(core, conn);
    conn.finish(core, reply);
}

/// Logs the connection's user out, if it has one: frees the name and announces the leave.
pub fn logout(core: &Core, conn: &Rc<Connection>) {
    let Some(session) = conn.session.borrow_mut().take() else {
        return;
    };
    tracing::debug!(conn = conn.id, user_id = %session.user_id, username = %session.username, "logged out");
    core.remove_member(conn, session.user_id);
    core.shared.directory.unregister(session.registration);
    core.presence
        .borrow_mut()
        .left(session.user_id, &session.username);
}
