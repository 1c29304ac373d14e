// Debian's spice-html5 page (the one nova-spicehtml5proxy serves) in
// Chromium, opened at nova's URL shape /spice_auto.html?token=<token>,
// through Caddy's vnc_proxy (protocol spice) over TLS, to QEMU's SPICE
// server: the page keeps the token in a cookie, opens one WebSocket per
// SPICE channel, and shows SeaBIOS. The channels are one console in the
// admin API, and ending it there ends them all without harm to QEMU.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { launchBrowser, noBrowser, openPage, screenshot, withSteps } from './lib/browser.js';
import { startCaddy } from './lib/caddy.js';
import { inCI, skipUnlessInstalled } from './lib/processes.js';
import { startQemuSpice } from './lib/targets.js';

const noSpiceHTML5 = !fs.existsSync('/usr/share/spice-html5/spice_auto.html') && !inCI
  && 'Debian\'s spice-html5 is not installed (Debian package spice-html5; make test-deps installs it)';

// spicePicture waits until spice-html5 has drawn its primary surface
// (canvas #spice_surface_0) with text on it: pixels that are not black, in
// at least two colours. It returns the canvas size and what it counted.
async function spicePicture(page, timeoutMs) {
  const measure = () => {
    const c = document.getElementById('spice_surface_0');
    if (!c || c.width === 0 || c.height === 0) {
      return null;
    }
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] + d[i + 1] + d[i + 2] > 0) {
        lit++;
      }
      if (colours.size < 16) {
        colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      }
    }
    return { width: c.width, height: c.height, lit, colours: colours.size };
  };
  try {
    await page.waitForFunction(`(${measure})()?.lit > 200 && (${measure})()?.colours >= 2`, null, { timeout: timeoutMs, polling: 250 });
  } catch (err) {
    const got = await page.evaluate(measure).catch(() => null);
    throw new Error(`spice-html5 has not drawn SeaBIOS after ${timeoutMs} ms: ${JSON.stringify(got)}`, { cause: err });
  }
  return page.evaluate(measure);
}

describe('SPICE console with Debian\'s spice-html5', {
  timeout: 300_000,
  skip: noBrowser || noSpiceHTML5 || skipUnlessInstalled('qemu-system-x86_64', 'qemu-system-x86'),
}, () => {
  // nova's console tokens are UUIDs.
  const token = crypto.randomUUID();
  let qemu;
  let caddy;
  let browser;

  before(async () => {
    qemu = await startQemuSpice();
    caddy = await startCaddy({ [token]: qemu.addr }, { caddyfile: 'Caddyfile.spice', readyPath: '/spice_auto.html' });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await qemu?.stop();
  }, { timeout: 60_000 });

  it('spice_auto.html?token=<token> shows SeaBIOS; its channels are one console', { timeout: 180_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        await step('open nova\'s SPICE console URL', () =>
          page.goto(`${caddy.origin}/spice_auto.html?token=${token}`, { waitUntil: 'commit' }));
        const picture = await step('SeaBIOS is on the page\'s canvas: lit pixels in two colours or more', () =>
          spicePicture(page, 60_000), 70_000);
        t.diagnostic(`canvas ${picture.width}x${picture.height}, ${picture.lit} lit pixels, ${picture.colours} colours`);
        // The page clears its screen when the console ends below: the
        // picture is photographed now.
        t.diagnostic(`screenshot of SeaBIOS: ${await screenshot(page, 'spice-html5 SeaBIOS')}`);

        await step('the page keeps the token in a cookie', async () => {
          const cookies = await browser.context.cookies(caddy.origin);
          assert.ok(cookies.some((c) => c.name === 'token' && c.value === token), 'no token cookie');
        });
        await step('one WebSocket per channel, at /websockify, without the token in its URL, each answered 101', () => {
          const sockets = tab.websockets();
          // main, display, inputs and cursor at least (QEMU adds playback
          // and record).
          assert.ok(sockets.length >= 4, `${sockets.length} WebSockets, want main, display, inputs and cursor at least`);
          for (const s of sockets) {
            const u = new URL(s.url);
            assert.equal(u.pathname, '/websockify');
            assert.equal(u.search, '');
            assert.equal(s.status, 101, `${s.url}: ${s.error}`);
            assert.equal(s.closed, false, 'a channel closed');
          }
        });

        let id;
        await step('the admin API lists one console with every open channel', async () => {
          // A channel may still be opening: ask until the count matches.
          const deadline = Date.now() + 10_000;
          for (;;) {
            const { status, text } = await caddy.admin('GET', '/vnc_proxy/sessions');
            assert.equal(status, 200, text);
            assert.ok(!text.includes(token), 'the list holds the token');
            const list = JSON.parse(text);
            const open = tab.websockets().filter((s) => s.status === 101 && !s.closed).length;
            if (list.length === 1 && list[0].channels === open) {
              assert.equal(list[0].target, `tcp:${qemu.addr}`);
              id = list[0].id;
              break;
            }
            assert.ok(Date.now() < deadline, `the admin API lists ${text} while the page has ${open} open channels`);
            await new Promise((r) => setTimeout(r, 200));
          }
        }, 15_000);
        await step('ending it there closes every channel', async () => {
          const { status, text } = await caddy.admin('DELETE', `/vnc_proxy/sessions/${id}`);
          assert.equal(status, 200, text);
          const deadline = Date.now() + 10_000;
          while (tab.websockets().some((s) => !s.closed)) {
            assert.ok(Date.now() < deadline, `channels still open 10 s after the console was ended: ${JSON.stringify(tab.websockets())}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        }, 15_000);
        await step('QEMU lives on', async () => {
          await new Promise((r) => setTimeout(r, 1000));
          assert.equal(qemu.proc.exitCode, null, `QEMU exited:\n${qemu.proc.output().slice(-2000)}`);
        });
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });

  it('an unknown token: the channel\'s upgrade is refused 403', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        await step('open the page with an unknown token', () =>
          page.goto(`${caddy.origin}/spice_auto.html?token=${crypto.randomUUID()}`, { waitUntil: 'commit' }));
        await step('its WebSocket is refused 403', async () => {
          const deadline = Date.now() + 15_000;
          while (!tab.websockets().some((s) => s.error)) {
            assert.ok(Date.now() < deadline, `no refusal after 15 s: ${JSON.stringify(tab.websockets())}`);
            await new Promise((r) => setTimeout(r, 100));
          }
          const sockets = tab.websockets();
          assert.equal(sockets.length, 1, 'only the main channel is tried');
          assert.match(sockets[0].error, /Unexpected response code: 403/);
        }, 20_000);
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });

  it('Caddy logs never contain the console token', () => {
    assert.ok(!caddy.logs().includes(token), "Caddy's logs contain the token");
  });
});
