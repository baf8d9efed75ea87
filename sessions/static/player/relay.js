// The session's WebSocket (the contract's relay): resumes after the last seq on every (re)open,
// drops anything already seen, reconnects with backoff, and reports a refused token (4401).

export const CLOSE_UNAUTHORISED = 4401;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;

export function relayUrl(path, token) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}?token=${encodeURIComponent(token)}`;
}

export class Relay {
  /**
   * @param {{path: string, token: string, after: number,
   *          onMessage: (msg: object) => void,
   *          onLink: (link: "connecting"|"open"|"reconnecting") => void,
   *          onRefused: () => void}} options
   */
  constructor({ path, token, after = 0, onMessage, onLink, onRefused }) {
    this.path = path;
    this.token = token;
    this.lastSeq = after;
    this.onMessage = onMessage;
    this.onLink = onLink;
    this.onRefused = onRefused;
    this.socket = null;
    this.attempt = 0;
    this.opened = false;
    this.closed = false;
    this.timer = null;
    this.retryNow = () => {
      if (this.timer !== null && !this.closed) {
        clearTimeout(this.timer);
        this.timer = null;
        this.open();
      }
    };
    window.addEventListener("online", this.retryNow);
  }

  open() {
    if (this.closed) return;
    this.timer = null;
    this.onLink(this.opened ? "reconnecting" : "connecting");
    const socket = new WebSocket(relayUrl(this.path, this.token));
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.opened = true;
      // Always first: the server starts the stream after this seq, in order, then goes live.
      socket.send(JSON.stringify({ type: "resume", after: this.lastSeq }));
      this.onLink("open");
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      if (this.closed) return;
      if (event.code === CLOSE_UNAUTHORISED) {
        this.close();
        this.onRefused();
        return;
      }
      this.scheduleRetry();
    });
  }

  scheduleRetry() {
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** this.attempt, BACKOFF_MAX_MS);
    this.attempt += 1;
    this.onLink("reconnecting");
    this.timer = setTimeout(() => this.open(), delay);
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message !== "object" || typeof message.type !== "string") return;
    if (Number.isInteger(message.seq)) {
      if (message.seq <= this.lastSeq) return; // seen already (a resume overlaps)
      this.lastSeq = message.seq;
    }
    this.onMessage(message);
  }

  /** Send a client frame; false when the socket is not open (the caller says so). */
  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  get isOpen() {
    return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN);
  }

  close() {
    this.closed = true;
    window.removeEventListener("online", this.retryNow);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "done");
  }
}
