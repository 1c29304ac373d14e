// noVNC in Chromium, through Caddy's vnc_proxy over TLS, to QEMU's VNC
// server (the one OpenStack's consoles use), showing SeaBIOS.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasInfo, launchBrowser, openPage, waitForPicture, waitForSize, waitForState, withSteps,
} from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { skipUnlessInstalled } from './lib/processes.js';
import { serverInit, startQemu } from './lib/targets.js';

describe('console to QEMU', { timeout: 240_000, skip: noBrowser || skipUnlessInstalled('qemu-system-x86_64', 'qemu-system-x86') }, () => {
  const token = newToken();
  let qemu;
  let caddy;
  let browser;

  before(async () => {
    qemu = await startQemu();
    caddy = await startCaddy({ [token]: qemu.addr });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await qemu?.stop();
  }, { timeout: 60_000 });

  it('QEMU: connects, shows the SeaBIOS screen at the server size', { timeout: 120_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        await step('open the console page', () => page.goto(`${caddy.origin}/?token=${token}`, { waitUntil: 'commit' }));
        await step('page reports connected', () => waitForState(page, ['connected']));
        await step('SeaBIOS has drawn something: the canvas is not all one colour', () =>
          waitForPicture(page, 2, 60_000), 70_000);
        await step('framebuffer size is the server size, non-zero, and the canvas size', async () => {
          // QEMU changes its size when the guest switches video modes, so
          // the page follows the server's latest size, asked directly.
          let server;
          for (let attempt = 0; attempt < 3; attempt++) {
            server = await serverInit(qemu.addr);
            try {
              await waitForSize(page, server.width, server.height, 5000);
              break;
            } catch (err) {
              if (attempt === 2) {
                throw err;
              }
            }
          }
          assert.ok(server.width > 0 && server.height > 0, `server size ${server.width}x${server.height}`);
          const canvas = await canvasInfo(page);
          assert.deepEqual([canvas.width, canvas.height], [server.width, server.height], 'canvas size');
        }, 40_000);
        await step('Ctrl-Alt-Del reaches the machine and the session stays up', async () => {
          await page.locator('#ctrl-alt-del').click();
          await waitForState(page, ['connected'], 2000);
        });
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });
});
