// The VNC servers the browser reaches through the proxy: the project's
// vncdemo, TigerVNC's Xvnc and QEMU's built-in VNC server, each on a free
// loopback port; QEMU's SPICE server; a Linux guest's serial console; and a
// minimal RFB client that asks a server its size.
import fs from 'node:fs';
import net from 'node:net';
import { Process, built, freePort, requireProgram, tempDir, waitForPort } from './processes.js';

// startVncdemo starts bin/vncdemo, 800x600, on a port the kernel picks or
// on a Unix socket; with a password, clients must log in with VNC
// authentication. addr is host:port, or unix_socket:/path (websockify's
// form) for a socket.
export async function startVncdemo({ password, unix } = {}) {
  const env = { VNCDEMO_PASSWORD: password || '' };
  const listen = unix ? ['-listen', '', '-unix', unix] : ['-listen', '127.0.0.1:0'];
  const proc = new Process('vncdemo', built('vncdemo'), [...listen, '-geometry', '800x600'], { env });
  const [, addr] = await proc.waitForLine(/^vncdemo listening on (\S+)/, 10_000);
  return { proc, addr: addr.replace(/^unix:/, 'unix_socket:'), stop: () => proc.stop() };
}

// startXvnc starts TigerVNC's Xvnc, 800x600 at depth 24, without security;
// display is its X display, for X clients such as xclip.
export async function startXvnc() {
  const file = requireProgram('Xvnc', 'tigervnc-standalone-server');
  const port = await freePort();
  const display = freeDisplay();
  const proc = new Process('Xvnc', file, [
    `:${display}`, '-SecurityTypes', 'None', '-localhost', '-rfbport', String(port),
    '-geometry', '800x600', '-depth', '24', '-nolisten', 'tcp',
  ]);
  await waitForPort('127.0.0.1', port, 15_000, proc);
  // A plain SIGTERM lets Xvnc remove its /tmp/.X<n>-lock file.
  return { proc, addr: `127.0.0.1:${port}`, display: `:${display}`, stop: () => proc.stop(10_000) };
}

// An X display number with no lock file, above the range the Go tests use.
function freeDisplay() {
  for (let i = 0; i < 200; i++) {
    const n = 900 + Math.floor(Math.random() * 5000);
    if (!fs.existsSync(`/tmp/.X${n}-lock`) && !fs.existsSync(`/tmp/.X11-unix/X${n}`)) {
      return n;
    }
  }
  throw new Error('no free X display number');
}

// startQemu starts a diskless x86 machine whose VNC server shows SeaBIOS.
// With a password its VNC server asks for VNC authentication; with tlsDir
// (a folder with ca-cert.pem, server-cert.pem and server-key.pem) it
// requires VeNCrypt X.509 and a client certificate signed by that CA.
export async function startQemu({ password, tlsDir } = {}) {
  const file = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  const port = await freePort(); // ephemeral ports are well above 5900
  const esc = (s) => s.replaceAll(',', ',,');
  const args = ['-display', 'none', '-m', '64', '-nodefaults', '-vga', 'std'];
  let vnc = `127.0.0.1:${port - 5900}`;
  if (password) {
    args.push('-object', `secret,id=vncpw,data=${esc(password)}`);
    vnc += ',password-secret=vncpw';
  }
  if (tlsDir) {
    args.push('-object', `tls-creds-x509,id=vnctls,dir=${esc(tlsDir)},endpoint=server,verify-peer=on`);
    vnc += ',tls-creds=vnctls';
  }
  const proc = new Process('qemu', file, [...args, '-vnc', vnc]);
  await waitForPort('127.0.0.1', port, 30_000, proc);
  return { proc, addr: `127.0.0.1:${port}`, stop: () => proc.stop() };
}

