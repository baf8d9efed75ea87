// The local avatar's face, drawn on a canvas: a head, eyes that blink, and a mouth whose
// opening follows the level of the audio actually heard (or, when there is no audio to
// measure, a short pulse per spoken word). With prefers-reduced-motion: no head sway, no
// blinking, and a calmer mouth.

const SKIN = "#f1c7a5";
const SKIN_SHADE = "#e0ad89";
const HAIR = "#3b2a20";
const SHIRT = "#2f4a8a";
const IRIS = "#3d6b8f";
const LIP = "#5a1d28";
const TONGUE = "#d8697c";

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

export class Face {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{level: () => number, onAudible?: (audible: boolean) => void}} options
   *   `level` is the RMS heard now (0..1); `onAudible` reports when sound starts and stops.
   */
  constructor(canvas, { level, onAudible = () => {} }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.level = level;
    this.onAudible = onAudible;
    this.audible = false;
    this.mouth = 0;
    this.pulseAt = -Infinity;
    this.nextBlink = performance.now() + 1500;
    this.width = 0;
    this.height = 0;
    this.motion = window.matchMedia("(prefers-reduced-motion: reduce)");
    this.frame = this.frame.bind(this);
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    requestAnimationFrame(this.frame);
  }

  get reduced() {
    return this.motion.matches;
  }

  /** A word was said but there is no audio to measure (a rejoined utterance, no sound). */
  pulse() {
    this.pulseAt = performance.now();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = this.canvas.getBoundingClientRect();
    this.width = Math.max(1, Math.round(rect.width * ratio));
    this.height = Math.max(1, Math.round(rect.height * ratio));
    if (this.canvas.width !== this.width) this.canvas.width = this.width;
    if (this.canvas.height !== this.height) this.canvas.height = this.height;
  }

  frame(now) {
    requestAnimationFrame(this.frame);
    const rms = this.level();
    const audible = rms > 0.004;
    if (audible !== this.audible) {
      this.audible = audible;
      this.onAudible(audible);
    }
    // Speech RMS sits around 0.03-0.2: map it to an opening, open fast, close a little slower.
    let target = clamp((rms - 0.006) * 6, 0, 1);
    const sincePulse = now - this.pulseAt;
    if (sincePulse < 220) target = Math.max(target, 0.55 * (1 - sincePulse / 220));
    if (this.reduced) target *= 0.6;
    const rate = target > this.mouth ? 0.6 : 0.25;
    this.mouth += (target - this.mouth) * rate;
    this.draw(now);
  }

  eyeOpening(now) {
    if (this.reduced) return 1;
    if (now > this.nextBlink + 160) this.nextBlink = now + 2200 + Math.random() * 3800;
    const t = now - this.nextBlink;
    if (t < 0 || t > 160) return 1;
    return Math.abs(t / 80 - 1); // closes and opens again in 160 ms
  }

  draw(now) {
    const { ctx, width: w, height: h } = this;
    const s = Math.min(w, h);
    const sway = this.reduced ? 0 : Math.sin(now / 1500) * s * 0.006;
    const cx = w / 2 + (this.reduced ? 0 : Math.sin(now / 2300) * s * 0.004);
    const cy = h * 0.5 + sway;
    const rx = s * 0.25;
    const ry = s * 0.31;

    const backdrop = ctx.createRadialGradient(cx, h * 0.42, s * 0.05, cx, h * 0.5, s * 0.8);
    backdrop.addColorStop(0, "#e4ecff");
    backdrop.addColorStop(1, "#aebfe8");
    ctx.fillStyle = backdrop;
    ctx.fillRect(0, 0, w, h);

    // Shoulders and neck.
    ctx.fillStyle = SHIRT;
    ctx.beginPath();
    ctx.ellipse(w / 2, cy + ry + s * 0.3, s * 0.42, s * 0.3, 0, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = SKIN_SHADE;
    ctx.fillRect(cx - rx * 0.35, cy + ry * 0.6, rx * 0.7, ry * 0.55);

    // Ears, head, hair.
    ctx.fillStyle = SKIN_SHADE;
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.ellipse(cx + side * rx * 0.98, cy + ry * 0.02, rx * 0.13, ry * 0.16, 0, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.fillStyle = SKIN;
    ctx.beginPath();
    ctx.ellipse(cx, cy, rx, ry, 0, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = HAIR;
    ctx.beginPath();
    ctx.ellipse(cx, cy - ry * 0.55, rx * 1.04, ry * 0.55, 0, Math.PI, Math.PI * 2);
    ctx.quadraticCurveTo(cx + rx * 0.5, cy - ry * 0.78, cx - rx * 0.2, cy - ry * 0.62);
    ctx.quadraticCurveTo(cx - rx * 0.8, cy - ry * 0.5, cx - rx * 1.04, cy - ry * 0.55);
    ctx.fill();

    // Eyes (blinking) and brows (lifting a little as the mouth opens).
    const open = this.eyeOpening(now);
    const eyeY = cy - ry * 0.12;
    const lift = this.mouth * ry * 0.03;
    for (const side of [-1, 1]) {
      const ex = cx + side * rx * 0.4;
      ctx.fillStyle = "#ffffff";
      ctx.beginPath();
      ctx.ellipse(ex, eyeY, rx * 0.17, Math.max(ry * 0.1 * open, 0.6), 0, 0, Math.PI * 2);
      ctx.fill();
      if (open > 0.25) {
        ctx.fillStyle = IRIS;
        ctx.beginPath();
        ctx.arc(ex, eyeY, rx * 0.085 * Math.min(1, open * 1.3), 0, Math.PI * 2);
        ctx.fill();
        ctx.fillStyle = "#111111";
        ctx.beginPath();
        ctx.arc(ex, eyeY, rx * 0.04, 0, Math.PI * 2);
        ctx.fill();
      }
      ctx.strokeStyle = HAIR;
      ctx.lineWidth = Math.max(2, s * 0.012);
      ctx.lineCap = "round";
      ctx.beginPath();
      ctx.moveTo(ex - rx * 0.18, eyeY - ry * 0.17 - lift);
      ctx.quadraticCurveTo(ex, eyeY - ry * 0.24 - lift, ex + rx * 0.18, eyeY - ry * 0.17 - lift);
      ctx.stroke();
    }

    // Nose.
    ctx.strokeStyle = SKIN_SHADE;
    ctx.lineWidth = Math.max(2, s * 0.01);
    ctx.beginPath();
    ctx.moveTo(cx, cy - ry * 0.02);
    ctx.quadraticCurveTo(cx - rx * 0.1, cy + ry * 0.16, cx + rx * 0.04, cy + ry * 0.19);
    ctx.stroke();

    this.drawMouth(cx, cy + ry * 0.46, rx, ry, s);
  }

  drawMouth(x, y, rx, ry, s) {
    const { ctx } = this;
    const o = this.mouth;
    const width = rx * 0.42 * (1 - 0.18 * o);
    if (o < 0.04) {
      ctx.strokeStyle = LIP;
      ctx.lineWidth = Math.max(2, s * 0.011);
      ctx.beginPath();
      ctx.moveTo(x - width, y);
      ctx.quadraticCurveTo(x, y + ry * 0.07, x + width, y);
      ctx.stroke();
      return;
    }
    const height = ry * (0.03 + 0.2 * o);
    ctx.fillStyle = LIP;
    ctx.beginPath();
    ctx.ellipse(x, y + height * 0.3, width, height, 0, 0, Math.PI * 2);
    ctx.fill();
    ctx.save();
    ctx.clip();
    ctx.fillStyle = TONGUE;
    ctx.beginPath();
    ctx.ellipse(x, y + height * 1.1, width * 0.7, height * 0.7, 0, 0, Math.PI * 2);
    ctx.fill();
    if (o > 0.3) {
      ctx.fillStyle = "#fbfbf7";
      ctx.fillRect(x - width, y + height * 0.3 - height, width * 2, height * 0.32);
    }
    ctx.restore();
  }
}
