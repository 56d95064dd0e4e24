// Draws the chat's state into the page. Every piece of user text (names, messages, room names)
// goes in through textContent, never as markup.

import { LOBBY } from "./chat.js";

const $ = (id) => document.getElementById(id);
/** Messages from one author closer together than this share one header. */
const GROUP_MS = 5 * 60 * 1000;
/** How close to the bottom (px) counts as "reading the latest": new messages then scroll in. */
const STICKY_PX = 80;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Avatar colors, all readable under white text. */
const COLORS = ["#d9485f", "#e8590c", "#2b8a3e", "#1971c2", "#7048e8", "#0c8599", "#c2255c", "#5c7cfa"];

/** A stable color for a name (FNV-1a), so that people are easy to tell apart. */
function color(name) {
  let hash = 0x811c9dc5;
  for (const ch of name) hash = Math.imul(hash ^ ch.codePointAt(0), 0x01000193) >>> 0;
  return COLORS[hash % COLORS.length];
}

function avatar(name) {
  const node = el("span", "avatar", [...name][0]?.toUpperCase() ?? "?");
  node.style.setProperty("--avatar", color(name));
  node.setAttribute("aria-hidden", "true");
  return node;
}

function clock(time) {
  return time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class View {
  constructor(actions) {
    this.actions = actions; // open(key), openDirect(name, userID), join(room), leave(room)
    this.shown = null; // the conversation whose messages are in #messages
    this.items = new Map(); // list element -> (key -> its item), see keyed()
  }

  showLogin(error) {
    $("chat-screen").hidden = true;
    $("login-screen").hidden = false;
    $("login-error").hidden = !error;
    $("login-error").textContent = error ?? "";
    $("login-submit").disabled = false;
    $("login-name").focus();
  }

  showChat() {
    $("login-screen").hidden = true;
    $("chat-screen").hidden = false;
    $("composer-input").focus();
  }

  /** The connection line: state is "online", "connecting" or "offline". */
  status(state, banner) {
    $("status").dataset.state = state;
    $("status").textContent = state;
    $("banner").hidden = !banner;
    $("banner").textContent = banner ?? "";
    $("send").disabled = state !== "online";
  }

  /** Draws what changed since the last call. */
  draw(chat) {
    const changed = chat.changed;
    const all = changed.has("all");
    if (all || changed.has("sidebar")) this.sidebar(chat);
    if (all || changed.has("header") || changed.has("members")) this.header(chat);
    if (all || changed.has("members")) this.members(chat);
    if (all || changed.has("messages") || this.shown !== chat.current) {
      this.messages(chat);
    } else if (chat.appended.length > 0) {
      const list = $("messages");
      const sticky = list.scrollHeight - list.scrollTop - list.clientHeight < STICKY_PX;
      const own = chat.appended.some((m) => m.own);
      for (const message of chat.appended) list.append(this.message(message, list.lastElementChild));
      if (sticky || own) list.scrollTop = list.scrollHeight;
    }
    chat.appended = [];
    changed.clear();
    const unread = chat.unreadTotal;
    document.title = unread > 0 ? `(${unread}) uring-chat` : "uring-chat";
    $("unread-elsewhere").hidden = unread === 0;
    $("unread-elsewhere").textContent = String(unread);
  }

  sidebar(chat) {
    $("me-name").textContent = chat.me?.username ?? "";
    const rooms = [];
    const dms = [];
    for (const conv of chat.convs.values()) (conv.kind === "dm" ? dms : rooms).push(conv);
    rooms.sort((a, b) => (a.key === LOBBY ? -1 : b.key === LOBBY ? 1 : a.title.localeCompare(b.title)));
    dms.sort((a, b) => a.title.localeCompare(b.title));
    this.keyed($("room-list"), rooms.map((conv) => this.convEntry(chat, conv)));
    this.keyed($("dm-list"), dms.map((conv) => this.convEntry(chat, conv)));
    $("dm-hint").hidden = dms.length > 0;
    const mine = new Set(rooms.filter((conv) => conv.kind === "room").map((conv) => conv.title));
    const others = chat.roomDirectory.filter((r) => !mine.has(r.room)).slice(0, 20);
    this.keyed(
      $("room-directory"),
      others.map((r) => ({
        key: r.room,
        onClick: () => this.actions.join(r.room),
        fill: (button) => {
          button.className = "directory-room";
          button.dataset.test = "directory-room";
          button.title = `Join ${r.room}`;
          const count = el("span", "count", String(r.memberCount));
          button.replaceChildren(el("span", "hash", "#"), el("span", "name", r.room), count);
        },
      })),
    );
  }

  /**
   * Fills `list` with one button per entry ({key, onClick, fill}), keeping a key's button from
   * one draw to the next: a click on it is not lost to a redraw (presence comes often), and
   * `fill(button)` sets its whole content and state each time.
   */
  keyed(list, entries) {
    const before = this.items.get(list) ?? new Map();
    const now = new Map();
    for (const { key, onClick, fill } of entries) {
      let item = before.get(key);
      if (item === undefined) {
        item = el("li");
        const button = el("button");
        button.type = "button";
        button.addEventListener("click", onClick);
        item.append(button);
      }
      fill(item.firstChild);
      now.set(key, item);
    }
    this.items.set(list, now);
    list.replaceChildren(...now.values());
  }

  convEntry(chat, conv) {
    const fill = (button) => {
      const classes = ["conv"];
      if (conv.key === chat.current) classes.push("active");
      if (conv.kind === "dm" && !chat.isOnline(conv.title)) classes.push("away");
      if (conv.kind === "room" && !conv.joined) classes.push("pending");
      if (conv.unread > 0) classes.push("has-unread");
      button.className = classes.join(" ");
      button.dataset.test = "conv";
      button.dataset.conv = conv.key;
      if (conv.key === chat.current) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
      const icon = conv.kind === "dm" ? avatar(conv.title) : el("span", "hash", conv.kind === "lobby" ? "⌂" : "#");
      const name = el("span", "name", conv.title);
      name.dataset.test = "conv-name";
      button.replaceChildren(icon, name);
      if (conv.unread > 0) {
        const badge = el("span", "badge", conv.unread > 99 ? "99+" : String(conv.unread));
        badge.dataset.test = "unread";
        badge.setAttribute("aria-label", `${conv.unread} unread`);
        button.append(badge);
      }
    };
    return { key: conv.key, onClick: () => this.actions.open(conv.key), fill };
  }

  header(chat) {
    const conv = chat.conv;
    $("conv-title").textContent = conv.kind === "room" ? `# ${conv.title}` : conv.title;
    const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
    let sub;
    let placeholder;
    if (conv.kind === "lobby") {
      sub = `Everyone online · ${count(chat.userCount, "person", "people")}`;
      placeholder = "Message everyone";
    } else if (conv.kind === "room") {
      sub = conv.joined ? count(conv.memberCount, "member", "members") : "joining…";
      placeholder = `Message #${conv.title}`;
    } else {
      sub = `Direct message · ${chat.isOnline(conv.title) ? "online" : "offline"}`;
      placeholder = `Message ${conv.title}`;
    }
    $("conv-sub").textContent = sub;
    $("composer-input").placeholder = placeholder;
    $("leave-room").hidden = conv.kind !== "room";
  }

  members(chat) {
    const conv = chat.conv;
    let entries;
    let count;
    if (conv.kind === "room") {
      entries = [...conv.members];
      count = conv.memberCount;
    } else if (conv.kind === "dm") {
      const peerID = chat.userIDOf(conv.title);
      entries = [[chat.me?.userID ?? "", chat.me?.username ?? ""]];
      if (peerID !== null && peerID !== chat.me?.userID) entries.push([peerID, conv.title]);
      count = entries.length;
    } else {
      entries = [...chat.users];
      count = chat.userCount;
    }
    entries.sort((a, b) => a[1].localeCompare(b[1]));
    $("member-count").textContent = String(count);
    $("member-more").hidden = count <= entries.length;
    $("member-more").textContent = `and ${count - entries.length} more`;
    this.keyed(
      $("member-list"),
      entries.map(([userID, name]) => ({
        key: userID,
        onClick: () => this.actions.openDirect(name, userID),
        fill: (button) => {
          const self = userID === chat.me?.userID;
          button.className = self ? "member self" : "member";
          button.dataset.test = "member";
          button.dataset.name = name;
          button.disabled = self;
          button.title = self ? "" : `Message ${name}`;
          button.replaceChildren(avatar(name), el("span", "name", name));
          if (self) button.append(el("span", "you", "you"));
        },
      })),
    );
  }

  messages(chat) {
    const list = $("messages");
    const nodes = [];
    let previous = null;
    for (const message of chat.conv.messages) {
      const node = this.message(message, previous);
      nodes.push(node);
      previous = node;
    }
    list.replaceChildren(...nodes);
    if (nodes.length === 0) {
      const dm = chat.conv.kind === "dm";
      const text = dm ? `This is the start of your conversation with ${chat.conv.title}.` : "No messages yet. Say hello!";
      list.append(el("li", "empty", text));
    }
    list.scrollTop = list.scrollHeight;
    this.shown = chat.current;
  }

  /** One message; `previous` is the node before it, for grouping by author. */
  message(message, previous) {
    if (message.notice) {
      const node = el("li", "notice", message.text);
      node.dataset.test = "notice";
      return node;
    }
    const node = el("li", message.own ? "message own" : "message");
    node.dataset.test = "message";
    node.dataset.own = String(message.own);
    node.dataset.author = message.author;
    node.dataset.time = String(message.time.getTime());
    if (message.seq !== undefined) node.dataset.seq = String(message.seq);
    const grouped =
      previous?.dataset.test === "message" &&
      previous.dataset.author === message.author &&
      message.time.getTime() - Number(previous.dataset.time) < GROUP_MS;
    if (grouped) node.classList.add("grouped");
    else if (!message.own) node.append(avatar(message.author));
    const body = el("div", "bubble");
    const meta = el("div", "meta");
    const author = el("span", "author", message.own ? "You" : message.author);
    author.dataset.test = "message-author";
    const time = el("time", "time", clock(message.time));
    time.dateTime = message.time.toISOString();
    time.title = message.time.toLocaleString();
    time.dataset.test = "message-time";
    meta.append(author, time);
    const text = el("div", "text", message.text);
    text.dataset.test = "message-text";
    body.append(meta, text);
    node.append(body);
    return node;
  }
}