// startQemuSpice starts a diskless x86 machine with a QXL card whose SPICE
// server, without a password (disable-ticketing), shows SeaBIOS.
export async function startQemuSpice() {
  const file = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  const port = await freePort();
  const proc = new Process('qemu', file, [
    '-display', 'none', '-m', '64', '-nodefaults', '-vga', 'qxl',
    '-spice', `port=${port},addr=127.0.0.1,disable-ticketing=on`,
  ]);
  await waitForPort('127.0.0.1', port, 30_000, proc);
  return { proc, addr: `127.0.0.1:${port}`, stop: () => proc.stop() };
}

// startSerialGuest boots bin/serialguest: a Linux guest (Debian's kernel,
// an initramfs of busybox-static) whose shell is on its first serial port,
// served by QEMU on a TCP chardev at addr. The guest takes 10 to 40 s to
// boot after the port opens; its prompt is "guest# ".
export async function startSerialGuest() {
  requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  const dir = tempDir('serialguest');
  const proc = new Process('serialguest', built('serialguest'), ['-listen', '127.0.0.1:0', '-dir', dir]);
  const stop = async () => {
    await proc.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [, addr] = await proc.waitForLine(/^serialguest listening on (\S+)/, 10_000);
    const i = addr.lastIndexOf(':');
    await waitForPort(addr.slice(0, i), Number(addr.slice(i + 1)), 30_000, proc);
    return { proc, addr, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// serverInit connects to an RFB server without security (type None) as a
// shared client and returns the ServerInit's framebuffer size and name.
export function serverInit(addr, timeoutMs = 10_000) {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i);
  const port = Number(addr.slice(i + 1));
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    let step = 'version';
    let minor = 8;
    const fail = (msg) => {
      socket.destroy();
      reject(new Error(`RFB handshake with ${addr} (${step}): ${msg}`));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.on('error', (err) => { clearTimeout(timer); fail(err.message); });
    socket.on('close', () => { clearTimeout(timer); fail('connection closed'); });
    const take = (n) => {
      if (buf.length < n) {
        return null;
      }
      const b = buf.subarray(0, n);
      buf = buf.subarray(n);
      return b;
    };
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (step === 'version') {
          const v = take(12);
          if (!v) return;
          const m = v.toString('latin1').match(/^RFB (\d{3})\.(\d{3})\n$/);
          if (!m) return fail(`not an RFB greeting: ${JSON.stringify(v.toString('latin1'))}`);
          minor = Number(m[1]) > 3 ? 8 : Math.min(Number(m[2]), 8);
          minor = minor >= 8 ? 8 : minor >= 7 ? 7 : 3;
          socket.write(`RFB 003.00${minor}\n`);
          step = minor === 3 ? 'security33' : 'security';
        } else if (step === 'security33') {
          const t = take(4);
          if (!t) return;
          if (t.readUInt32BE(0) !== 1) return fail(`security type ${t.readUInt32BE(0)} is not None`);
          socket.write(Buffer.from([1])); // ClientInit: shared
          step = 'serverinit';
        } else if (step === 'security') {
          if (buf.length < 1 || buf.length < 1 + buf[0]) return;
          const count = take(1)[0];
          const types = [...take(count)];
          if (!types.includes(1)) return fail(`no security type None among ${types}`);
          socket.write(Buffer.from([1]));
          step = minor === 8 ? 'result' : 'serverinit';
          if (step === 'serverinit') socket.write(Buffer.from([1])); // ClientInit: shared
        } else if (step === 'result') {
          const r = take(4);
          if (!r) return;
          if (r.readUInt32BE(0) !== 0) return fail('security result is a failure');
          socket.write(Buffer.from([1])); // ClientInit: shared
          step = 'serverinit';
        } else if (step === 'serverinit') {
          if (buf.length < 24 || buf.length < 24 + buf.readUInt32BE(20)) return;
          const width = buf.readUInt16BE(0);
          const height = buf.readUInt16BE(2);
          const name = buf.subarray(24, 24 + buf.readUInt32BE(20)).toString('utf8');
          clearTimeout(timer);
          socket.removeAllListeners('close');
          socket.destroy();
          resolve({ width, height, name });
          return;
        }
      }
    });
  });
}
