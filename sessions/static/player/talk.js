// The talk page (templates/talk/page.html): start or rejoin a session, relay its events into
// the transcript and the avatar, and send what the person types.
//
// States (document.body.dataset.state): idle, connecting, active, speaking, reconnecting,
// ended. Everything shown follows from `page` through render().

import { Face } from "./face.js";
import { LocalSpeech } from "./local-speech.js";
import { Relay } from "./relay.js";
import { ASSETS_MISSING, RemoteMedia } from "./remote-media.js";
import { dropSession, loadSession, saveSession } from "./store.js";
import { Transcript } from "./transcript.js";

const REASONS = {
  user: "You ended the conversation",
  idle: "Ended after a quiet spell",
  timeout: "Reached the time limit",
  disconnected: "The page was away too long",
  provider: "The avatar service failed",
  error: "The avatar service failed",
};
const KEEP_ALIVE_MS = 30_000;
const CAPTION_CHARS = 140;
const MAX_PENDING_EVENTS = 200;
const BURST_GAP_MS = 120;
const BURST_WAIT_MS = 3000;

const root = document.getElementById("player");
const byId = (id) => document.getElementById(id);
const els = {
  status: byId("status"),
  remaining: byId("remaining"),
  startPanel: byId("start-panel"),
  start: byId("start"),
  quality: byId("quality"),
  transcript: byId("transcript"),
  error: byId("error"),
  composer: byId("composer"),
  message: byId("message"),
  send: byId("send"),
  mic: byId("mic"),
  interrupt: byId("interrupt"),
  stop: byId("stop"),
  sound: byId("sound"),
  caption: byId("caption"),
  face: byId("face"),
  video: byId("video"),
  mediaNote: byId("media-note"),
};

const config = {
  startUrl: root.dataset.startUrl,
  key: root.dataset.avatarKey,
  name: root.dataset.avatarName,
  provider: root.dataset.provider,
  chatMode: root.dataset.chatMode,
  hasKnowledge: root.dataset.hasKnowledge === "1",
  sessionSeconds: Number(root.dataset.sessionSeconds) || 0,
  parentOrigin: root.dataset.parentOrigin || "",
};
const isLocal = config.provider === "local";
// The page asks the avatar to answer (chat: from its knowledge base, or by the provider's own
// model); an avatar with neither can only repeat what it is told.
const speakMode = config.chatMode === "provider" || config.hasKnowledge ? "chat" : "repeat";
// The server records the person's typed line itself when Systimz answers a chat; otherwise the
// page shows it.
const echoTyped =
  speakMode === "chat" && (config.provider === "liveavatar" || config.chatMode === "provider");

const page = {
  phase: "idle", // idle | starting | live | ended
  link: null, // the relay: connecting | open | reconnecting
  server: null, // the session's status as the server last said
  session: null, // the stored record of the live session
  speaking: new Set(), // avatar tasks started and not yet stopped
  lastTask: null,
  historyUpTo: 0, // events at or below this seq were seen before a reload: no audio, no alerts
  // A rejoin with no stored seq: what the relay sends in one burst on resuming is the past.
  burst: null, // {opened, last}: when the relay opened and the burst's latest message came
  endedText: "",
  stopping: false,
  focusOnActive: false,
  pendingEvents: [],
};

let relay = null;
let remote = null;
const speech = isLocal ? new LocalSpeech({ onChange: () => render() }) : null;
const face =
  isLocal && els.face
    ? new Face(els.face, {
        level: () => speech.level(),
        onAudible: (audible) => {
          document.body.dataset.audio = audible ? "playing" : "silent";
        },
      })
    : null;
const transcript = new Transcript(els.transcript, config.name);

// --- what is shown ----------------------------------------------------------------------

function uiState() {
  if (page.phase === "idle" || page.phase === "ended") return page.phase;
  if (page.phase === "starting") return "connecting";
  if (page.link === "reconnecting") return "reconnecting";
  if (page.link !== "open" || !["active", "stopping"].includes(page.server)) return "connecting";
  return page.speaking.size ? "speaking" : "active";
}

function statusText(state) {
  switch (state) {
    case "idle":
      return `Press Start to talk with ${config.name}.`;
    case "connecting":
      return "Connecting…";
    case "reconnecting":
      return "Connection lost. Reconnecting…";
    case "speaking":
      return `${config.name} is speaking…`;
    case "ended":
      return `Conversation ended: ${page.endedText}.`;
    default:
      if (page.stopping || page.server === "stopping") return "Ending the conversation…";
      return remote && remote.connected
        ? `Connected. Type or talk to ${config.name}.`
        : `Connected. Type a message to ${config.name}.`;
  }
}

function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

