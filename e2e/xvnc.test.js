// noVNC in Chromium, through Caddy's vnc_proxy over TLS, to TigerVNC's Xvnc.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasInfo, launchBrowser, openPage, waitForPicture, waitForState, withSteps,
} from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { skipUnlessInstalled } from './lib/processes.js';
import { serverInit, startXvnc } from './lib/targets.js';

describe('console to TigerVNC Xvnc', { timeout: 180_000, skip: noBrowser || skipUnlessInstalled('Xvnc', 'tigervnc-standalone-server') }, () => {
  const token = newToken();
  let xvnc;
  let caddy;
  let browser;

  before(async () => {
    xvnc = await startXvnc();
    caddy = await startCaddy({ [token]: xvnc.addr });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await xvnc?.stop();
  }, { timeout: 60_000 });

  it('Xvnc: connects at the server size and draws the framebuffer', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        await step('open the console page', () => page.goto(`${caddy.origin}/?token=${token}`, { waitUntil: 'commit' }));
        const state = await step('page reports connected', () => waitForState(page, ['connected']));
        await step('framebuffer is 800x600, as the server says and the canvas shows', async () => {
          const server = await serverInit(xvnc.addr);
          assert.deepEqual([server.width, server.height], [800, 600], 'Xvnc ServerInit size');
          assert.deepEqual([state.width, state.height], [800, 600], 'page framebuffer size');
          const canvas = await canvasInfo(page);
          assert.deepEqual([canvas.width, canvas.height], [800, 600], 'canvas size');
        });
        await step('every canvas pixel has been drawn', () => waitForPicture(page, 1, 15_000));
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });
});
