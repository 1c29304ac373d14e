// nova's console URL in Chromium: Debian's noVNC package (the one OpenStack
// deployments serve) opened at exactly the URL shape nova hands out,
// /vnc_lite.html?path=%3Ftoken%3D<token>, through Caddy in the README's nova
// shape, to QEMU.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { noBrowser, launchBrowser, openPage, waitForPicture, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { inCI, skipUnlessInstalled } from './lib/processes.js';
import { startQemu } from './lib/targets.js';

const noNoVNC = !fs.existsSync('/usr/share/novnc/vnc_lite.html') && !inCI
  && 'Debian\'s noVNC is not installed (Debian package novnc; make test-deps installs it)';

describe('nova console URL with Debian\'s noVNC', {
  timeout: 240_000,
  skip: noBrowser || noNoVNC || skipUnlessInstalled('qemu-system-x86_64', 'qemu-system-x86'),
}, () => {
  // nova's console tokens are UUIDs.
  const token = crypto.randomUUID();
  let qemu;
  let caddy;
  let browser;

  before(async () => {
    qemu = await startQemu();
    caddy = await startCaddy({ [token]: qemu.addr }, { caddyfile: 'Caddyfile.nova', readyPath: '/vnc_lite.html' });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await qemu?.stop();
  }, { timeout: 60_000 });

  it('vnc_lite.html?path=%3Ftoken%3D<token> connects and shows SeaBIOS', { timeout: 120_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        await step('open nova\'s console URL', () =>
          page.goto(`${caddy.origin}/vnc_lite.html?path=%3Ftoken%3D${token}`, { waitUntil: 'commit' }));
        await step('the page says it is connected', () =>
          page.waitForFunction(() => /^Connected to /.test(document.getElementById('status')?.textContent || ''), null, { timeout: 30_000 }));
        await step('SeaBIOS has drawn something', () => waitForPicture(page, 2, 60_000), 70_000);
        await step('the WebSocket went to /?token=<token> and was answered 101', () => {
          const sockets = tab.websockets();
          assert.equal(sockets.length, 1);
          assert.equal(new URL(sockets[0].url).pathname, '/');
          assert.equal(new URL(sockets[0].url).searchParams.get('token'), token);
          assert.equal(sockets[0].status, 101);
        });
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });

  it('Caddy\'s logs do not contain the token', () => {
    const logs = caddy.logs();
    assert.match(logs, /"session started"/);
    const leaks = logs.split('\n').filter((l) => l.includes(token))
      .map((l) => l.replaceAll(token, '<token>').slice(0, 400));
    assert.deepEqual(leaks, [], "Caddy's logs contain the console token");
  });
});
