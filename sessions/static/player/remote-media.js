// Remote providers (HeyGen Interactive Avatar, LiveAvatar): the avatar's video and voice come
// from a LiveKit room. livekit-client is an optional bundle (`make assets` builds
// vendor/livekit.esm.js); without it the page still converses in text.

export const ASSETS_MISSING = "Video needs the player assets (make assets)";

function eventId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class RemoteMedia {
  /**
   * @param {{video: HTMLVideoElement,
   *          onEvent: (event: object) => void,
   *          onChange: () => void}} options
   *   `onEvent` gets each data-channel message (parsed JSON) to forward as client_event.
   */
  constructor({ video, onEvent, onChange }) {
    this.video = video;
    this.onEvent = onEvent;
    this.onChange = onChange;
    this.room = null;
    this.lk = null;
    this.microphone = false;
    this.needsAudioUnlock = false;
  }

  get connected() {
    return Boolean(this.room) && this.room.state === this.lk.ConnectionState.Connected;
  }

  /** Join the room; throws Error(ASSETS_MISSING) when the bundle is not built. */
  async connect(media) {
    try {
      this.lk = await import("./vendor/livekit.esm.js");
    } catch {
      throw new Error(ASSETS_MISSING);
    }
    const { Room, RoomEvent } = this.lk;
    const room = new Room({ adaptiveStream: true, dynacast: true });
    const decoder = new TextDecoder();
    room
      .on(RoomEvent.TrackSubscribed, (track) => {
        if (track.kind === "video" || track.kind === "audio") track.attach(this.video);
        this.onChange();
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        track.detach(this.video);
        this.onChange();
      })
      .on(RoomEvent.DataReceived, (payload) => {
        let event;
        try {
          event = JSON.parse(decoder.decode(payload));
        } catch {
          return; // not JSON: nothing the record keeps
        }
        if (event && typeof event === "object" && !Array.isArray(event)) this.onEvent(event);
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        this.needsAudioUnlock = !room.canPlaybackAudio;
        this.onChange();
      })
      .on(RoomEvent.ConnectionStateChanged, () => this.onChange())
      .on(RoomEvent.Disconnected, () => {
        this.microphone = false;
        this.onChange();
      });
    this.room = room;
    await room.connect(media.url, media.access_token);
    this.needsAudioUnlock = !room.canPlaybackAudio;
    this.onChange();
  }

  /** From a click: let the room's audio play. */
  async unlockAudio() {
    if (!this.room) return;
    await this.room.startAudio();
    this.needsAudioUnlock = !this.room.canPlaybackAudio;
    this.onChange();
  }

  async setMicrophone(on) {
    if (!this.room) return;
    await this.room.localParticipant.setMicrophoneEnabled(on);
    this.microphone = on;
    this.onChange();
  }

  /** A LiveAvatar command on the agent-control topic (speech and interrupts go this way). */
  async command(eventType, fields = {}) {
    if (!this.connected) throw new Error("The avatar's media room is not connected.");
    const body = JSON.stringify({ event_id: eventId(), event_type: eventType, ...fields });
    await this.room.localParticipant.publishData(new TextEncoder().encode(body), {
      reliable: true,
      topic: "agent-control",
    });
  }

  disconnect() {
    const room = this.room;
    this.room = null;
    this.microphone = false;
    if (room) room.disconnect().catch(() => {});
    this.video.srcObject = null;
    this.onChange();
  }
}
