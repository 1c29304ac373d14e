// The recording player: plays a console recording that the vnc_proxy
// handler's `record` option wrote (FBS 001.000 plus its JSON sidecar) with
// noVNC's own decoder, so it shows exactly what the browser showed.
//
// The page address names the files, same origin only:
//   player.html?src=/recordings/<id>.fbs&meta=/recordings/<id>.json
// (meta defaults to src with .json for .fbs).
//
// A recording starts with the proxy's own handshake (RFB 3.8, security
// None), so noVNC connects to it without credentials. The player hands the
// recorded blocks to noVNC through a channel that looks like a WebSocket,
// each at its timestamp divided by the speed, and drops what noVNC sends
// back. Tight and ZRLE carry zlib state from one update to the next, so a
// seek backwards starts a new noVNC from the beginning and fast-forwards.
//
// The page's state is published for people (the status line) and for
// programs: window.playerState, the body's data-state attribute, and a
// "playerstatechange" event on document whose detail is a copy of it.
import RFB from '@novnc/novnc';

const FBS_HEADER = 'FBS 001.000\n';
// The most bytes handed to noVNC and not yet decoded during a
// fast-forward; noVNC's receive queue gives up at 40 MiB.
const MAX_BACKLOG = 4 << 20;

const statusLine = document.getElementById('status');
const screen = document.getElementById('screen');
const playButton = document.getElementById('play');
const speedSelect = document.getElementById('speed');
const timeline = document.getElementById('timeline');
const clock = document.getElementById('clock');
const warningList = document.getElementById('warnings');

const state = {
  state: 'loading', // loading, paused, playing, seeking, ended, error
  error: '',        // why the recording cannot be played
  position: 0,      // ms into the recording
  duration: 0,      // ms, the last block's timestamp
  speed: 1,
  width: 0,         // framebuffer size, once noVNC has it
  height: 0,
  warnings: [],     // what may make the picture differ from the original
  meta: null,       // the sidecar, when it could be read
};
window.playerState = state;

function publish(changes) {
  Object.assign(state, changes);
  document.body.dataset.state = state.state;
  statusLine.textContent = describe(state);
  const usable = !['loading', 'error'].includes(state.state);
  playButton.disabled = !usable;
  speedSelect.disabled = !usable;
  timeline.disabled = !usable;
  playButton.textContent = state.state === 'playing' ? 'Pause' : 'Play';
  timeline.max = String(state.duration);
  if (!timelineHeld) {
    timeline.value = String(Math.round(state.position));
  }
  clock.textContent = `${formatTime(state.position)} / ${formatTime(state.duration)}`;
  warningList.hidden = state.warnings.length === 0;
  warningList.replaceChildren(...state.warnings.map((w) => {
    const li = document.createElement('li');
    li.textContent = w;
    return li;
  }));
  document.dispatchEvent(new CustomEvent('playerstatechange', { detail: { ...state, warnings: [...state.warnings] } }));
}

function describe(s) {
  switch (s.state) {
    case 'loading': return 'Loading…';
    case 'error': return s.error;
    case 'playing': return `Playing at ${s.speed}×`;
    case 'seeking': return 'Seeking…';
    case 'ended': return 'End of the recording';
    default: return 'Paused';
  }
}

function formatTime(ms) {
  const tenths = Math.floor(ms / 100);
  const m = Math.floor(tenths / 600);
  const s = Math.floor(tenths / 10) % 60;
  return `${m}:${String(s).padStart(2, '0')}.${tenths % 10}`;
}

function warn(text) {
  publish({ warnings: [...state.warnings, text] });
}

