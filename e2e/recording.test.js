// A console recorded by the proxy, played back: noVNC in Chromium opens a
// vncdemo console through vnc_proxy with `record`, clicks and types, and
// closes it; the admin API lists the recording, complete and without the
// token; the player page (demo/site/player.html) lists it, plays it to the
// end with the dot and the yellow key square on its last frame, and a seek
// to the middle shows another picture (vncdemo's clock) than the end.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasHash, canvasInfo, launchBrowser, openPage, screenshot, waitForPixels, waitForState, withSteps,
} from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { tempDir } from './lib/processes.js';
import { startVncdemo } from './lib/targets.js';

const click = { x: 200, y: 450 };
const indicator = { x: 64, y: 16 };
const black = [0, 0, 0];
const yellow = [255, 255, 0];
const magenta = [255, 0, 255];
const background = [32, 32, 32];

// playerState waits until the player's published state satisfies want.
async function playerState(page, want, timeoutMs = 30_000) {
  await page.waitForFunction((w) => {
    const s = window.playerState;
    if (s && s.state === 'error' && !w.includes("'error'")) {
      throw new Error(`player error: ${s.error}`);
    }
    // eslint-disable-next-line no-new-func
    return s && new Function('s', `return ${w};`)(s);
  }, want, { timeout: timeoutMs, polling: 50 });
  return page.evaluate(() => ({ ...window.playerState, meta: null }));
}

describe('a console recorded by the proxy, played in the browser', { timeout: 240_000, skip: noBrowser }, () => {
  const token = newToken();
  const recordings = tempDir('recordings');
  let demo;
  let caddy;
  let browser;
  let recording;

  before(async () => {
    demo = await startVncdemo();
    caddy = await startCaddy({ [token]: demo.addr }, {
      caddyfile: 'Caddyfile.recording', env: { E2E_RECORDINGS_DIR: recordings },
    });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await demo?.stop();
    fs.rmSync(recordings, { recursive: true, force: true });
  }, { timeout: 60_000 });

  it('noVNC console: click, keys, then closed', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    const { page } = tab;
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the console page', () => page.goto(`${caddy.origin}/?token=${encodeURIComponent(token)}`, { waitUntil: 'commit' }));
        await step('page reports connected', () => waitForState(page, ['connected']));
        await step('the key square is black', () => waitForPixels(page, [{ ...indicator, rgb: black }]));
        // Time for the clock to change before anything is drawn.
        await page.waitForTimeout(2200);
        await step('click and type', async () => {
          const { box } = await canvasInfo(page);
          await page.mouse.click(box.x + click.x + 0.5, box.y + click.y + 0.5);
          await page.keyboard.press('a');
        });
        await step('the dot and the yellow square appear', () =>
          waitForPixels(page, [{ ...click, rgb: magenta }, { ...indicator, rgb: yellow }]));
        await page.waitForTimeout(2200);
        await step('disconnect', async () => {
          await page.locator('#disconnect').click();
          await waitForState(page, ['disconnected']);
        });
      });
    } finally {
      await page.close().catch(() => {});
    }
  });

  it('the admin API lists the recording, complete, with its input and no token', { timeout: 30_000 }, async () => {
    const deadline = Date.now() + 10_000;
    let list = [];
    while (Date.now() < deadline) {
      const { status, text } = await caddy.admin('GET', '/vnc_proxy/recordings');
      assert.equal(status, 200, text);
      assert.ok(!text.includes(token), 'the list holds the token');
      list = JSON.parse(text);
      if (list.length === 1 && list[0].complete) {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(list.length, 1, JSON.stringify(list));
    [recording] = list;
    assert.equal(recording.complete, true);
    assert.equal(recording.target, `tcp:${demo.addr}`);
    assert.equal(recording.reason, 'browser closed');
    assert.equal(recording.input_included, true);
    assert.ok(recording.input_bytes > 0);
    assert.ok(recording.duration_ms > 4000, `${recording.duration_ms} ms`);
    for (const name of fs.readdirSync(recordings)) {
      assert.equal(fs.statSync(path.join(recordings, name)).mode & 0o777, 0o600, name);
      assert.ok(!fs.readFileSync(path.join(recordings, name)).includes(token), `${name} holds the token`);
    }
    const { status, text } = await caddy.admin('GET', `/vnc_proxy/recordings/${recording.id}`);
    assert.equal(status, 200);
    assert.ok(text.startsWith('FBS 001.000\n'));
  });

  it('the player lists it, plays it to the end and seeks back', { timeout: 120_000 }, async (t) => {
    assert.ok(recording, 'no recording was listed');
    const tab = await openPage(browser);
    const { page } = tab;
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the player without a recording: it lists them', async () => {
          await page.goto(`${caddy.origin}/player.html`, { waitUntil: 'commit' });
          await page.locator(`#facts a:text("${recording.id}")`).click();
        });
        const ready = await step('the player is ready at 0', () => playerState(page, "s.state === 'paused' && s.duration > 4000"));
        assert.deepEqual(ready.warnings, []);
        await step('the sidecar facts are shown', async () => {
          const text = await page.locator('#facts').innerText();
          assert.match(text, /Reason\s+browser closed/);
          assert.match(text, /Complete\s+yes/);
          assert.match(text, new RegExp(`Token hash\\s+${recording.token_hash}`));
        });
        await step('play at 8x to the end', async () => {
          await page.locator('#speed').selectOption('8');
          await page.locator('#play').click();
          await playerState(page, "s.state === 'ended'", 30_000);
        });
        await step('the last frame shows the dot and the yellow square', () => waitForPixels(page, [
          { x: 5, y: 5, rgb: [255, 0, 0] },
          { ...indicator, rgb: yellow },
          { ...click, rgb: magenta },
          { x: click.x + 6, y: click.y, rgb: background },
        ], 5000));
        await screenshot(page, 'proxy recording last frame');
        const end = await canvasHash(page);
        await step('seek to before the click: a black square and no dot', async () => {
          await page.evaluate(() => {
            const tl = document.getElementById('timeline');
            tl.value = '1000';
            tl.dispatchEvent(new Event('input'));
            tl.dispatchEvent(new Event('change'));
          });
          await playerState(page, "s.state === 'paused' && s.position === 1000");
          await waitForPixels(page, [{ ...indicator, rgb: black }, { ...click, rgb: background }], 5000);
          assert.notEqual(await canvasHash(page), end);
        });
      });
    } finally {
      await page.close().catch(() => {});
    }
  });
});
