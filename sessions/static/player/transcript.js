// The transcript: the conversation's caption track. The avatar's lines fill in word by word
// (chunks carry their own leading space, so they are joined with ""); the person's lines come
// from the server's user_talking_message (or, where the server does not record them, from
// what was typed).

export class Transcript {
  /** @param {HTMLElement} log  the role="log" element; @param {string} avatarName */
  constructor(log, avatarName) {
    this.log = log;
    this.avatarName = avatarName;
    this.empty = log.querySelector(".empty");
    this.avatarLines = new Map(); // task key -> line
    this.userLine = null;
  }

  clear() {
    this.avatarLines.clear();
    this.userLine = null;
    this.log.replaceChildren(...(this.empty ? [this.empty] : []));
    if (this.empty) this.empty.hidden = false;
  }

  line(kind, who) {
    if (this.empty) this.empty.hidden = true;
    const line = document.createElement("p");
    line.className = `line ${kind}`;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who;
    const text = document.createElement("span");
    text.className = "text";
    line.append(label, " ", text);
    const follow = this.atBottom();
    this.log.append(line);
    if (follow) this.scroll();
    return line;
  }

  atBottom() {
    const { scrollTop, scrollHeight, clientHeight } = this.log;
    return scrollHeight - scrollTop - clientHeight < 48;
  }

  scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  append(line, text) {
    const follow = this.atBottom();
    line.querySelector(".text").append(text);
    if (follow) this.scroll();
  }

  avatarLine(key) {
    let line = this.avatarLines.get(key);
    if (!line) {
      line = this.line("avatar", this.avatarName);
      line.dataset.task = key;
      line.setAttribute("aria-busy", "true");
      this.avatarLines.set(key, line);
    }
    return line;
  }

  /** What the avatar's line for `key` says so far ("" when there is none). */
  avatarText(key) {
    const line = this.avatarLines.get(key);
    return line ? line.querySelector(".text").textContent : "";
  }

  /** A word chunk of the avatar's speech; returns the line's text so far. */
  avatarWords(key, message) {
    const line = this.avatarLine(key);
    this.append(line, message);
    return line.querySelector(".text").textContent;
  }

  avatarDone(key, { interrupted = false } = {}) {
    const line = this.avatarLines.get(key);
    if (!line) return;
    if (interrupted && !line.classList.contains("interrupted")) {
      line.classList.add("interrupted");
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = " (interrupted)";
      line.append(note);
    }
    line.removeAttribute("aria-busy");
  }

  userWords(message) {
    if (!this.userLine) this.userLine = this.line("user", "You");
    const text = this.userLine.querySelector(".text");
    const joined = text.textContent;
    const needsSpace = joined && !/\s$/.test(joined) && !/^\s/.test(message);
    this.append(this.userLine, needsSpace ? ` ${message}` : message);
  }

  userDone() {
    this.userLine = null;
  }

  /** What the person typed, shown at once where the server does not echo it. */
  userSaid(message) {
    this.userDone();
    this.userWords(message);
    this.userDone();
  }

  note(message) {
    if (this.empty) this.empty.hidden = true;
    const line = document.createElement("p");
    line.className = "line note";
    line.textContent = message;
    this.log.append(line);
    this.scroll();
  }

  finishAll() {
    for (const line of this.avatarLines.values()) line.removeAttribute("aria-busy");
    this.userLine = null;
  }
}
