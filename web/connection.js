// The WebSocket to /ws of the page's own host: each message is one protocol frame (the JSON of
// docs/PROTOCOL.md). When it drops, it opens again after a growing, jittered delay, until stop().

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

/** ws: or wss: to match the page's http: or https:, same host and port, path /ws. */
export function socketUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

export class Connection {
  /**
   * handlers.open(), handlers.frame(object), handlers.close({code, reason, retryInMs}):
   * retryInMs is null once stop() was called.
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.socket = null;
    this.timer = null;
    this.failures = 0;
    this.wanted = false;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Opens now (if not open or opening) and keeps it open. */
  start() {
    this.wanted = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket === null) this.open();
  }

  /** Closes for good (until the next start), at once: the old socket's close is not reported. */
  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) socket.close(1000);
  }

  /** Closes this socket and lets the backoff open another (a name still held by our old one). */
  retryLater() {
    if (this.socket !== null) this.socket.close(1000);
  }

  /** The session works: the next drop starts the backoff from the first delay again. */
  settled() {
    this.failures = 0;
  }

  /** Sends a frame; false when there is no open socket to take it. */
  send(frame) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  open() {
    const socket = new WebSocket(socketUrl());
    this.socket = socket;
    socket.onopen = () => this.handlers.open();
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      // One JSON object per message; a trailing newline is tolerated, and so are several lines.
      for (const line of event.data.split("\n")) {
        if (line.trim() === "") continue;
        let frame;
        try {
          frame = JSON.parse(line);
        } catch {
          continue;
        }
        if (frame !== null && typeof frame === "object") this.handlers.frame(frame);
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      let retryInMs = null;
      if (this.wanted) {
        const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.failures);
        retryInMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
        this.failures += 1;
        this.timer = setTimeout(() => {
          this.timer = null;
          if (this.wanted && this.socket === null) this.open();
        }, retryInMs);
      }
      this.handlers.close({ code: event.code, reason: event.reason, retryInMs });
    };
  }
}