// parseFBS returns the blocks of an FBS 001.000 file: {time, data} with
// data a view into the file. A file cut inside a block (a recording that
// ended with a crash or a full disk) gives its whole blocks.
function parseFBS(buffer) {
  const bytes = new Uint8Array(buffer);
  const header = new TextDecoder('latin1').decode(bytes.subarray(0, FBS_HEADER.length));
  if (header !== FBS_HEADER) {
    throw new Error('this is not an FBS 001.000 recording');
  }
  const view = new DataView(buffer);
  const blocks = [];
  let offset = FBS_HEADER.length;
  let last = 0;
  let truncated = false;
  while (offset < bytes.length) {
    if (offset + 4 > bytes.length) {
      truncated = true;
      break;
    }
    const length = view.getUint32(offset);
    const padded = length + ((4 - (length % 4)) % 4);
    if (offset + 4 + padded + 4 > bytes.length) {
      truncated = true;
      break;
    }
    // Time never runs backwards in playback, whatever a file says.
    last = Math.max(last, view.getUint32(offset + 4 + padded));
    blocks.push({ time: last, data: bytes.subarray(offset + 4, offset + 4 + length) });
    offset += 8 + padded;
  }
  return { blocks, truncated };
}

// decodingOf says how noVNC decodes a pixel format: at which of its two
// depths (24 and 8), and whether red and blue must be swapped, for the
// little-endian BGRX format of X servers and TigerVNC's viewer that noVNC
// itself never asks for. null: a format noVNC cannot decode.
function decodingOf(pf) {
  const shifts = (r, g, b) => pf.red_shift === r && pf.green_shift === g && pf.blue_shift === b;
  const maxes = (m) => pf.red_max === m && pf.green_max === m && pf.blue_max === m;
  if (!pf.true_colour) {
    return null;
  }
  if (pf.bits_per_pixel === 32 && pf.depth === 24 && !pf.big_endian && maxes(255)) {
    if (shifts(0, 8, 16)) {
      return { depth: 24, swap: false };
    }
    if (shifts(16, 8, 0)) {
      return { depth: 24, swap: true };
    }
  }
  if (pf.bits_per_pixel === 8 && pf.depth === 8 && maxes(3) && shifts(0, 2, 4)) {
    return { depth: 8, swap: false };
  }
  return null;
}

function describeFormat(pf) {
  return `${pf.bits_per_pixel} bpp, depth ${pf.depth}, ${pf.big_endian ? 'big' : 'little'}-endian, ` +
    `max ${pf.red_max}/${pf.green_max}/${pf.blue_max}, shifts ${pf.red_shift}/${pf.green_shift}/${pf.blue_shift}`;
}

// buildSteps turns the blocks and the sidecar's pixel formats into one
// list of steps: {time, data} to hand to noVNC, {time, decoding} to switch
// noVNC's decoders. A format applies from its byte offset in the stream
// (from its time for a sidecar without offsets), so a block that holds
// that offset is split there.
function buildSteps(blocks, formats) {
  const changes = formats.map((pf) => ({ pf, decoding: decodingOf(pf) }));
  for (const c of changes) {
    if (!c.decoding) {
      warn(`The browser asked for a pixel format noVNC cannot decode (${describeFormat(c.pf)}) at ${formatTime(c.pf.ms)}: colours may be wrong from there.`);
    }
  }
  const steps = [];
  let next = 0;
  let streamOffset = 0;
  for (const block of blocks) {
    let data = block.data;
    for (;;) {
      const c = changes[next];
      if (!c) {
        break;
      }
      const at = typeof c.pf.offset === 'number' ? c.pf.offset - streamOffset : (c.pf.ms <= block.time ? 0 : Infinity);
      if (at > data.length || (at === data.length && typeof c.pf.offset !== 'number')) {
        break;
      }
      const cut = Math.max(0, at);
      if (cut > 0) {
        steps.push({ time: block.time, data: data.subarray(0, cut) });
      }
      streamOffset += cut;
      data = data.subarray(cut);
      if (c.decoding) {
        steps.push({ time: block.time, decoding: c.decoding });
      }
      next++;
    }
    if (data.length > 0) {
      steps.push({ time: block.time, data });
      streamOffset += data.length;
    }
  }
  return steps;
}

// RecordingChannel is the WebSocket-like object noVNC reads from (it takes
// any object with these members, as it takes an RTCDataChannel). It is
// open from the start; what noVNC sends is dropped, since nobody answers a
// recording.
class RecordingChannel {
  constructor() {
    this.binaryType = 'arraybuffer';
    this.protocol = '';
    this.readyState = 'open';
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
  }

