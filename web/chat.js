// The chat's state, apart from the DOM: who I am, who is online, the conversations (the lobby,
// rooms, direct messages) and what each server frame of docs/PROTOCOL.md changes. Methods return
// the frames to send; `changed` says what view.js must draw again.

export const LOBBY = "lobby";
/** Messages kept per conversation; older ones drop off the top. */
const MAX_MESSAGES = 500;
/** Names fetched page by page for a member list (the counts stay exact beyond it). */
const LIST_CAP = 500;
const NAME_LIMIT = 32;
const ROOM_LIMIT = 64;

export const roomKey = (room) => `room:${room}`;
export const dmKey = (name) => `dm:${name}`;

/** Why a name the protocol would refuse is refused, or null when it is fine. */
export function nameProblem(name, limit, what) {
  const length = [...name].length;
  if (length === 0) return `The ${what} cannot be empty.`;
  if (length > limit) return `The ${what} is longer than ${limit} characters.`;
  if (name.trim() !== name) return `The ${what} cannot start or end with a space.`;
  if (/\p{Cc}/u.test(name)) return `The ${what} cannot hold control characters.`;
  return null;
}
export const usernameProblem = (name) => nameProblem(name, NAME_LIMIT, "name");
export const roomProblem = (name) => nameProblem(name, ROOM_LIMIT, "room name");

/** The JSON document inside a frame's string `content` ({} when there is none). */
export function parseContent(frame) {
  try {
    const content = JSON.parse(frame.content);
    return content !== null && typeof content === "object" ? content : {};
  } catch {
    return {};
  }
}

class Conversation {
  constructor(key, kind, title) {
    this.key = key;
    this.kind = kind; // "lobby" | "room" | "dm"
    this.title = title;
    this.messages = [];
    this.unread = 0;
    // Rooms: joined on this connection, the sequence seen so far, the members.
    this.joined = false;
    this.epoch = null;
    this.lastSeq = 0;
    this.members = new Map();
    this.memberCount = 0;
    this.memberPage = 0;
    // Direct messages: the peer's userID while known to be online.
    this.peerID = null;
  }
}

export class Chat {
  constructor() {
    this.me = null;
    this.users = new Map(); // userID -> username
    this.userCount = 0;
    this.userPage = 0;
    this.convs = new Map([[LOBBY, new Conversation(LOBBY, "lobby", "Lobby")]]);
    this.current = LOBBY;
    this.roomDirectory = [];
    this.online = false;
    this.wasOffline = false;
    this.changed = new Set(["all"]);
    this.appended = []; // messages added to the current conversation since the last draw
  }

  get conv() {
    return this.convs.get(this.current);
  }

  mark(...what) {
    for (const item of what) this.changed.add(item);
  }

  // ---- what the user does ----

  /** Shows a conversation and clears its unread mark. */
  open(key) {
    if (!this.convs.has(key)) return;
    this.current = key;
    this.conv.unread = 0;
    this.mark("all");
  }

  /** Opens (creating it) the direct conversation with `name`, whose userID may be known. */
  openDirect(name, userID = null) {
    const conv = this.direct(name);
    if (userID !== null) conv.peerID = userID;
    this.open(conv.key);
  }

  /** Enters a room (or shows it if already in); the join frame, when online. */
  join(room) {
    const key = roomKey(room);
    const fresh = !this.convs.has(key);
    if (fresh) this.convs.set(key, new Conversation(key, "room", room));
    this.open(key);
    // Offline, the next login joins it with the others.
    return fresh && this.online ? [this.joinFrame(this.conv)] : [];
  }

  leave(room) {
    this.convs.delete(roomKey(room));
    if (this.current === roomKey(room)) this.current = LOBBY;
    this.mark("all");
    return this.online ? [{ type: "leave", room }, { type: "rooms", content: "0" }] : [];
  }

