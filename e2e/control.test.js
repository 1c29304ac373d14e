// Session control as the user sees it: an administrator ends a live console
// through Caddy's admin API, and the console page says so in words.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { noBrowser, launchBrowser, openPage, waitForState, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { startVncdemo } from './lib/targets.js';

describe('session control', { timeout: 180_000, skip: noBrowser }, () => {
  const token = newToken();
  let demo;
  let caddy;
  let browser;

  before(async () => {
    demo = await startVncdemo();
    caddy = await startCaddy({ [token]: demo.addr });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await demo?.stop();
  }, { timeout: 60_000 });

  it('an administrator ends the console and the page shows why', { timeout: 60_000 }, async (t) => {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the console page', () => tab.page.goto(`${caddy.origin}/?token=${encodeURIComponent(token)}`, { waitUntil: 'commit' }));
        await step('page reports connected', () => waitForState(tab.page, ['connected']));
        const list = await step('the admin API lists the console, without its token', async () => {
          const { status, text } = await caddy.admin('GET', '/vnc_proxy/sessions');
          assert.equal(status, 200, text);
          assert.ok(!text.includes(token), 'the list holds the token');
          const sessions = JSON.parse(text);
          assert.equal(sessions.length, 1, text);
          assert.equal(sessions[0].target, demo.addr.startsWith('unix:') ? demo.addr : `tcp:${demo.addr}`);
          return sessions;
        });
        await step('DELETE /vnc_proxy/sessions/<id>', async () => {
          const { status, text } = await caddy.admin('DELETE', `/vnc_proxy/sessions/${list[0].id}`);
          assert.equal(status, 200, text);
          assert.deepEqual(JSON.parse(text), { closed: 1 });
        });
        const state = await step('page reports disconnected', () => waitForState(tab.page, ['disconnected']));
        await step('with the reason, in words', async () => {
          assert.equal(state.closeCode, 1008);
          assert.equal(state.reason, 'Disconnected: an administrator closed the console.');
          const shown = await tab.page.textContent('body');
          assert.ok(shown.includes('an administrator closed the console'), shown);
        });
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  });
});