  send() {}

  close() {
    if (this.readyState === 'closed') {
      return;
    }
    this.readyState = 'closed';
    setTimeout(() => this.onclose?.({ code: 1000, reason: '', wasClean: true }));
  }

  push(data) {
    if (this.readyState === 'open' && this.onmessage) {
      this.onmessage({ data: data.slice().buffer });
    }
  }
}

class Player {
  constructor(steps, duration) {
    this.steps = steps;
    this.duration = duration;
    this.generation = 0; // bumped by every seek, to abandon an older one
    this.timer = 0;
    this.rfb = null;
    this.restart();
  }

  // restart makes a new noVNC with an empty channel, at position 0.
  restart() {
    if (this.rfb) {
      const old = this.rfb;
      old.retired = true;
      old.disconnect();
      this.frame.remove(); // at once: the page shows one canvas only
    }
    this.frame = document.createElement('div');
    this.frame.style.height = '100%';
    screen.replaceChildren(this.frame);
    this.channel = new RecordingChannel();
    const rfb = new RFB(this.frame, this.channel, { shared: true });
    rfb.viewOnly = true;
    rfb.focusOnClick = false;
    rfb.scaleViewport = false; // one canvas pixel per framebuffer pixel
    rfb.clipViewport = false;
    rfb.resizeSession = false;
    rfb.addEventListener('connect', () => {
      const canvas = this.frame.querySelector('canvas');
      if (canvas) {
        publish({ width: canvas.width, height: canvas.height });
      }
    });
    rfb.addEventListener('disconnect', () => {
      if (!rfb.retired) {
        this.pause();
        publish({ state: 'error', error: 'noVNC could not decode the recording at this point.' });
      }
    });
    this.rfb = rfb;
    this.swap = false;
    this.swapping = this.installSwap(rfb);
    this.index = 0;
    this.position = 0;
  }

  // installSwap puts a red-blue swap in front of noVNC's drawing of
  // decoded pixels, for a stream in BGRX. Tight and TightPNG are left
  // alone: their pixels are red, green, blue in every format, and their
  // JPEG and PNG images are pictures. Queued draws were swapped when they
  // were queued. It returns false when this noVNC has no such methods.
  installSwap(rfb) {
    const display = rfb._display;
    if (!display || typeof display.blitImage !== 'function' || typeof display.fillRect !== 'function') {
      return false;
    }
    const rgbEncodings = new Set([7, -260]); // Tight, TightPNG
    const active = (fromQueue) => this.swap && !fromQueue && !rgbEncodings.has(rfb._FBU?.encoding);
    const blitImage = display.blitImage.bind(display);
    const fillRect = display.fillRect.bind(display);
    display.blitImage = (x, y, width, height, arr, offset, fromQueue) => {
      if (!active(fromQueue)) {
        return blitImage(x, y, width, height, arr, offset, fromQueue);
      }
      const out = new Uint8Array(width * height * 4);
      for (let i = 0; i < out.length; i += 4) {
        out[i] = arr[offset + i + 2];
        out[i + 1] = arr[offset + i + 1];
        out[i + 2] = arr[offset + i];
        out[i + 3] = arr[offset + i + 3];
      }
      return blitImage(x, y, width, height, out, 0, fromQueue);
    };
    display.fillRect = (x, y, width, height, color, fromQueue) =>
      fillRect(x, y, width, height, active(fromQueue) ? [color[2], color[1], color[0]] : color, fromQueue);
    return true;
  }

  // busy: noVNC has stopped reading its receive queue until the images
  // of the last update are decoded (Tight's JPEG, TightPNG). Otherwise it
  // has decoded all it can, and what it holds is the start of a message.
  busy() {
    return Boolean(this.rfb?._flushing);
  }

  // queued is how many bytes noVNC holds undecoded.
  queued() {
    const sock = this.rfb?._sock;
    return sock && typeof sock._rQlen === 'number' ? sock._rQlen - sock._rQi : 0;
  }