// Buttons are disabled with aria-disabled, so one that becomes unavailable keeps the keyboard
// focus instead of dropping it to the page; their handlers check isDisabled().
function setDisabled(button, disabled) {
  if (button) button.setAttribute("aria-disabled", String(disabled));
}

function isDisabled(button) {
  return button.getAttribute("aria-disabled") === "true";
}

function render() {
  const state = uiState();
  const live = page.phase === "live";
  const canTalk = state === "active" || state === "speaking";
  document.body.dataset.state = state;
  if (page.session) document.body.dataset.sessionId = page.session.id;
  else delete document.body.dataset.sessionId;
  if (speech) document.body.dataset.audioChunks = String(speech.scheduled);
  setText(els.status, statusText(state));

  els.startPanel.hidden = live;
  setText(els.start, page.phase === "ended" ? "Start a new conversation" : "Start conversation");
  setDisabled(els.start, page.phase === "starting");
  els.quality.disabled = page.phase === "starting";
  els.message.disabled = !live;
  setDisabled(els.send, !canTalk);
  setDisabled(els.interrupt, state !== "speaking");
  setDisabled(els.stop, !live || page.stopping);
  if (els.mic) {
    els.mic.hidden = !(live && remote && remote.connected);
    els.mic.setAttribute("aria-pressed", String(Boolean(remote && remote.microphone)));
  }
  const muted = (speech && speech.suspended) || (remote && remote.needsAudioUnlock);
  els.sound.hidden = !(live && muted);
  if (canTalk && page.focusOnActive) {
    page.focusOnActive = false;
    els.message.focus();
  }
  tick();
}

function tick() {
  if (page.phase === "live" && page.session && page.session.expires_at) {
    const now = Date.now() + (page.session.clockOffset || 0);
    const left = Math.max(0, Math.round((Date.parse(page.session.expires_at) - now) / 1000));
    const minutes = Math.floor(left / 60);
    setText(els.remaining, `${minutes}:${String(left % 60).padStart(2, "0")} left`);
    els.remaining.classList.toggle("low", left <= 60);
  } else {
    const minutes = Math.round(config.sessionSeconds / 60);
    setText(els.remaining, minutes ? `Up to ${minutes} minutes per conversation` : "");
    els.remaining.classList.remove("low");
  }
}

function showError(text) {
  setText(els.error, text);
}

function clearError() {
  setText(els.error, "");
}

let captionTimer = null;

function showCaption(text) {
  clearTimeout(captionTimer);
  const tail = text.length > CAPTION_CHARS ? `…${text.slice(-CAPTION_CHARS).trimStart()}` : text;
  setText(els.caption, tail);
  els.caption.classList.add("shown");
}

function hideCaption(delay = 0) {
  clearTimeout(captionTimer);
  captionTimer = setTimeout(() => els.caption.classList.remove("shown"), delay);
}

// --- starting, rejoining, ending ----------------------------------------------------------

function startError(response, body) {
  const message = body && body.error && body.error.message;
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  switch (response.status) {
    case 403:
      return message || "This site may not start a conversation with this avatar.";
    case 404:
      return "This avatar is not available.";
    case 429:
      return `${message || "Too many conversations right now."}${
        retry > 0 ? ` Try again in ${retry} seconds.` : ""
      }`;
    case 502:
    case 503:
      return `The avatar service could not start the conversation. ${message || ""} Try again in a moment.`.replace(
        /\s+/g,
        " ",
      );
    default:
      return message || `The conversation could not start (HTTP ${response.status}).`;
  }
}

async function start() {
  if (page.phase === "starting" || page.phase === "live" || isDisabled(els.start)) return;
  if (speech) speech.unlock(); // inside the click: the browser lets audio play from now on
  clearError();
  transcript.clear();
  page.phase = "starting";
  page.endedText = "";
  page.focusOnActive = true;
  render();
  let response;
  let body = null;
  try {
    response = await fetch(config.startUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({
        quality: els.quality.value,
        ...(config.parentOrigin ? { embed_origin: config.parentOrigin } : {}),
      }),
    });
    body = await response.json().catch(() => null);
  } catch {
    failStart("The server could not be reached. Check the connection and try again.");
    return;
  }
  if (!response.ok || !body || !body.player) {
    failStart(startError(response, body));
    return;
  }
  const serverNow = Date.parse(response.headers.get("Date") || "");
  const stored = loadSession(config.key);
  const known = stored && stored.id === body.id;
  const record = {
    id: body.id,
    token: body.player.token,
    websocket_url: body.player.websocket_url,
    provider: body.provider,
    quality: body.quality,
    status: body.status,
    expires_at: body.expires_at,
    media: body.media,
    // Server clock minus ours (for the time left): from the Date header where the server sends
    // one, else from the first event that arrives live.
    clockOffset: Number.isFinite(serverNow) ? serverNow - Date.now() : null,
    lastSeq: known ? stored.lastSeq : 0,
  };
  // 200: this browser already had this conversation open (another tab, lost storage). Its past
  // is replayed into the transcript but not spoken again; with no stored seq to tell where the
  // past ends, the burst the relay sends on resuming is taken as the past.
  const rejoined = response.status === 200;
  join(record, { replay: rejoined, burst: rejoined && !known });
}

