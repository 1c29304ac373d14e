// The recording player (demo/site/player.html) in Chromium: a real vncdemo
// console is recorded during the test, the way the proxy records one (its
// own security-None handshake, then every byte the server sends), with a
// click and key presses as the console test makes them; Caddy serves the
// recording next to the player, which replays it with noVNC's decoder.
// Its last frame shows the dot and the yellow key indicator, and a seek to
// the middle shows vncdemo's clock as it was then.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasHash, launchBrowser, openPage, screenshot, waitForPixels, withSteps,
} from './lib/browser.js';
import { startCaddy } from './lib/caddy.js';
import { Process, repoRoot, requireProgram, skipUnlessInstalled, tempDir } from './lib/processes.js';
import { startVncdemo, startXvnc } from './lib/targets.js';

const W = 800;
const H = 600;
const click = { x: 200, y: 450 };
const indicator = { x: 64, y: 16 };
const red = [255, 0, 0];
const black = [0, 0, 0];
const yellow = [255, 255, 0];
const magenta = [255, 0, 255];
const background = [32, 32, 32];
// noXvnc is the skip option of the tests of Tight and ZRLE recordings,
// made of TigerVNC's Xvnc with xsetroot changing its picture.
const noXvnc = noBrowser || skipUnlessInstalled('Xvnc', 'tigervnc-standalone-server') ||
  skipUnlessInstalled('xsetroot', 'x11-xserver-utils');

// record runs internal/recording/cmd/recordvnc against the VNC server at
// addr and returns what it printed: the recording's id and vncdemo's clock
// as it changed.
async function record(addr, dir, bin, args = [
  '-duration', '6s', '-click', `${click.x},${click.y}`, '-click-at', '1.5s', '-keys', 'abc', '-keys-at', '2.5s',
], whileRecording = async () => {}) {
  const proc = new Process('recordvnc', bin, ['-target', addr, '-dir', dir, ...args]);
  await whileRecording();
  const code = await proc.exited;
  if (code !== 0) {
    throw new Error(`recordvnc exited ${code}:\n${proc.output()}`);
  }
  return JSON.parse(proc.lines.find((l) => l.startsWith('{')));
}

// waitForPlayer waits until the player publishes a state that satisfies
// want (see demo/site/player.js), and fails at once on "error".
async function waitForPlayer(page, want, timeoutMs = 30_000) {
  return page.evaluate(({ want, timeoutMs }) => new Promise((resolve, reject) => {
    // eslint-disable-next-line no-new-func
    const ok = new Function('s', `return ${want};`);
    const check = (s) => {
      if (!s) {
        return; // the page's module has not run yet
      }
      if (s.state === 'error') {
        finish(new Error(`player error: ${s.error}`));
      } else if (ok(s)) {
        finish(null, { ...s, meta: null });
      }
    };
    const onChange = (e) => check(e.detail);
    const timer = setTimeout(() => finish(new Error(`player state ${JSON.stringify({ ...window.playerState, meta: null })} after ${timeoutMs} ms, wanted ${want}`)), timeoutMs);
    function finish(err, value) {
      clearTimeout(timer);
      document.removeEventListener('playerstatechange', onChange);
      err ? reject(err) : resolve(value);
    }
    document.addEventListener('playerstatechange', onChange);
    check(window.playerState);
  }), { want, timeoutMs });
}

// clockBits reads the canvas on the grid recordvnc reported: 1 where the
// centre of a cell is vncdemo's clock teal.
async function clockBits(page, grid) {
  return page.evaluate((g) => {
    const ctx = document.querySelector('#screen canvas').getContext('2d');
    let bits = '';
    for (let row = 0; row < g.rows; row++) {
      for (let col = 0; col < g.cols; col++) {
        const d = ctx.getImageData(g.x + col * g.cell + g.cell / 2, g.y + row * g.cell + g.cell / 2, 1, 1).data;
        bits += d[0] === 0 && d[1] === 200 && d[2] === 200 ? '1' : '0';
      }
    }
    return bits;
  }, grid);
}