  // step hands over the next step; false when it must wait for noVNC to
  // catch up first, since a new pixel format must not reach bytes noVNC
  // has not decoded yet. (noVNC sends its pixel format before it asks for
  // any picture, so the change comes between messages.)
  step() {
    const s = this.steps[this.index];
    if (s.decoding) {
      if (this.busy()) {
        return false;
      }
      this.rfb._fbDepth = s.decoding.depth;
      this.swap = s.decoding.swap;
      if (this.swap && !this.swapping && !this.swapWarned) {
        this.swapWarned = true;
        warn('This noVNC cannot swap red and blue: colours are wrong from here.');
      }
    } else {
      this.channel.push(s.data);
    }
    this.index++;
    return true;
  }

  // deliver hands over every step due by ms, as far as noVNC keeps up.
  deliver(ms) {
    while (this.index < this.steps.length && this.steps[this.index].time <= ms) {
      if (!this.step()) {
        return false;
      }
    }
    return true;
  }

  play() {
    if (state.state === 'ended' || this.position >= this.duration) {
      this.seek(0).then(() => this.play());
      return;
    }
    this.lastWall = performance.now();
    publish({ state: 'playing' });
    this.tick();
  }

  pause() {
    clearTimeout(this.timer);
    this.timer = 0;
    if (state.state === 'playing') {
      publish({ state: 'paused', position: this.position });
    }
  }

  setSpeed(speed) {
    if (state.state === 'playing') {
      this.advance();
    }
    publish({ speed });
  }

  advance() {
    const now = performance.now();
    this.position = Math.min(this.duration, this.position + (now - this.lastWall) * state.speed);
    this.lastWall = now;
  }

  tick() {
    clearTimeout(this.timer);
    this.advance();
    const caughtUp = this.deliver(this.position);
    if (caughtUp && this.index >= this.steps.length && this.position >= this.duration) {
      publish({ state: 'ended', position: this.duration });
      return;
    }
    let wait = 100;
    if (caughtUp && this.index < this.steps.length) {
      wait = Math.min(100, Math.max(0, (this.steps[this.index].time - this.position) / state.speed));
    } else if (!caughtUp) {
      wait = 10;
    }
    this.timer = setTimeout(() => this.tick(), wait);
    publish({ position: this.position });
  }

  // seek shows the recording at ms: forward from here, or from the start
  // for a point behind, in slices that leave the page responsive.
  async seek(ms) {
    const generation = ++this.generation;
    // A seek that replaces another one resumes as that one would have.
    const wasPlaying = state.state === 'playing' || (state.state === 'seeking' && this.resume);
    this.resume = wasPlaying;
    clearTimeout(this.timer);
    this.timer = 0;
    const target = Math.max(0, Math.min(ms, this.duration));
    publish({ state: 'seeking' });
    if (target < this.position) {
      this.restart();
    }
    for (;;) {
      const sliceEnd = performance.now() + 25;
      while (this.index < this.steps.length && this.steps[this.index].time <= target &&
             performance.now() < sliceEnd && !(this.busy() && this.queued() >= MAX_BACKLOG)) {
        if (!this.step()) {
          break;
        }
      }
      const done = !(this.index < this.steps.length && this.steps[this.index].time <= target);
      if (done && !this.busy()) {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, done ? 10 : 0));
      if (generation !== this.generation) {
        return;
      }
    }
    this.position = target;
    const atEnd = this.index >= this.steps.length && target >= this.duration;
    publish({ state: atEnd ? 'ended' : 'paused', position: target });
    if (wasPlaying && !atEnd) {
      this.play();
    }
  }
}

let timelineHeld = false;
let player = null;

function resolveSameOrigin(value, what) {
  const url = new URL(value, window.location.href);
  if (url.origin !== window.location.origin) {
    throw new Error(`the ${what} must be on this page's origin`);
  }
  return url;
}