function failStart(text) {
  page.phase = "idle";
  page.focusOnActive = false;
  showError(text);
  render();
}

function join(record, { replay = false, burst = false } = {}) {
  page.session = record;
  page.phase = "live";
  page.link = "connecting";
  page.server = replay ? null : record.status;
  page.speaking.clear();
  page.lastTask = null;
  page.stopping = false;
  page.historyUpTo = replay ? record.lastSeq : 0;
  page.burst = burst ? { opened: null, last: null } : null;
  page.pendingEvents = [];
  if (record.quality) els.quality.value = record.quality;
  saveSession(config.key, record);
  if (speech && record.media && record.media.kind === "local") {
    speech.bind({ audioUrl: record.media.audio_url, token: record.token });
  }
  relay = new Relay({
    path: record.websocket_url,
    token: record.token,
    after: replay ? 0 : record.lastSeq, // a replay rebuilds the transcript from the start
    onMessage: receive,
    onLink: linkChanged,
    onRefused: () => end(null, "This conversation can no longer be rejoined"),
  });
  relay.open();
  if (!isLocal) connectRemote(record.media);
  render();
}

function linkChanged(link) {
  page.link = link;
  if (link === "open" && page.burst && page.burst.opened === null) {
    page.burst.opened = performance.now();
  }
  if (link === "open") {
    if (page.stopping) relay.send({ type: "stop" });
    for (const event of page.pendingEvents.splice(0)) relay.send({ type: "client_event", event });
  }
  render();
}

function end(reason, text) {
  const hadFocus = root.contains(document.activeElement) && document.activeElement !== els.transcript;
  page.phase = "ended";
  page.endedText = text || REASONS[reason] || "The conversation has ended";
  page.speaking.clear();
  page.stopping = false;
  page.focusOnActive = false;
  if (speech) speech.cutAll();
  if (relay) relay.close();
  relay = null;
  if (remote) remote.disconnect();
  dropSession(config.key);
  page.session = null;
  transcript.finishAll();
  transcript.note(`Conversation ended: ${page.endedText}.`);
  hideCaption();
  render();
  if (hadFocus) els.start.focus();
}

// --- the relay's messages -----------------------------------------------------------------

function taskKey(message) {
  // The local avatar tags every event with its task. Remote rooms do not always tag word
  // chunks, or tag each with an id of its own (LiveAvatar): they belong to the utterance
  // under way.
  if (message.task_id != null && (isLocal || message.type === "avatar_start_talking")) {
    return String(message.task_id);
  }
  return page.lastTask || "current";
}

/** Whether a message is part of the resume burst (see `page.burst`): the catch-up arrives
 * all at once, so the burst ends at the first quiet gap, or if nothing came for a while. */
function inBurst() {
  const burst = page.burst;
  if (!burst || burst.opened === null) return false;
  const now = performance.now();
  const over =
    burst.last === null ? now - burst.opened > BURST_WAIT_MS : now - burst.last > BURST_GAP_MS;
  if (over) {
    page.burst = null;
    return false;
  }
  burst.last = now;
  return true;
}

function receive(message) {
  const history = message.seq <= page.historyUpTo || inBurst();
  if (page.session) {
    page.session.lastSeq = relay.lastSeq;
    const at = Date.parse(message.at);
    if (!history && page.session.clockOffset == null && Number.isFinite(at)) {
      page.session.clockOffset = at - Date.now();
    }
    saveSession(config.key, page.session);
  }
  switch (message.type) {
    case "session_state":
      page.server = message.status;
      if (message.status === "closed") {
        end(message.reason);
        return;
      }
      break;
    case "avatar_start_talking": {
      const key = taskKey(message);
      page.lastTask = key;
      page.speaking.add(key);
      transcript.avatarLine(key);
      if (speech && !history) speech.play(key);
      break;
    }
    case "avatar_talking_message": {
      const key = taskKey(message);
      showCaption(transcript.avatarWords(key, String(message.message ?? "")));
      if (face && !speech.has(key)) face.pulse();
      break;
    }
    case "avatar_end_message": {
      // LiveAvatar's final transcription carries the whole utterance: shown if no chunk was.
      const key = taskKey(message);
      if (message.message && !transcript.avatarText(key)) {
        showCaption(transcript.avatarWords(key, String(message.message)));
      }
      transcript.avatarDone(key);
      break;
    }
    case "avatar_stop_talking": {
      const interrupted = Boolean(message.interrupted);
      const key = taskKey(message);
      transcript.avatarDone(key, { interrupted });
      if (interrupted || message.task_id == null) page.speaking.clear();
      else page.speaking.delete(key);
      if (interrupted && speech && !history) speech.cutAll();
      if (!page.speaking.size) {
        page.lastTask = null;
        hideCaption(1500);
      }
      break;
    }
    case "user_talking_message":
      transcript.userWords(String(message.message ?? ""));
      break;
    case "user_end_message":
      if (message.message && !transcript.userLine) transcript.userWords(String(message.message));
      transcript.userDone();
      break;
    case "error":
      if (message.code === "speech_failed") page.speaking.clear();
      if (!history) showError(message.message || "Something went wrong.");
      break;
    default:
      break;
  }
  render();
}

