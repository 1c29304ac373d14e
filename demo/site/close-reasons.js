// Why a console closed, in words for a person: shared by the VNC page
// (console.js) and the serial page (serial.js), which see the same proxy
// and the same close codes.

// Messages for a WebSocket that closed after the console was connected, by
// close code. The proxy sends 1000 when the console's target (the VNC
// server, the serial port) ended the session.
export const closeReasons = {
  1000: 'the remote machine ended the session',
  1001: 'the console proxy is shutting down or restarting',
  1006: 'the connection was lost',
  1009: 'the browser sent a message that was too large',
  1011: 'the console proxy had an internal error',
};

// Close code 1008 (policy): the proxy ended the console, and its close
// frame's text says why.
export const policyReasons = {
  'token expired': 'the console link has expired',
  'session time limit': 'the console reached its time limit',
  'closed by administrator': 'an administrator closed the console',
};

// closedReason says why a console that was connected has closed, from the
// WebSocket's close code and text; clean is whether it closed with a close
// frame.
export function closedReason(code, text, clean) {
  if (code === 1008) {
    return `Disconnected: ${policyReasons[text] || 'the console proxy ended the session'}.`;
  }
  if (clean || closeReasons[code]) {
    return `Disconnected: ${closeReasons[code] || 'the remote machine ended the session'}.`;
  }
  return 'Disconnected: the connection failed.';
}