  /** The frames that send `text` to the conversation in view. */
  say(text) {
    const conv = this.conv;
    if (conv.kind === "room") {
      // The room sends it back to us with its seq: it is shown then, in the room's order.
      return [{ type: "chat", room: conv.title, content: text }];
    }
    if (conv.kind === "lobby") {
      this.add(conv, { author: this.me.username, authorID: this.me.userID, text });
      return [{ type: "chat", content: text }];
    }
    const peerID = this.userIDOf(conv.title) ?? conv.peerID;
    if (peerID === null) {
      this.notice(conv, `${conv.title} is not online: the message was not sent.`);
      return [];
    }
    if (peerID !== this.me.userID) {
      this.add(conv, { author: this.me.username, authorID: this.me.userID, text });
    }
    return [{ type: "chat", recipientID: peerID, content: text }];
  }

  // ---- what the server says ----

  /** Logged in (first time or after a reconnect): rejoin every room, catching up with `since`. */
  loggedIn(content) {
    const firstTime = this.me === null;
    this.me = { userID: String(content.userID), username: String(content.username) };
    this.online = true;
    this.users = new Map();
    this.userPage = 0;
    const out = this.usersPage({ offset: 0, userList: content.userList, userCount: content.userCount });
    if (!firstTime && this.wasOffline) {
      this.notice(
        this.convs.get(LOBBY),
        "Reconnected. Lobby and direct messages sent while you were offline are not replayed.",
      );
    }
    this.wasOffline = false;
    for (const conv of this.convs.values()) {
      if (conv.kind === "room") out.push(this.joinFrame(conv));
    }
    out.push({ type: "rooms", content: "0" });
    this.mark("all");
    return out;
  }

  offline() {
    if (this.online) this.wasOffline = true;
    this.online = false;
    for (const conv of this.convs.values()) conv.joined = false;
    this.mark("all");
  }

  usersPage(content) {
    for (const user of content.userList ?? []) this.users.set(String(user.userID), String(user.username));
    this.userCount = Number(content.userCount) || this.users.size;
    this.userPage = (Number(content.offset) || 0) + (content.userList ?? []).length;
    this.mark("members", "sidebar");
    if (this.userPage < this.userCount && this.userPage < LIST_CAP && (content.userList ?? []).length > 0) {
      return [{ type: "users", content: String(this.userPage) }];
    }
    return [];
  }

  presence(frame) {
    const content = parseContent(frame);
    if (frame.room) {
      const conv = this.convs.get(roomKey(frame.room));
      if (!conv || !conv.joined) return;
      for (const user of content.joined ?? []) conv.members.set(String(user.userID), String(user.username));
      for (const user of content.left ?? []) conv.members.delete(String(user.userID));
      conv.memberCount = Number(content.memberCount) || conv.members.size;
    } else {
      for (const user of content.joined ?? []) this.users.set(String(user.userID), String(user.username));
      for (const user of content.left ?? []) this.users.delete(String(user.userID));
      this.userCount = Number(content.userCount) || this.users.size;
    }
    this.mark("members", "sidebar", "header");
  }

  joined(frame) {
    const conv = this.convs.get(roomKey(frame.room));
    if (!conv) return []; // left again before the answer came
    const content = parseContent(frame);
    const catchingUp = conv.epoch !== null;
    if (conv.epoch !== content.epoch) {
      // A new run of the room's sequence: the seqs we saw mean nothing in it.
      conv.epoch = content.epoch;
      conv.lastSeq = 0;
    }
    if (content.recovered === false) {
      this.notice(
        conv,
        catchingUp
          ? "Some messages of this room may be missing: the server no longer holds what was sent while you were away."
          : "Earlier messages of this room are no longer held by the server.",
      );
    }
    conv.joined = true;
    conv.members = new Map();
    conv.memberPage = 0;
    this.mark("sidebar", "header");
    return this.membersPage(conv, { offset: 0, members: content.members, memberCount: content.memberCount });
  }

  memberList(frame) {
    const conv = this.convs.get(roomKey(frame.room));
    return conv && conv.joined ? this.membersPage(conv, parseContent(frame)) : [];
  }