// captureRecording turns a real VNC server's stream, captured by
// internal/rfbframe's tests (a line "rfbframe stream WxH <pixel format>",
// then the bytes after ServerInit), into a recording as the recorder
// writes one: the security-None handshake with a ServerInit, then the
// stream in blocks of varied sizes 20 ms apart. It returns the id.
function captureRecording(dir, capture) {
  const raw = fs.readFileSync(path.join(repoRoot, 'internal', 'rfbframe', 'testdata', `${capture}.rfb`));
  const nl = raw.indexOf(10);
  const [, , size, pfHex] = raw.subarray(0, nl).toString('latin1').split(' ');
  const [width, height] = size.split('x').map(Number);
  const name = Buffer.from(capture);
  const serverInit = Buffer.alloc(24);
  serverInit.writeUInt16BE(width, 0);
  serverInit.writeUInt16BE(height, 2);
  Buffer.from(pfHex, 'hex').copy(serverInit, 4);
  serverInit.writeUInt32BE(name.length, 20);
  const handshake = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1, 0, 0, 0, 0]), serverInit, name]);
  const stream = raw.subarray(nl + 1);
  const blocks = [handshake];
  for (let off = 0, i = 0; off < stream.length; i++) {
    const n = Math.min(stream.length - off, 100 + ((i * 1237) % 3000));
    blocks.push(stream.subarray(off, off + n));
    off += n;
  }
  const parts = [Buffer.from('FBS 001.000\n')];
  blocks.forEach((data, i) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const tail = Buffer.alloc(((4 - (data.length % 4)) % 4) + 4);
    tail.writeUInt32BE(i * 20, tail.length - 4);
    parts.push(head, data, tail);
  });
  const id = `capture-${capture}`;
  fs.writeFileSync(path.join(dir, `${id}.fbs`), Buffer.concat(parts), { mode: 0o600 });
  const pf = Buffer.from(pfHex, 'hex');
  fs.writeFileSync(path.join(dir, `${id}.json`), JSON.stringify({
    id, session: 'capture', token_hash: 'ffffffff', target: capture, started: new Date().toISOString(),
    ended: new Date().toISOString(), reason: 'captured', bytes: stream.length + handshake.length,
    duration_ms: (blocks.length - 1) * 20, complete: true, input_included: false,
    pixel_formats: [{
      ms: 0, offset: handshake.length, bits_per_pixel: pf[0], depth: pf[1], big_endian: pf[2] !== 0, true_colour: pf[3] !== 0,
      red_max: pf.readUInt16BE(4), green_max: pf.readUInt16BE(6), blue_max: pf.readUInt16BE(8),
      red_shift: pf[10], green_shift: pf[11], blue_shift: pf[12],
    }],
  }), { mode: 0o600 });
  return id;
}

// seek moves the timeline as a person does (the value, then "change") and
// waits for the player to be paused there.
async function seek(page, ms) {
  await page.evaluate((ms) => {
    const t = document.getElementById('timeline');
    t.value = String(ms);
    t.dispatchEvent(new Event('input'));
    t.dispatchEvent(new Event('change'));
  }, ms);
  return waitForPlayer(page, `s.state === 'paused' && s.position === ${ms}`);
}

