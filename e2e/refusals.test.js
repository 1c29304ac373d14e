// What a browser gets when the proxy refuses: an ordinary HTTP status before
// any WebSocket upgrade (never a 101 followed by a close), and a console page
// that tells the user in words.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { noBrowser, launchBrowser, openPage, waitForState, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { freePort } from './lib/processes.js';
import { startVncdemo } from './lib/targets.js';

const invalidLink = 'Could not connect: the console link is invalid or has expired, or the console is unavailable.';

describe('refusals', { timeout: 180_000, skip: noBrowser }, () => {
  const token = newToken();
  const deadToken = newToken();
  const unknownToken = newToken(); // in no token file
  let demo;
  let caddy;
  let browser;

  before(async () => {
    demo = await startVncdemo();
    const closedPort = await freePort(); // nothing listens there
    caddy = await startCaddy({ [token]: demo.addr, [deadToken]: `127.0.0.1:${closedPort}` });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await demo?.stop();
  }, { timeout: 60_000 });

  async function withTab(t, body) {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, (step) => body(step, tab.page, tab));
    } finally {
      await tab.page.close().catch(() => {});
    }
  }

  // refusedWith asserts that the page's only WebSocket was refused with
  // this HTTP status before the upgrade: the browser saw no 101 and names
  // the status (Chromium words a 401 differently), and Caddy's access log
  // has the status for the last /websockify request.
  async function refusedWith(tab, status) {
    const sockets = tab.websockets();
    assert.equal(sockets.length, 1, 'one WebSocket');
    assert.equal(sockets[0].status, 0, `the upgrade was answered ${sockets[0].status}, not refused`);
    const browserSays = status === 401 ? /HTTP Authentication failed/ : new RegExp(`Unexpected response code: ${status}\\b`);
    assert.match(sockets[0].error, browserSays);
    const deadline = Date.now() + 3000;
    let logged;
    do {
      logged = caddy.accessLog().filter((e) => e.request.uri.startsWith('/websockify')).at(-1);
      if (logged && logged.status === status) {
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.equal(logged?.status, status, 'status of the last /websockify request in the access log');
  }

  it('bad token: the page says the link is invalid; the upgrade got 403', { timeout: 60_000 }, async (t) => {
    await withTab(t, async (step, page, tab) => {
      await step('open the console with an unknown token', () => page.goto(`${caddy.origin}/?token=${unknownToken}`, { waitUntil: 'commit' }));
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected']));
      await step('the reason tells the user the link is invalid', async () => {
        assert.equal(state.reason, invalidLink);
        assert.equal(state.opened, false);
        assert.equal(await page.locator('#status').textContent(), invalidLink);
      });
      await step('the WebSocket request got HTTP 403', async () => refusedWith(tab, 403));
    });
  });

  it('noVNC-style path without a token: the upgrade got 401', { timeout: 60_000 }, async (t) => {
    await withTab(t, async (step, page, tab) => {
      await step('open the console with path=websockify', () => page.goto(`${caddy.origin}/?path=websockify`, { waitUntil: 'commit' }));
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected']));
      assert.equal(state.reason, invalidLink);
      await step('the WebSocket request got HTTP 401', async () => refusedWith(tab, 401));
    });
  });

  it('no token in the page address: the page says so and opens no WebSocket', { timeout: 60_000 }, async (t) => {
    await withTab(t, async (step, page, tab) => {
      await step('open the console without a token', () => page.goto(`${caddy.origin}/`, { waitUntil: 'commit' }));
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected']));
      assert.match(state.reason, /^No console token/);
      assert.equal(tab.websockets().length, 0);
    });
  });

  it('unreachable VNC server: the page says it cannot connect; the upgrade got 502', { timeout: 60_000 }, async (t) => {
    await withTab(t, async (step, page, tab) => {
      await step('open the console for a target that refuses', () => page.goto(`${caddy.origin}/?token=${deadToken}`, { waitUntil: 'commit' }));
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected']));
      assert.equal(state.reason, invalidLink);
      await step('the WebSocket request got HTTP 502', async () => refusedWith(tab, 502));
    });
  });

  it('cross-origin: a page from another origin is refused with 403; the same token works same-origin', { timeout: 60_000 }, async (t) => {
    await withTab(t, async (step, page, tab) => {
      await step('open a page on the other origin', () => page.goto(`${caddy.otherOrigin}/`, { waitUntil: 'commit' }));
      const endpoint = `${caddy.origin.replace(/^https:/, 'wss:')}/websockify?token=${token}`;
      const result = await step('it opens a WebSocket to the console endpoint with a valid token', () =>
        page.evaluate((url) => new Promise((resolve) => {
          const ws = new WebSocket(url);
          let opened = false;
          ws.onopen = () => { opened = true; ws.close(); };
          ws.onclose = (e) => resolve({ opened, code: e.code });
        }), endpoint));
      await step('the WebSocket never opened and the request got HTTP 403', async () => {
        assert.equal(result.opened, false);
        await refusedWith(tab, 403);
      });
      await step('the same token from the console page on the right origin connects', async () => {
        await page.goto(`${caddy.origin}/?token=${token}`, { waitUntil: 'commit' });
        await waitForState(page, ['connected']);
      });
    });
  });

  it('Caddy logs never contain a console token', () => {
    const logs = caddy.logs();
    assert.match(logs, /websockify/, 'the access log records the WebSocket requests');
    assert.ok(!logs.includes(token), "Caddy's logs contain a valid token");
    assert.ok(!logs.includes(deadToken), "Caddy's logs contain the unreachable target's token");
    assert.ok(!logs.includes(unknownToken), "Caddy's logs contain an unknown token");
  });
});
