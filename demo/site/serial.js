// The serial console page: xterm.js connected through the vnc_proxy
// handler (protocol serial) on this page's own origin to a machine's
// serial port.
//
// The page address carries the console token:
//   /serial.html?token=XYZ               (or #token=XYZ, which no server sees)
//   /serial.html?path=serial%3Ftoken%3DXYZ  (the WebSocket path, root-relative)
//
// Keystrokes go as binary messages: the proxy relays bytes, and binary is
// what every serial proxy takes (websockify closes on text; vnc_proxy
// accepts text too, for Horizon's page). What comes back is raw bytes
// from the serial port, written to the terminal as they are.
//
// The page's state is published as the VNC page's is: window.consoleState,
// the body's data-state attribute, and a "consolestatechange" event;
// window.terminal is the xterm.js Terminal, whose buffer tests read.
import { Terminal } from '@xterm/xterm';
import { closedReason } from './close-reasons.js';

const statusLine = document.getElementById('status');
const disconnectButton = document.getElementById('disconnect');
const reconnectButton = document.getElementById('reconnect');

const state = {
  state: 'loading', // loading, connecting, connected, disconnected
  reason: '',       // why the session ended, in words for a person
  opened: false,    // whether the WebSocket was ever opened
  closeCode: 0,     // the WebSocket close code, once closed
  closeText: '',    // the close frame's text
};
window.consoleState = state;

function publish(changes) {
  Object.assign(state, changes);
  document.body.dataset.state = state.state;
  statusLine.textContent = describe(state);
  disconnectButton.disabled = !(state.state === 'connected' || state.state === 'connecting');
  reconnectButton.hidden = state.state !== 'disconnected' || !websocketURL;
  document.dispatchEvent(new CustomEvent('consolestatechange', { detail: { ...state } }));
}

function describe(s) {
  switch (s.state) {
    case 'connecting':
      return 'Connecting…';
    case 'connected':
      // A serial port sends nothing until the machine writes: a shell
      // that printed its prompt before the page connected shows it again
      // on Enter.
      return 'Connected. Press Enter for a prompt.';
    case 'disconnected':
      return s.reason;
    default:
      return 'Loading…';
  }
}

// websocketPath returns the root-relative WebSocket path from the page
// address, or '' when the address has no token.
function websocketPath() {
  const hash = new URLSearchParams(window.location.hash.slice(1));
  const query = new URLSearchParams(window.location.search);
  const get = (name) => query.get(name) ?? hash.get(name);
  const path = get('path');
  if (path) {
    return path.replace(/^\/+/, '');
  }
  const token = get('token');
  if (token) {
    return 'serial?token=' + encodeURIComponent(token);
  }
  return '';
}

function buildWebsocketURL() {
  const path = websocketPath();
  if (!path) {
    return '';
  }
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return new URL(path, `${scheme}//${window.location.host}/`).href;
}

const websocketURL = buildWebsocketURL();

const terminal = new Terminal({ cols: 100, rows: 30, scrollback: 5000, cursorBlink: true });
terminal.open(document.getElementById('terminal'));
window.terminal = terminal;

const encoder = new TextEncoder();
let socket = null;
let userDisconnected = false;

// Keystrokes (UTF-8) and xterm's binary reports (one byte per character).
terminal.onData((data) => send(encoder.encode(data)));
terminal.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));

function send(bytes) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(bytes);
  }
}

function connect() {
  userDisconnected = false;
  publish({ state: 'connecting', reason: '', opened: false, closeCode: 0, closeText: '' });
  socket = new WebSocket(websocketURL, ['binary']);
  socket.binaryType = 'arraybuffer';
  socket.addEventListener('open', () => {
    publish({ state: 'connected', opened: true });
    terminal.focus();
  });
  socket.addEventListener('message', (e) => {
    terminal.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
  });
  socket.addEventListener('close', (e) => {
    socket = null;
    let reason;
    if (userDisconnected) {
      reason = 'Disconnected.';
    } else if (!state.opened) {
      // The proxy refuses a bad token, a foreign origin, a serial port
      // that already has a console (409) or an unreachable one with an
      // HTTP status before the upgrade; a browser only sees a WebSocket
      // that failed to open.
      reason = 'Could not connect: the console link is invalid or has expired, or the console is in use or unavailable.';
    } else {
      reason = closedReason(e.code, e.reason, e.wasClean);
    }
    publish({ state: 'disconnected', reason, closeCode: e.code, closeText: e.reason });
  });
}

disconnectButton.addEventListener('click', () => {
  userDisconnected = true;
  if (socket) {
    socket.close(1000);
  }
});

reconnectButton.addEventListener('click', () => connect());

if (websocketURL) {
  connect();
} else {
  publish({
    state: 'disconnected',
    reason: 'No console token: open this page with ?token=… in its address.',
  });
}