describe('recording player', { timeout: 240_000, skip: noBrowser }, () => {
  const recordings = tempDir('recordings');
  const binDir = tempDir('recordvnc');
  let demo;
  let caddy;
  let browser;
  let rec;
  let bgrx;
  // Recordings of compressed streams: {name, id, whether the picture
  // changes after the middle, a colour the last picture has}.
  const streams = [];

  before(async () => {
    // The suite builds only this helper, which no release ships.
    const bin = path.join(binDir, 'recordvnc');
    execFileSync('go', ['build', '-o', bin, './internal/recording/cmd/recordvnc'], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    demo = await startVncdemo();
    rec = await record(demo.addr, recordings, bin);
    bgrx = await record(demo.addr, recordings, bin, ['-duration', '3s', '-pixel-format', 'bgrx']);
    streams.push({ name: 'qemu-tightpng capture', id: captureRecording(recordings, 'qemu-tightpng') });
    if (!noXvnc) {
      // Xvnc's root window, redrawn by xsetroot in changing patterns
      // while recordvnc records it in Tight and then in ZRLE.
      const xvnc = await startXvnc();
      try {
        const display = xvnc.proc.child.spawnargs[1];
        const xsetroot = requireProgram('xsetroot', 'x11-xserver-utils');
        const patterns = async () => {
          for (let i = 1; i <= 6; i++) {
            await new Promise((r) => setTimeout(r, 350));
            execFileSync(xsetroot, ['-display', display, '-mod', String(2 + i), String(3 + i * 2), '-fg', `#${(i * 40).toString(16).padStart(2, '0')}c080`, '-bg', '#203040']);
          }
        };
        // In the X server's own BGRX pixel format: ZRLE's pixels need
        // red and blue swapped for noVNC, Tight's never do.
        for (const encoding of ['tight', 'zrle']) {
          const r = await record(xvnc.addr, recordings, bin, ['-duration', '3s', '-encoding', encoding, '-pixel-format', 'bgrx'], patterns);
          assert.ok(r.updates >= 4, `${encoding}: ${r.updates} updates`);
          streams.push({ name: `Xvnc ${encoding}`, id: r.id, changes: true, colour: [0x20, 0x30, 0x40] });
        }
      } finally {
        await xvnc.stop();
      }
    }
    caddy = await startCaddy({}, { caddyfile: 'Caddyfile.player', readyPath: '/player.html', env: { E2E_RECORDINGS_DIR: recordings } });
    browser = await launchBrowser();
  }, { timeout: 180_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await demo?.stop();
    fs.rmSync(recordings, { recursive: true, force: true });
    fs.rmSync(binDir, { recursive: true, force: true });
  }, { timeout: 60_000 });

  it('the recording and its sidecar are on disk, 0600, without a token', () => {
    const names = fs.readdirSync(recordings).filter((n) => n.startsWith(rec.id)).sort();
    assert.deepEqual(names, [`${rec.id}.fbs`, `${rec.id}.json`]);
    for (const n of names) {
      assert.equal(fs.statSync(path.join(recordings, n)).mode & 0o777, 0o600, n);
    }
    const meta = JSON.parse(fs.readFileSync(path.join(recordings, `${rec.id}.json`), 'utf8'));
    assert.equal(meta.complete, true);
    assert.equal(meta.pixel_formats.length, 1);
    assert.ok(rec.clock.length >= 5, `the clock changed ${rec.clock.length} times in 6 s`);
  });

  it('plays to the end and shows the click and the key press; a seek to the middle shows the clock then', { timeout: 120_000 }, async (t) => {
    const tab = await openPage(browser);
    const { page } = tab;
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the player', () => page.goto(
          `${caddy.origin}/player.html?src=/recordings/${rec.id}.fbs&meta=/recordings/${rec.id}.json`, { waitUntil: 'commit' }));
        const ready = await step('the player is ready at 0', () => waitForPlayer(page, `s.state === 'paused' && s.duration > 5000`));
        await step('the sidecar facts are shown', async () => {
          const text = await page.locator('#facts').innerText();
          assert.match(text, new RegExp(`Target\\s+tcp:${demo.addr.replaceAll('.', '\\.')}`));
          assert.match(text, /Token hash\s+00000000/);
          assert.match(text, /Reason\s+client closed/);
          assert.match(text, /Complete\s+yes/);
          assert.ok(ready.warnings.length === 0, `warnings: ${ready.warnings}`);
        });
        await step('play at 8x to the end', async () => {
          await page.locator('#speed').selectOption('8');
          const wall = Date.now();
          await page.locator('#play').click();
          const end = await waitForPlayer(page, `s.state === 'ended'`, 20_000);
          assert.equal(end.position, end.duration);
          assert.equal(end.speed, 8);
          // Faster than real time even on a loaded machine.
          assert.ok(Date.now() - wall < end.duration, `${end.duration} ms at 8x took ${Date.now() - wall} ms`);
        });
        await step('the last frame shows the picture, the dot and the yellow square', () => waitForPixels(page, [
          { x: 5, y: 5, rgb: red },
          { x: W - 6, y: H - 6, rgb: [255, 255, 255] },
          { ...indicator, rgb: yellow },
          { ...click, rgb: magenta },
          { x: click.x - 4, y: click.y - 4, rgb: magenta },
          { x: click.x + 6, y: click.y, rgb: background },
        ], 5000));
        await screenshot(page, 'player last frame');
        const last = rec.clock[rec.clock.length - 1].bits;
        await step('the canvas clock at the end is the last clock recorded', async () => {
          assert.equal(await clockBits(page, rec.clock_grid), last);
        });

        const middle = Math.round(ready.duration / 2);
        await step(`seek back to the middle (${middle} ms)`, () => seek(page, middle));
        await step('the clock shows the time recorded then', async () => {
          const bits = await clockBits(page, rec.clock_grid);
          // Loosely: a clock recordvnc saw within a second of that point
          // (block and update boundaries differ by a few ms).
          const near = rec.clock.filter((c) => c.ms >= middle - 1200 && c.ms <= middle + 300).map((c) => c.bits);
          assert.ok(near.length > 0, 'recordvnc saw no clock near the middle');
          assert.ok(near.includes(bits), `the clock at ${middle} ms is none of the ${near.length} recorded near it`);
          assert.notEqual(bits, last, 'the clock at the middle is the one at the end');
        });
        await step('at the middle the dot and the yellow square are already there', () =>
          waitForPixels(page, [{ ...indicator, rgb: yellow }, { ...click, rgb: magenta }], 2000));
        await step('seek back before the click: no dot, black square', async () => {
          await seek(page, 700);
          await waitForPixels(page, [{ ...indicator, rgb: black }, { ...click, rgb: background }, { x: 5, y: 5, rgb: red }], 2000);
        });
        await step('the page shows one canvas only', async () => {
          assert.equal(await page.locator('#screen canvas').count(), 1);
        });
        await step('play on from there at 1x and pause', async () => {
          await page.locator('#speed').selectOption('1');
          await page.locator('#play').click();
          await waitForPlayer(page, `s.state === 'playing'`);
          await page.locator('#play').click();
          const paused = await waitForPlayer(page, `s.state === 'paused'`);
          assert.ok(paused.position >= 700 && paused.position < paused.duration);
        });
      });
    } finally {
      await page.close().catch(() => {});
    }
  });

  it('a recording in the BGRX pixel format of native viewers plays in the right colours', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    const { page } = tab;
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the player', () => page.goto(`${caddy.origin}/player.html?src=/recordings/${bgrx.id}.fbs`, { waitUntil: 'commit' }));
        const ready = await step('the player is ready, without warnings', () => waitForPlayer(page, `s.state === 'paused' && s.duration > 0`));
        assert.deepEqual(ready.warnings, []);
        await step('play at 8x to the end', async () => {
          await page.locator('#speed').selectOption('8');
          await page.locator('#play').click();
          await waitForPlayer(page, `s.state === 'ended'`, 30_000);
        });
        await step('red is red, blue is blue, the key square yellow and the dot magenta', () => waitForPixels(page, [
          { x: 5, y: 5, rgb: red },
          { x: 5, y: H - 6, rgb: [0, 0, 255] },
          { ...indicator, rgb: yellow },
          { ...click, rgb: magenta },
          { x: 400, y: 100, rgb: background },
        ], 5000));
      });
    } finally {
      await page.close().catch(() => {});
    }
  });

  // The streams are known in before(); a test per kind is declared here.
  for (const kind of ['qemu-tightpng capture', 'Xvnc tight', 'Xvnc zrle']) {
    const skip = kind.startsWith('Xvnc') ? noXvnc : false;
    it(`${kind}: plays through, and a seek back restarts the decoder`, { timeout: 60_000, skip }, async (t) => {
      const stream = streams.find((s) => s.name === kind);
      assert.ok(stream, `no ${kind} recording was made`);
      const tab = await openPage(browser);
      const { page } = tab;
      try {
        await withSteps(t, tab, async (step) => {
          await step('open the player', () => page.goto(`${caddy.origin}/player.html?src=/recordings/${stream.id}.fbs`, { waitUntil: 'commit' }));
          const ready = await step('the player is ready', () => waitForPlayer(page, `s.state === 'paused' && s.duration > 0`));
          await step('no warnings: the pixel format is one the player decodes', () => {
            assert.deepEqual(ready.warnings, []);
          });
          await step('play at 8x to the end', async () => {
            await page.locator('#speed').selectOption('8');
            await page.locator('#play').click();
            await waitForPlayer(page, `s.state === 'ended'`, 30_000);
          });
          const straight = await step('the picture is drawn', async () => {
            await page.waitForFunction(() => {
              const c = document.querySelector('#screen canvas');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              const seen = new Set();
              for (let i = 0; i < d.length && seen.size < 2; i += 4 * 97) {
                seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
              }
              return seen.size >= 2;
            });
            await page.waitForTimeout(300); // images decode asynchronously
            return canvasHash(page);
          });
          if (stream.colour) {
            await step(`the last picture has xsetroot's background rgb(${stream.colour}), red and blue unswapped`, async () => {
              const found = await page.evaluate((rgb) => {
                const c = document.querySelector('#screen canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 0; i < d.length; i += 4) {
                  if (d[i] === rgb[0] && d[i + 1] === rgb[1] && d[i + 2] === rgb[2]) {
                    return true;
                  }
                }
                return false;
              }, stream.colour);
              assert.ok(found);
            });
          }
          await step('seek back to the middle, then to the end: the same picture', async () => {
            await seek(page, Math.round(ready.duration / 2));
            if (stream.changes) {
              await page.waitForTimeout(300);
              assert.notEqual(await canvasHash(page), straight, 'the picture at the middle is the one at the end');
            }
            await page.evaluate((ms) => {
              const tl = document.getElementById('timeline');
              tl.value = String(ms);
              tl.dispatchEvent(new Event('change'));
            }, ready.duration);
            await waitForPlayer(page, `s.state === 'ended'`);
            await page.waitForTimeout(300);
            assert.equal(await canvasHash(page), straight);
          });
        });
      } finally {
        await page.close().catch(() => {});
      }
    });
  }

  it('a recording that is not there is an error on the page', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the player on a missing file', () => tab.page.goto(`${caddy.origin}/player.html?src=/recordings/missing.fbs`, { waitUntil: 'commit' }));
        await step('the page says so', async () => {
          await tab.page.waitForFunction(() => window.playerState?.state === 'error');
          assert.match(await tab.page.locator('#status').textContent(), /HTTP 404/);
        });
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });
});
