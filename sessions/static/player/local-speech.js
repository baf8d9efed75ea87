// The local avatar's voice: each task's WAV chunks fetched from the server as they are
// synthesised, decoded with Web Audio and scheduled back to back where the server says each
// one starts; an AnalyserNode measures what is actually heard, which moves the mouth.

const LEAD_SECONDS = 0.06; // scheduling head-room for the first chunk
const LATE_SLACK_SECONDS = 0.01;

export class LocalSpeech {
  /** One per page: its AudioContext outlives sessions (a browser lets it play once a click
   * has created or resumed it). */
  constructor({ onChange = () => {} } = {}) {
    this.audioUrl = "";
    this.token = "";
    this.onChange = onChange;
    this.ctx = null;
    this.analyser = null;
    this.samples = null;
    this.tasks = new Map();
    this.scheduled = 0; // chunks scheduled so far (a hook for tests and diagnostics)
  }

  /** Where this session's audio is: `media.audio_url` and the player token. */
  bind({ audioUrl, token }) {
    this.cutAll();
    this.audioUrl = audioUrl;
    this.token = token;
  }

  /**
   * Create (or resume) the AudioContext. Called from the Start click so the browser lets it
   * play; on a reload it is created suspended and resumed by the next click.
   */
  unlock() {
    const ctx = this.context();
    if (ctx && ctx.state === "suspended") ctx.resume().catch(() => {});
    return ctx;
  }

  context() {
    if (this.ctx) return this.ctx;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    const ctx = new Context();
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.analyser.smoothingTimeConstant = 0.2;
    this.analyser.connect(ctx.destination);
    this.samples = new Float32Array(this.analyser.fftSize);
    ctx.addEventListener("statechange", () => this.onChange());
    this.ctx = ctx;
    return ctx;
  }

  get suspended() {
    return Boolean(this.ctx) && this.ctx.state !== "running";
  }

  has(taskId) {
    return this.tasks.has(taskId);
  }

  /** Start fetching and playing a task's audio (on its avatar_start_talking). */
  play(taskId) {
    const ctx = this.context();
    if (!ctx || !this.audioUrl || this.tasks.has(taskId)) return;
    const task = {
      id: taskId,
      abort: new AbortController(),
      gain: ctx.createGain(),
      sources: new Set(),
      start: null,
      cut: false,
      fetched: false,
    };
    task.gain.connect(this.analyser);
    this.tasks.set(taskId, task);
    this.run(task).catch((error) => {
      if (!task.cut) console.warn("systimz: audio for task", taskId, "failed:", error);
    });
  }

  async run(task) {
    // Chunk n+1 is requested as soon as chunk n's headers arrive (it may still be being
    // synthesised: the server holds the request until it exists), so decoding overlaps fetching.
    let next = this.fetchChunk(task, 0);
    for (let index = 0; next; index += 1) {
      const chunk = await next;
      if (!chunk || task.cut) break;
      next = chunk.last ? null : this.fetchChunk(task, index + 1);
      const buffer = await this.ctx.decodeAudioData(chunk.data);
      if (task.cut) break;
      this.schedule(task, buffer, chunk.startMs);
    }
    task.fetched = true;
    this.forgetIfDone(task);
  }

  /** One chunk, or null when there is none (404: the task ended or was cut) or on failure. */
  async fetchChunk(task, index) {
    // The token goes in a header, so it never lands in an access log.
    const url = `${this.audioUrl}${encodeURIComponent(task.id)}/${index}.wav`;
    try {
      const response = await fetch(url, {
        signal: task.abort.signal,
        credentials: "same-origin",
        headers: { "X-Player-Token": this.token },
      });
      if (!response.ok) {
        if (response.status !== 404) console.warn("systimz: audio chunk", index, response.status);
        return null;
      }
      const startMs = Number.parseFloat(response.headers.get("X-Chunk-Start-Ms") || "0");
      return {
        data: await response.arrayBuffer(),
        startMs: Number.isFinite(startMs) ? startMs : 0,
        last: response.headers.get("X-Chunk-Last") === "1",
      };
    } catch (error) {
      if (!task.cut) console.warn("systimz: audio chunk", index, "not fetched:", error);
      return null;
    }
  }

  schedule(task, buffer, startMs) {
    const ctx = this.ctx;
    if (task.start === null) task.start = ctx.currentTime + LEAD_SECONDS;
    let at = task.start + startMs / 1000;
    const earliest = ctx.currentTime + LATE_SLACK_SECONDS;
    if (at < earliest) {
      // A chunk that arrives late moves the rest of the utterance back rather than overlap.
      task.start += earliest - at;
      at = earliest;
    }
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(task.gain);
    source.addEventListener("ended", () => {
      task.sources.delete(source);
      this.forgetIfDone(task);
    });
    source.start(at);
    task.sources.add(source);
    this.scheduled += 1;
    this.onChange();
  }

  forgetIfDone(task) {
    if (task.fetched && task.sources.size === 0 && this.tasks.get(task.id) === task) {
      this.tasks.delete(task.id);
      task.gain.disconnect();
      this.onChange();
    }
  }

  /** Silence everything at once (interrupt, stop, an interrupted avatar_stop_talking). */
  cutAll() {
    for (const task of this.tasks.values()) {
      task.cut = true;
      task.abort.abort();
      for (const source of task.sources) {
        try {
          source.stop();
        } catch {
          // never started: nothing to stop
        }
      }
      task.sources.clear();
      task.gain.disconnect();
    }
    this.tasks.clear();
    this.onChange();
  }

  /** The level heard now: the RMS of the analyser's current window (0 when silent). */
  level() {
    if (!this.analyser || this.tasks.size === 0) return 0;
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const sample of this.samples) sum += sample * sample;
    return Math.sqrt(sum / this.samples.length);
  }
}