// --- remote media (LiveKit) ---------------------------------------------------------------

async function connectRemote(media) {
  if (!media || media.kind !== "livekit") return;
  if (!remote) {
    remote = new RemoteMedia({ video: els.video, onEvent: forward, onChange: () => render() });
  }
  try {
    await remote.connect(media);
    if (els.mediaNote) els.mediaNote.hidden = true;
  } catch (error) {
    if (els.mediaNote) {
      els.mediaNote.textContent =
        error.message === ASSETS_MISSING
          ? ASSETS_MISSING
          : `The avatar's video could not connect (${error.message}). You can still type.`;
      els.mediaNote.hidden = false;
    }
  }
  render();
}

/** Each data-channel message from the provider's room goes to the server for the record. */
function forward(event) {
  if (page.phase !== "live") return;
  if (relay && relay.send({ type: "client_event", event })) return;
  if (page.pendingEvents.length < MAX_PENDING_EVENTS) page.pendingEvents.push(event);
}

// --- what the person does -----------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  if (speech) speech.unlock(); // a key press or click: resumes audio a reload left suspended
  const text = els.message.value.trim();
  if (!text || isDisabled(els.send)) return;
  if (config.provider === "liveavatar") {
    // LiveAvatar takes speech from the room's data channel, not from the API.
    try {
      await remote.command(speakMode === "chat" ? "avatar.speak_response" : "avatar.speak_text", {
        text,
      });
    } catch (error) {
      showError(`Not sent: ${error.message}`);
      return;
    }
  } else if (!relay || !relay.send({ type: "speak", text, mode: speakMode })) {
    showError("Not connected right now. Try again in a moment.");
    return;
  }
  if (echoTyped) transcript.userSaid(text);
  els.message.value = "";
  clearError();
}

function interrupt() {
  if (isDisabled(els.interrupt) || uiState() !== "speaking") return;
  if (speech) speech.cutAll(); // silence at once; the server confirms with an interrupted stop
  if (config.provider === "liveavatar") {
    if (remote) remote.command("avatar.interrupt").catch((error) => showError(error.message));
  } else if (relay) {
    relay.send({ type: "interrupt" });
  }
  if (!isLocal) {
    // A remote room may not confirm the cut with a stop event; its picture and voice stop.
    page.speaking.clear();
    render();
  }
}

function stopConversation() {
  if (isDisabled(els.stop) || page.phase !== "live") return;
  page.stopping = true;
  if (speech) speech.cutAll();
  // Sent now, or as soon as the relay reopens (linkChanged).
  if (relay) relay.send({ type: "stop" });
  render();
}

function unlockSound() {
  if (speech) speech.unlock();
  if (remote) remote.unlockAudio().catch((error) => showError(error.message));
}

async function toggleMicrophone() {
  if (!remote) return;
  try {
    await remote.setMicrophone(!remote.microphone);
  } catch (error) {
    showError(`The microphone could not be switched: ${error.message}`);
  }
}

function keepAlive() {
  const state = uiState();
  if ((state === "active" || state === "speaking") && document.visibilityState === "visible") {
    relay.send({ type: "keep_alive" });
  }
}

function init() {
  els.start.addEventListener("click", start);
  els.composer.addEventListener("submit", send);
  els.interrupt.addEventListener("click", interrupt);
  els.stop.addEventListener("click", stopConversation);
  els.sound.addEventListener("click", unlockSound);
  if (els.mic) els.mic.addEventListener("click", toggleMicrophone);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && uiState() === "speaking") interrupt();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && relay) relay.retryNow();
  });
  if (face) document.body.dataset.audio = "silent";
  setInterval(keepAlive, KEEP_ALIVE_MS);
  setInterval(tick, 1000);

  const stored = loadSession(config.key);
  if (stored) {
    // A reload: rejoin the conversation this tab had (audio waits for a click, unless the
    // browser allows it already).
    if (speech) speech.context();
    join(stored, { replay: true });
  } else {
    render();
  }
}

init();
