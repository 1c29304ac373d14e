// Caddy with the vnc_proxy plugin (bin/caddy), serving e2e/Caddyfile on free
// ports, with its data, certificates and logs in a temporary folder.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { Process, built, e2eDir, freePort, repoRoot, tempDir } from './processes.js';

// newToken returns a random console token.
export function newToken() {
  return crypto.randomBytes(24).toString('base64url');
}

// startCaddy writes the token file (token -> "host:port" or "unix:/path")
// and starts Caddy. The returned object has the site's origin, the other
// origin, and writeTokens to replace the token file.
export async function startCaddy(tokens) {
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
  fs.mkdirSync(path.join(dir, 'xdg-data'));
  fs.mkdirSync(path.join(dir, 'xdg-config'));
  const proc = new Process('caddy', caddyBin, ['run', '--adapter', 'caddyfile', '--config', path.join(e2eDir, 'Caddyfile')], {
    env: {
      E2E_PORT: String(port),
      E2E_OTHER_PORT: String(otherPort),
      E2E_DATA_DIR: dir,
      E2E_TOKEN_FILE: tokenFile,
      E2E_SITE_DIR: path.join(repoRoot, 'demo', 'site'),
      E2E_NOVNC_DIR: novncDir,
      XDG_DATA_HOME: path.join(dir, 'xdg-data'),
      XDG_CONFIG_HOME: path.join(dir, 'xdg-config'),
      HOME: dir,
    },
  });
  const caddy = {
    proc,
    dir,
    origin: `https://localhost:${port}`,
    otherOrigin: `http://127.0.0.1:${otherPort}`,
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
    await waitForHTTPS(caddy, 30_000);
  } catch (err) {
    await proc.stop();
    err.message += `\nCaddy's output:\n${caddy.logs().slice(-4000)}`;
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return caddy;
}

// waitForHTTPS resolves when the site answers 200 over TLS, which also means
// its certificate from the internal CA has been issued.
async function waitForHTTPS(caddy, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (caddy.proc.exitCode !== null) {
      throw new Error(`caddy exited (${caddy.proc.exitCode}) while starting`);
    }
    last = await new Promise((resolve) => {
      const req = https.get(`${caddy.origin}/index.html`, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
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
