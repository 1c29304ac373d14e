// Programs the tests start: found on PATH or in bin/, run with their output
// kept for failure messages, and stopped by PID.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const e2eDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = path.resolve(e2eDir, '..');

export const inCI = process.env.CI === 'true';

// built returns the path of a program that `make test-e2e` builds into bin/.
// The suite builds nothing itself, so a missing one is always a failure.
export function built(name) {
  const file = path.join(repoRoot, 'bin', name);
  if (!fs.existsSync(file)) {
    throw new Error(`bin/${name} is missing: build it with \`make caddy vncdemo\` (make test-e2e does) before running the browser tests`);
  }
  return file;
}

// which returns the full path of program, searching PATH and the sbin
// folders, or '' when it is not installed.
export function which(program) {
  const dirs = (process.env.PATH || '').split(path.delimiter).concat(['/usr/sbin', '/usr/bin', '/sbin', '/bin']);
  for (const dir of dirs) {
    const file = path.join(dir, program);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return '';
}

// skipUnlessInstalled is the `skip` option for a suite that needs program:
// false when it is installed; when it is not, a skip message outside CI, and
// false in CI so that the suite runs and fails in requireProgram().
export function skipUnlessInstalled(program, debPackage) {
  if (which(program) || inCI) {
    return false;
  }
  return `${program} is not installed (Debian package ${debPackage}; make test-deps installs it)`;
}

// requireProgram returns the path of an installed program or throws an error that
// names the Debian package to install.
export function requireProgram(program, debPackage) {
  const file = which(program);
  if (!file) {
    throw new Error(`${program} is not installed: install the Debian package ${debPackage} (make test-deps does)`);
  }
  return file;
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// waitForPort resolves once host:port accepts a TCP connection.
export async function waitForPort(host, port, timeoutMs, proc) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) {
      return;
    }
    if (proc && proc.exitCode !== null) {
      throw new Error(`${proc.name} exited (${proc.exitCode}) before listening on ${host}:${port}:\n${proc.output()}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms${proc ? `; ${proc.name} said:\n${proc.output()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const running = new Set();

// The last resort if an after-hook never ran: no process outlives the tests.
process.on('exit', () => {
  for (const p of running) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

// Process is a program started by a test.
export class Process {
  constructor(name, file, args, { env, cwd } = {}) {
    this.name = name;
    this.exitCode = null;
    this.lines = [];
    this.child = spawn(file, args, {
      cwd: cwd || repoRoot,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    running.add(this);
    this.listeners = [];
    const collect = (chunk) => {
      for (const line of chunk.toString().split('\n')) {
        if (line === '') {
          continue;
        }
        this.lines.push(line);
        if (this.lines.length > 2000) {
          this.lines.shift();
        }
        for (const l of this.listeners) {
          l(line);
        }
      }
    };
    this.child.stdout.on('data', collect);
    this.child.stderr.on('data', collect);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitCode = code ?? signal;
        running.delete(this);
        resolve(this.exitCode);
      });
      this.child.once('error', (err) => {
        this.lines.push(`could not start ${file}: ${err.message}`);
        this.exitCode = -1;
        running.delete(this);
        resolve(-1);
      });
    });
  }

  // output returns everything the process printed so far.
  output() {
    return this.lines.join('\n');
  }

  // waitForLine resolves with the match of the first output line that
  // matches re.
  waitForLine(re, timeoutMs) {
    return new Promise((resolve, reject) => {
      for (const line of this.lines) {
        const m = line.match(re);
        if (m) {
          resolve(m);
          return;
        }
      }
      const done = (err, m) => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== onLine);
        err ? reject(err) : resolve(m);
      };
      const onLine = (line) => {
        const m = line.match(re);
        if (m) {
          done(null, m);
        }
      };
      const timer = setTimeout(() => done(new Error(`${this.name} printed no line matching ${re} within ${timeoutMs} ms:\n${this.output()}`)), timeoutMs);
      this.listeners.push(onLine);
      this.exited.then((code) => done(new Error(`${this.name} exited (${code}):\n${this.output()}`)));
    });
  }

  // stop sends SIGTERM, then SIGKILL if the process is still there after
  // timeoutMs, and resolves when it has exited.
  async stop(timeoutMs = 5000) {
    if (this.exitCode !== null) {
      return;
    }
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      return;
    }
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise((r) => setTimeout(() => r(true), timeoutMs).unref()),
    ]);
    if (timedOut) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await this.exited;
    }
  }
}

// tempDir makes a fresh directory that the caller removes.
export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(process.env.TMPDIR || '/tmp', `caddy-vnc-e2e-${prefix}-`));
}
