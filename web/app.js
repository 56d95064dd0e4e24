// The web chat page: logs in over the WebSocket, hands every server frame to the chat state
// (chat.js), sends what it returns, and has view.js draw the result. Reconnects on its own, and
// rejoins rooms with `since` so that no room message is lost or shown twice.

import { Chat, parseContent, roomProblem, usernameProblem } from "./chat.js";
import { Connection } from "./connection.js";
import { View } from "./view.js";

const $ = (id) => document.getElementById(id);
const NAME_KEY = "uring-chat:name";
/** Errors that end the connection; the close that follows says what happens next. */
const CLOSING = new Set([
  "FRAME_TOO_LARGE", "SLOW_CONSUMER", "SERVER_FULL", "SERVER_SHUTDOWN", "LOGIN_TIMEOUT", "AUTH_REQUIRED", "AUTH_FAILED",
]);
/** A login token handed over in the address (`/#token=<jwt>`, kept out of server logs by the `#`),
 * for a server that requires one (docs/SECURITY.md). */
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");

let chat = new Chat();
let name = null; // the name we log in with, once the user chose it
let loggedIn = false; // on the current socket
let closeNotice = null; // why the server is about to close, from its last error frame

const view = new View({
  open: (key) => {
    chat.open(key);
    closeDrawers();
    redraw();
  },
  openDirect: (peer, userID) => {
    chat.openDirect(peer, userID);
    closeDrawers();
    redraw();
    $("composer-input").focus();
  },
  join: (room) => {
    closeDrawers();
    act(chat.join(room));
  },
  leave: (room) => act(chat.leave(room)),
});

const connection = new Connection({
  open: () => {
    loggedIn = false;
    closeNotice = null;
    if (chat.me !== null) view.status("connecting", "Connected. Logging in again…");
    connection.send(TOKEN ? { type: "connect", content: name, token: TOKEN } : { type: "connect", content: name });
  },
  frame: (frame) => {
    if (loggedIn) onFrame(frame);
    else onLoginReply(frame);
    redraw();
  },
  close: ({ code, retryInMs }) => {
    loggedIn = false;
    if (retryInMs === null) return; // we closed it
    if (chat.me === null) {
      // Not logged in yet: no session to keep, so no retries; the login form says why.
      connection.stop();
      view.showLogin(closeNotice ?? "Cannot reach the chat server. Try again in a moment.");
      return;
    }
    chat.offline();
    const why = closeNotice ?? (code === 1001 ? "The server is restarting." : "Connection lost.");
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    view.status("offline", `${why} Reconnecting in ${seconds} s…`);
    redraw();
  },
});

function redraw() {
  view.draw(chat);
}

function send(frames) {
  for (const frame of frames) connection.send(frame);
}

/** Sends what a user action returned and draws the result. */
function act(frames) {
  send(frames);
  redraw();
}

/** Until logged in on this socket: the connect_response, or why the name was refused. */
function onLoginReply(frame) {
  if (frame.type === "connect_response") {
    loggedIn = true;
    connection.settled();
    localStorage.setItem(NAME_KEY, name);
    view.status("online", null);
    if (chat.me === null) view.showChat();
    send(chat.loggedIn(parseContent(frame)));
  } else if (frame.type === "error") {
    const code = String(frame.code ?? "");
    if (chat.me !== null && code === "NAME_TAKEN") {
      // Our previous connection still holds the name until the server notices it is gone.
      closeNotice = `The server still holds ${name} for the old connection.`;
      connection.retryLater();
    } else if (chat.me !== null && (code === "AUTH_FAILED" || code === "AUTH_REQUIRED")) {
      // The token in the address expired (or the server's key changed) while we were away: the
      // same token will never work again, so stop retrying and say what would.
      connection.stop();
      chat.offline();
      view.status("offline", `${serverSays(frame)} Open the page again with a new token to reconnect.`);
    } else if (chat.me === null) {
      connection.stop();
      const reason = {
        NAME_TAKEN: `Someone is already using the name ${name}. Try another one.`,
        INVALID_USERNAME: "That name is not allowed: 1 to 32 characters, no control characters.",
        SERVER_FULL: "The server is full. Try again later.",
      }[code];
      view.showLogin(reason ?? `The server said no: ${String(frame.content ?? code)}`);
    } else if (CLOSING.has(code)) {
      closeNotice = serverSays(frame);
    }
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case "chat":
      chat.chat(frame);
      break;
    case "presence":
      chat.presence(frame);
      break;
    case "user_list_update":
      send(chat.usersPage(parseContent(frame)));
      break;
    case "join_response":
      send(chat.joined(frame));
      break;
    case "member_list":
      send(chat.memberList(frame));
      break;
    case "room_list":
      chat.roomList(frame);
      break;
    case "ping":
      connection.send({ type: "pong", content: String(frame.content ?? "") });
      break;
    case "error":
      if (CLOSING.has(String(frame.code))) closeNotice = serverSays(frame);
      else chat.error(frame);
      break;
    default:
      break; // leave_response, pong, and whatever a later server adds
  }
}

function serverSays(frame) {
  if (frame.code === "SERVER_SHUTDOWN") return "The server is restarting.";
  return `Disconnected: ${String(frame.content ?? frame.code)}.`;
}

// ---- the forms ----

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const candidate = $("login-name").value.trim();
  const problem = usernameProblem(candidate);
  if (problem !== null) {
    view.showLogin(problem);
    return;
  }
  name = candidate;
  $("login-submit").disabled = true;
  $("login-error").hidden = true;
  connection.stop();
  connection.start();
});

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("room-input").value.trim().replace(/^#/, "");
  const problem = roomProblem(room);
  $("join-error").hidden = problem === null;
  $("join-error").textContent = problem ?? "";
  if (problem !== null) return;
  $("room-input").value = "";
  closeDrawers();
  act(chat.join(room));
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("composer-input");
  const text = input.value;
  if (text.trim() === "" || !connection.isOpen || !loggedIn) return;
  act(chat.say(text));
  input.value = "";
  fitComposer();
});

$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

function fitComposer() {
  const input = $("composer-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}
$("composer-input").addEventListener("input", fitComposer);

$("leave-room").addEventListener("click", () => {
  if (chat.conv.kind === "room") act(chat.leave(chat.conv.title));
});

$("logout").addEventListener("click", () => {
  connection.send({ type: "disconnect" });
  connection.stop();
  chat = new Chat();
  loggedIn = false;
  view.showLogin(null);
});

// ---- the drawers on narrow screens ----

function closeDrawers() {
  document.body.classList.remove("show-sidebar", "show-members");
  $("scrim").hidden = true;
}

function toggleDrawer(which) {
  const open = !document.body.classList.contains(which);
  closeDrawers();
  document.body.classList.toggle(which, open);
  $("scrim").hidden = !open;
}

$("toggle-sidebar").addEventListener("click", () => toggleDrawer("show-sidebar"));
$("toggle-members").addEventListener("click", () => toggleDrawer("show-members"));
$("scrim").addEventListener("click", closeDrawers);

$("login-name").value = localStorage.getItem(NAME_KEY) ?? "";
