// The part of livekit-client the talk page uses (sessions/static/player/remote-media.js),
// bundled by `make assets` into sessions/static/player/vendor/livekit.esm.js.
export { Room, RoomEvent, Track, ConnectionState, DisconnectReason } from "livekit-client";