  roomList(frame) {
    const content = parseContent(frame);
    this.roomDirectory = (content.rooms ?? []).map((r) => ({
      room: String(r.room),
      memberCount: Number(r.memberCount) || 0,
    }));
    this.mark("sidebar");
  }

  chat(frame) {
    const own = this.me !== null && frame.senderID === this.me.userID;
    const message = {
      author: String(frame.username ?? ""),
      authorID: String(frame.senderID ?? ""),
      text: String(frame.content ?? ""),
    };
    if (frame.room) {
      const conv = this.convs.get(roomKey(frame.room));
      if (!conv) return;
      const seq = Number(frame.seq);
      if (Number.isInteger(seq)) {
        if (seq <= conv.lastSeq) return; // already shown: a replay overlapping what we saw
        conv.lastSeq = seq;
        message.seq = seq;
      }
      this.add(conv, message);
    } else if (frame.recipientID) {
      const conv = this.direct(own ? this.me.username : message.author);
      if (!own) conv.peerID = message.authorID;
      this.add(conv, message);
    } else {
      this.add(this.convs.get(LOBBY), message);
    }
  }

  /** An error frame after login: a notice where the user is looking. */
  error(frame) {
    const code = String(frame.code ?? "");
    const text = {
      USER_NOT_FOUND: "That user is not online any more: the message was not delivered.",
      NOT_IN_ROOM: "You are not in that room (any more).",
      RATE_LIMITED: "You are sending too fast: that message was dropped. Wait a moment.",
      TOO_MANY_ROOMS: "You cannot join more rooms.",
      INVALID_ROOM: "That room name is not allowed.",
    }[code];
    if (code === "TOO_MANY_ROOMS" || code === "INVALID_ROOM") {
      for (const [key, conv] of this.convs) {
        if (conv.kind === "room" && !conv.joined && conv.epoch === null) this.convs.delete(key);
      }
      if (!this.convs.has(this.current)) this.current = LOBBY;
      this.mark("all");
    }
    this.notice(this.conv, text ?? `${code}: ${String(frame.content ?? "")}`);
  }

  // ---- helpers ----

  direct(name) {
    const key = dmKey(name);
    if (!this.convs.has(key)) {
      this.convs.set(key, new Conversation(key, "dm", name));
      this.mark("sidebar");
    }
    return this.convs.get(key);
  }

  joinFrame(conv) {
    // Always with `since`: the first join gets what history still holds, a rejoin what it missed.
    return { type: "join", room: conv.title, since: String(conv.lastSeq) };
  }

  membersPage(conv, content) {
    for (const user of content.members ?? []) conv.members.set(String(user.userID), String(user.username));
    conv.memberCount = Number(content.memberCount) || conv.members.size;
    conv.memberPage = (Number(content.offset) || 0) + (content.members ?? []).length;
    this.mark("members", "header");
    if (conv.memberPage < conv.memberCount && conv.memberPage < LIST_CAP && (content.members ?? []).length > 0) {
      return [{ type: "members", room: conv.title, content: String(conv.memberPage) }];
    }
    return [];
  }

  userIDOf(name) {
    for (const [id, username] of this.users) if (username === name) return id;
    return null;
  }

  isOnline(name) {
    return this.userIDOf(name) !== null;
  }

  add(conv, message) {
    message.time = new Date();
    message.own = this.me !== null && message.authorID === this.me.userID;
    this.push(conv, message);
    if (conv.key !== this.current && !message.own) {
      conv.unread += 1;
      this.mark("sidebar");
    }
  }

  notice(conv, text) {
    this.push(conv, { notice: true, text, time: new Date() });
  }

  push(conv, message) {
    conv.messages.push(message);
    if (conv.messages.length > MAX_MESSAGES) {
      conv.messages.splice(0, conv.messages.length - MAX_MESSAGES);
      if (conv.key === this.current) this.mark("messages");
    }
    if (conv.key === this.current) this.appended.push(message);
  }

  get unreadTotal() {
    let total = 0;
    for (const conv of this.convs.values()) total += conv.unread;
    return total;
  }
}
