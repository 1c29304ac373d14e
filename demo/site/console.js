// The console page: noVNC's RFB client connected through the vnc_proxy
// handler on this page's own origin.
//
// The page address carries the console token, in noVNC's forms:
//   /?token=XYZ                          (or #token=XYZ, which no server sees)
//   /?path=websockify%3Ftoken%3DXYZ      (the WebSocket path, root-relative)
//
// The page's state is published for people (the status line) and for programs:
// window.consoleState, the body's data-state attribute, and a
// "consolestatechange" event on document whose detail is a copy of the state.
import RFB from '@novnc/novnc';
import { closedReason } from './close-reasons.js';

const statusLine = document.getElementById('status');
const screen = document.getElementById('screen');
const ctrlAltDelButton = document.getElementById('ctrl-alt-del');
const disconnectButton = document.getElementById('disconnect');
const reconnectButton = document.getElementById('reconnect');
const credentialsForm = document.getElementById('credentials');
const passwordInput = document.getElementById('password');
const usernameField = document.getElementById('username-field');
const usernameInput = document.getElementById('username');

const state = {
  state: 'loading', // loading, connecting, password, connected, disconnected
  reason: '',       // why the session ended, in words for a person
  name: '',         // the remote desktop's name
  width: 0,         // framebuffer size, equal to the canvas size (no scaling)
  height: 0,
  opened: false,    // whether the WebSocket was ever opened
  closeCode: 0,     // the WebSocket close code, once closed
  closeText: '',    // the close frame's text
  clipboard: '',    // the remote machine's clipboard text, as noVNC last got it
};
window.consoleState = state;

function publish(changes) {
  Object.assign(state, changes);
  document.body.dataset.state = state.state;
  statusLine.textContent = describe(state);
  const connected = state.state === 'connected';
  ctrlAltDelButton.disabled = !connected;
  disconnectButton.disabled = !(connected || state.state === 'connecting' || state.state === 'password');
  reconnectButton.hidden = state.state !== 'disconnected' || !websocketURL;
  credentialsForm.hidden = state.state !== 'password';
  document.dispatchEvent(new CustomEvent('consolestatechange', { detail: { ...state } }));
}

function describe(s) {
  switch (s.state) {
    case 'connecting':
      return 'Connecting…';
    case 'password':
      return 'Waiting for the console password…';
    case 'connected':
      return `Connected to ${s.name || 'the remote machine'} (${s.width}×${s.height})`;
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
    return 'websockify?token=' + encodeURIComponent(token);
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

let rfb = null;
let sizeObserver = null;

function connect() {
  publish({ state: 'connecting', reason: '', name: '', width: 0, height: 0, opened: false, closeCode: 0, closeText: '', clipboard: '' });

  // The page opens the WebSocket itself, so that it knows whether the socket
  // ever opened and how it closed; noVNC reports neither.
  const socket = new WebSocket(websocketURL);
  let securityFailure = null;
  let userDisconnected = false;
  socket.addEventListener('open', () => { state.opened = true; });
  socket.addEventListener('close', (e) => {
    state.closeCode = e.code;
    state.closeText = e.reason;
  });

  rfb = new RFB(screen, socket, { shared: true });
  rfb.scaleViewport = false; // one canvas pixel per framebuffer pixel
  rfb.clipViewport = false;
  rfb.resizeSession = false;

  rfb.addEventListener('connect', () => {
    const canvas = screen.querySelector('canvas');
    const readSize = () => ({ width: canvas.width, height: canvas.height });
    sizeObserver = new MutationObserver(() => {
      if (state.state === 'connected') {
        publish(readSize());
      }
    });
    sizeObserver.observe(canvas, { attributes: true, attributeFilter: ['width', 'height'] });
    publish({ state: 'connected', ...readSize() });
    rfb.focus({ preventScroll: true });
  });

  rfb.addEventListener('clipboard', (e) => {
    publish({ clipboard: e.detail.text });
  });

  rfb.addEventListener('desktopname', (e) => {
    state.name = e.detail.name;
    if (state.state === 'connected') {
      publish({});
    }
  });

  rfb.addEventListener('credentialsrequired', (e) => {
    const types = e.detail.types || ['password'];
    usernameField.hidden = !types.includes('username');
    publish({ state: 'password' });
    passwordInput.value = '';
    (usernameField.hidden ? passwordInput : usernameInput).focus();
  });

  rfb.addEventListener('securityfailure', (e) => {
    securityFailure = e.detail.reason
      ? `the VNC server says “${e.detail.reason}”`
      : 'the VNC server did not accept the credentials';
  });

  rfb.addEventListener('disconnect', (e) => {
    if (sizeObserver) {
      sizeObserver.disconnect();
      sizeObserver = null;
    }
    const wasConnected = state.state === 'connected';
    let reason;
    if (userDisconnected) {
      reason = 'Disconnected.';
    } else if (securityFailure !== null) {
      reason = `Authentication failed: ${securityFailure}.`;
    } else if (!state.opened) {
      // The proxy refuses a bad token, a foreign origin or an unreachable
      // VNC server with an HTTP status before the upgrade; a browser only
      // sees a WebSocket that failed to open.
      reason = 'Could not connect: the console link is invalid or has expired, or the console is unavailable.';
    } else if (!wasConnected) {
      reason = 'Could not connect: the remote machine did not complete the VNC handshake.';
    } else {
      reason = closedReason(state.closeCode, state.closeText, e.detail.clean);
    }
    rfb = null;
    publish({ state: 'disconnected', reason });
  });

  disconnectButton.onclick = () => {
    userDisconnected = true;
    if (rfb) {
      rfb.disconnect();
    }
  };
}

// consolePaste sends text to the remote machine's clipboard, as a page's
// paste field would.
window.consolePaste = (text) => rfb?.clipboardPasteFrom(text);

ctrlAltDelButton.addEventListener('click', () => {
  if (rfb) {
    rfb.sendCtrlAltDel();
    rfb.focus({ preventScroll: true });
  }
});

reconnectButton.addEventListener('click', () => connect());

credentialsForm.addEventListener('submit', (e) => {
  e.preventDefault();
  if (rfb) {
    const credentials = { password: passwordInput.value };
    if (!usernameField.hidden) {
      credentials.username = usernameInput.value;
    }
    rfb.sendCredentials(credentials);
    passwordInput.value = '';
    publish({ state: 'connecting' });
  }
});

if (websocketURL) {
  connect();
} else {
  publish({
    state: 'disconnected',
    reason: 'No console token: open this page with ?token=… in its address.',
  });
}