function showFacts(meta) {
  const set = (id, text, title) => {
    const dd = document.getElementById(id);
    dd.textContent = text;
    if (title) {
      dd.title = title;
    }
  };
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
  set('fact-target', meta.target || '–');
  set('fact-token-hash', meta.token_hash || '–');
  set('fact-started', when(meta.started) || '–', meta.started);
  set('fact-ended', meta.ended ? when(meta.ended) : 'not ended (still recording, or the proxy stopped)', meta.ended || '');
  set('fact-reason', meta.reason || '–');
  let complete = 'yes';
  if (!meta.complete) {
    complete = meta.error ? `no: ${meta.error}` : (meta.ended ? 'no' : 'no: the recording has not ended');
  }
  set('fact-complete', complete);
}

// listRecordings links the recordings of the directory served next to the
// page at recordings/ (Caddy's file_server with browse answers JSON), newest
// first, when the page was opened without one.
async function listRecordings() {
  const dir = new URL('recordings/', window.location.href);
  let entries;
  try {
    const response = await fetch(dir, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    entries = response.ok ? await response.json() : [];
  } catch {
    return;
  }
  const names = (Array.isArray(entries) ? entries : []).map((e) => e.name).filter((n) => /^[\w-]+\.fbs$/.test(n)).sort().reverse();
  const facts = document.getElementById('facts');
  for (const name of names) {
    const dt = document.createElement('dt');
    dt.textContent = 'Recording';
    const dd = document.createElement('dd');
    const a = document.createElement('a');
    a.href = `?src=${encodeURIComponent(new URL(name, dir).pathname)}`;
    a.textContent = name.replace(/\.fbs$/, '');
    dd.append(a);
    facts.append(dt, dd);
  }
}

async function load() {
  const params = new URLSearchParams(window.location.search);
  const src = params.get('src');
  if (!src) {
    publish({ state: 'error', error: 'No recording: open this page with ?src=<recording>.fbs in its address.' });
    listRecordings();
    return;
  }
  let steps;
  let duration;
  try {
    const srcURL = resolveSameOrigin(src, 'recording');
    let metaURL = null;
    if (params.get('meta')) {
      metaURL = resolveSameOrigin(params.get('meta'), 'sidecar');
    } else if (srcURL.pathname.endsWith('.fbs')) {
      metaURL = new URL(srcURL.href.replace(/\.fbs(?=$|\?)/, '.json'));
    }
    const [fbsResponse, meta] = await Promise.all([
      fetch(srcURL, { cache: 'no-store' }),
      metaURL ? fetch(metaURL, { cache: 'no-store' }).then((r) => (r.ok ? r.json() : null)).catch(() => null) : null,
    ]);
    if (!fbsResponse.ok) {
      throw new Error(`the recording could not be fetched (HTTP ${fbsResponse.status})`);
    }
    const { blocks, truncated } = parseFBS(await fbsResponse.arrayBuffer());
    if (blocks.length === 0) {
      throw new Error('the recording is empty');
    }
    if (meta) {
      showFacts(meta);
      publish({ meta });
      if (!meta.complete) {
        warn('The recording is not complete: it may end early or miss a part.');
      }
    } else {
      warn('The recording has no readable sidecar: who, when and its pixel formats are unknown.');
    }
    if (truncated) {
      warn('The file ends inside a block: the last part of the recording is missing.');
    }
    duration = blocks[blocks.length - 1].time;
    steps = buildSteps(blocks, meta?.pixel_formats || []);
  } catch (err) {
    publish({ state: 'error', error: `Cannot play: ${err.message}.` });
    return;
  }
  publish({ duration });
  player = new Player(steps, duration);
  // The handshake at time 0 connects noVNC straight away.
  await player.seek(0);
}

playButton.addEventListener('click', () => {
  if (!player) {
    return;
  }
  if (state.state === 'playing') {
    player.pause();
  } else if (state.state !== 'seeking') {
    player.play();
  }
});

speedSelect.addEventListener('change', () => player?.setSpeed(Number(speedSelect.value)));

timeline.addEventListener('input', () => {
  timelineHeld = true;
  clock.textContent = `${formatTime(Number(timeline.value))} / ${formatTime(state.duration)}`;
});

timeline.addEventListener('change', () => {
  timelineHeld = false;
  player?.seek(Number(timeline.value));
});

load();
