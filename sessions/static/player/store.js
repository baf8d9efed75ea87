// The tab's live session, kept in sessionStorage so a reload rejoins it instead of starting
// another: the session id, its player token, where its relay is, its media, and the highest
// seq seen (the transcript is rebuilt from the relay on rejoin; this says what is history).

const PREFIX = "systimz.talk.";

export function loadSession(key) {
  let record;
  try {
    record = JSON.parse(sessionStorage.getItem(PREFIX + key) || "null");
  } catch {
    return null; // storage refused (privacy mode) or a damaged entry: start afresh
  }
  const valid =
    record &&
    typeof record.id === "string" &&
    typeof record.token === "string" &&
    typeof record.websocket_url === "string" &&
    record.websocket_url.startsWith("/");
  if (!valid) return null;
  record.lastSeq = Number.isInteger(record.lastSeq) && record.lastSeq > 0 ? record.lastSeq : 0;
  return record;
}

export function saveSession(key, record) {
  try {
    sessionStorage.setItem(PREFIX + key, JSON.stringify(record));
  } catch {
    // Storage full or refused: the session still works, only a reload will not rejoin it.
  }
}

export function dropSession(key) {
  try {
    sessionStorage.removeItem(PREFIX + key);
  } catch {
    // nothing to drop
  }
}
