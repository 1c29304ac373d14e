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
  noBrowser, launchBrowser, openPage, screenshot, waitForPixels, withSteps,
} from './lib/browser.js';
import { startCaddy } from './lib/caddy.js';
import { Process, repoRoot, tempDir } from './lib/processes.js';
import { startVncdemo } from './lib/targets.js';

const W = 800;
const H = 600;
const click = { x: 200, y: 450 };
const indicator = { x: 64, y: 16 };
const red = [255, 0, 0];
const black = [0, 0, 0];
const yellow = [255, 255, 0];
const magenta = [255, 0, 255];
const background = [32, 32, 32];

// record runs internal/recording/cmd/recordvnc against the VNC server at
// addr and returns what it printed: the recording's id and vncdemo's clock
// as it changed.
async function record(addr, dir, bin) {
  const proc = new Process('recordvnc', bin, [
    '-target', addr, '-dir', dir, '-duration', '6s',
    '-click', `${click.x},${click.y}`, '-click-at', '1.5s', '-keys', 'abc', '-keys-at', '2.5s',
  ]);
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

  before(async () => {
    // The suite builds only this helper, which no release ships.
    const bin = path.join(binDir, 'recordvnc');
    execFileSync('go', ['build', '-o', bin, './internal/recording/cmd/recordvnc'], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    demo = await startVncdemo();
    rec = await record(demo.addr, recordings, bin);
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
    const names = fs.readdirSync(recordings).sort();
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
          await page.locator('#play').click();
          await waitForPlayer(page, `s.state === 'playing' && s.speed === 8`);
          const wall = Date.now();
          const end = await waitForPlayer(page, `s.state === 'ended'`, 20_000);
          assert.equal(end.position, end.duration);
          assert.ok(Date.now() - wall < end.duration / 2, `6 s at 8x took ${Date.now() - wall} ms`);
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
