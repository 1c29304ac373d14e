// Which transport the browser's WebSocket takes to the console, as seen in
// the browser's own network events and in Caddy's access log: over HTTP/2
// (RFC 8441) when Caddy runs with GODEBUG=http2xconnect=1, and over
// HTTP/1.1 otherwise, the page itself being served over HTTP/2 either way.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { noBrowser, launchBrowser, openPage, waitForPixels, waitForState, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { startVncdemo } from './lib/targets.js';

for (const { name, env, wsProto, wsStatus } of [
  { name: 'WebSocket over HTTP/2 with GODEBUG=http2xconnect=1', env: { GODEBUG: 'http2xconnect=1' }, wsProto: 'HTTP/2.0', wsStatus: 200 },
  { name: 'WebSocket over HTTP/1.1 without it', env: { GODEBUG: '' }, wsProto: 'HTTP/1.1', wsStatus: 101 },
]) {
  describe(name, { timeout: 180_000, skip: noBrowser }, () => {
    const token = newToken();
    let demo;
    let caddy;
    let browser;

    before(async () => {
      demo = await startVncdemo();
      caddy = await startCaddy({ [token]: demo.addr }, { env });
      browser = await launchBrowser();
    }, { timeout: 90_000 });

    after(async () => {
      await browser?.close();
      await caddy?.stop();
      await demo?.stop();
    }, { timeout: 60_000 });

    it(`the console works, its WebSocket over ${wsProto}`, { timeout: 60_000 }, async (t) => {
      const tab = await openPage(browser);
      try {
        await withSteps(t, tab, async (step) => {
          await step('open the console page', () => tab.page.goto(`${caddy.origin}/?token=${encodeURIComponent(token)}`, { waitUntil: 'commit' }));
          await step('page reports connected', () => waitForState(tab.page, ['connected']));
          await step('the server picture arrives', () => waitForPixels(tab.page, [{ x: 5, y: 5, rgb: [255, 0, 0] }]));
          await step(`the browser's handshake answer is ${wsStatus}`, async () => {
            const sockets = tab.websockets();
            assert.equal(sockets.length, 1, JSON.stringify(sockets));
            assert.equal(sockets[0].status, wsStatus, JSON.stringify(sockets));
          });
          await step('the browser leaves', () => tab.page.close());
          await step(`Caddy logged the page over HTTP/2 and the console over ${wsProto}`, async () => {
            // A console over a stream is logged when it ends.
            const deadline = Date.now() + 5000;
            let log;
            for (;;) {
              log = caddy.accessLog();
              if (log.some((e) => e.request.uri.startsWith('/websockify')) || Date.now() > deadline) {
                break;
              }
              await new Promise((r) => setTimeout(r, 100));
            }
            const page = log.find((e) => e.request.uri === '/' || e.request.uri.startsWith('/?'));
            const ws = log.find((e) => e.request.uri.startsWith('/websockify'));
            assert.ok(page && ws, `access log entries for the page and the console: ${JSON.stringify(log.map((e) => e.request.uri))}`);
            assert.equal(page.request.proto, 'HTTP/2.0');
            assert.equal(ws.request.proto, wsProto);
            assert.equal(ws.request.method, wsProto === 'HTTP/2.0' ? 'CONNECT' : 'GET');
          });
        });
      } finally {
        await tab.page.close().catch(() => {});
      }
    });
  });
}
