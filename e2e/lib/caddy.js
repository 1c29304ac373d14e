// Caddy with the vnc_proxy plugin (bin/caddy), serving e2e/Caddyfile on free
// ports, with its data, certificates and logs in a temporary folder.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Process, built, e2eDir, freePort, repoRoot, tempDir } from './processes.js';

// vncPassword is the password the /rfb-aware route logs in to VNC servers
// with (vnc_auth); the browser never gets it.
export const vncPassword = 'e2e-vnc-pw-5b2';

// newToken returns a random console token.
export function newToken() {
  return crypto.randomBytes(24).toString('base64url');
}

// startCaddy writes the token file (token -> "host:port" or "unix:/path")
// and starts Caddy, with e2e/Caddyfile or another Caddyfile of e2e/ whose
// readyPath answers 200 once it serves, and env added to its environment
// (e.g. GODEBUG). The returned object has the site's origin, the other
// origin, and writeTokens to replace the token file.
export async function startCaddy(tokens, { caddyfile = 'Caddyfile', readyPath = '/index.html', env = {} } = {}) {
  const caddyBin = built('caddy');
  const novncDir = path.join(repoRoot, 'demo', 'node_modules', '@novnc', 'novnc');
  if (!fs.existsSync(path.join(novncDir, 'core', 'rfb.js'))) {
    throw new Error('noVNC is not installed in demo/node_modules: run `npm ci` in demo/ (make test-deps does)');
  }
  const dir = tempDir('caddy');
  const tokenFile = path.join(dir, 'tokens');
  const writeTokens = (map) => {
    const lines = Object.entries(map).map(([token, target]) => `${token}: ${target}`);
    fs.writeFileSync(tokenFile, `# token: target\n${lines.join('\n')}\n`);
  };
  writeTokens(tokens);

  const port = await freePort();
  let otherPort = await freePort();
  while (otherPort === port) {
    otherPort = await freePort();
  }
  const adminPort = await freePort();
  const pkiDir = makePKI(path.join(dir, 'pki'));
  fs.mkdirSync(path.join(dir, 'xdg-data'));
  fs.mkdirSync(path.join(dir, 'xdg-config'));
  const proc = new Process('caddy', caddyBin, ['run', '--adapter', 'caddyfile', '--config', path.join(e2eDir, caddyfile)], {
    env: {
      E2E_PORT: String(port),
      E2E_OTHER_PORT: String(otherPort),
      E2E_ADMIN_PORT: String(adminPort),
      E2E_DATA_DIR: dir,
      E2E_TOKEN_FILE: tokenFile,
      E2E_SITE_DIR: path.join(repoRoot, 'demo', 'site'),
      E2E_NOVNC_DIR: novncDir,
      E2E_XTERM_DIR: path.join(repoRoot, 'demo', 'node_modules', '@xterm', 'xterm'),
      E2E_PKI_DIR: pkiDir,
      E2E_VNC_PASSWORD: vncPassword,
      XDG_DATA_HOME: path.join(dir, 'xdg-data'),
      XDG_CONFIG_HOME: path.join(dir, 'xdg-config'),
      HOME: dir,
      ...env,
    },
  });
  const caddy = {
    proc,
    dir,
    pkiDir,
    origin: `https://localhost:${port}`,
    otherOrigin: `http://127.0.0.1:${otherPort}`,
    // admin sends a request to Caddy's admin endpoint (e2e/Caddyfile; other
    // Caddyfiles may keep it off) as curl does: without the Sec-Fetch-*
    // headers of fetch(), which the endpoint refuses as cross-site.
    admin(method, urlPath, body) {
      return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: adminPort, method, path: urlPath, timeout: 10_000 }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => { text += c; });
          res.on('end', () => resolve({ status: res.statusCode, text }));
        });
        req.on('timeout', () => req.destroy(new Error('admin request timed out')));
        req.on('error', reject);
        req.end(body);
      });
    },
    writeTokens,
    // logs returns everything Caddy wrote: its own log, the access log and
    // its standard output and error.
    logs() {
      const read = (f) => { try { return fs.readFileSync(path.join(dir, f), 'utf8'); } catch { return ''; } };
      return [proc.output(), read('caddy.log'), read('access.log')].join('\n');
    },
    // accessLog returns the access log's entries, parsed.
    accessLog() {
      let text = '';
      try { text = fs.readFileSync(path.join(dir, 'access.log'), 'utf8'); } catch { return []; }
      return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
    },
    async stop() {
      await proc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitForHTTPS(caddy, readyPath, 30_000);
  } catch (err) {
    await proc.stop();
    err.message += `\nCaddy's output:\n${caddy.logs().slice(-4000)}`;
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return caddy;
}

// makePKI makes, with openssl, a CA, a server certificate for localhost and
// 127.0.0.1 and a client certificate, in the file names QEMU's
// tls-creds-x509 reads (ca-cert.pem, server-cert.pem, server-key.pem), and
// returns the folder.
function makePKI(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const f = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('ca-key.pem'), '-out', f('ca-cert.pem'), '-days', '2', '-subj', '/CN=e2e VNC CA');
  for (const [name, ext] of [
    ['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'],
    ['client', 'extendedKeyUsage=clientAuth\n'],
  ]) {
    fs.writeFileSync(f(`${name}.ext`), ext);
    openssl('req', ...ec, '-keyout', f(`${name}-key.pem`), '-out', f(`${name}.csr`), '-subj', `/CN=${name === 'server' ? 'localhost' : 'vnc-proxy'}`);
    openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca-cert.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial',
      '-out', f(`${name}-cert.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  }
  return dir;
}

// waitForHTTPS resolves when the site answers 200 over TLS, which also means
// its certificate from the internal CA has been issued.
async function waitForHTTPS(caddy, readyPath, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (caddy.proc.exitCode !== null) {
      throw new Error(`caddy exited (${caddy.proc.exitCode}) while starting`);
    }
    last = await new Promise((resolve) => {
      const req = https.get(`${caddy.origin}${readyPath}`, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 ? '' : `status ${res.statusCode}`);
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => resolve(err.message));
    });
    if (last === '') {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Caddy did not serve ${caddy.origin} within ${timeoutMs} ms (last: ${last})`);
}
