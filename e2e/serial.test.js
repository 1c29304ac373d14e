// The serial console page (demo/site/serial.html, xterm.js) in Chromium,
// through Caddy's vnc_proxy (protocol serial) over TLS, to a real Linux
// guest's serial port on a QEMU TCP chardev: a command typed into the
// terminal runs in the guest's shell; a second console for the same port
// is refused while the first lives; the guest going away is shown to the
// user.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { launchBrowser, noBrowser, openPage, waitForState, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { skipUnlessInstalled } from './lib/processes.js';
import { startSerialGuest } from './lib/targets.js';

const prompt = 'guest# ';

// terminalLines returns the lines of the page's terminal, from xterm.js's
// buffer (what a person sees, scrollback included).
function terminalLines(page) {
  return page.evaluate(() => {
    const b = window.terminal.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) {
      lines.push(b.getLine(i).translateToString(true));
    }
    return lines;
  });
}

// waitForLine waits until a terminal line matches re, pressing Enter every
// second when nudge is set (a prompt printed before the page connected is
// gone: the chardev drops what the guest writes while no client is there).
async function waitForLine(page, re, timeoutMs, { nudge = false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lines = [];
  while (Date.now() < deadline) {
    lines = await terminalLines(page);
    if (lines.some((l) => re.test(l))) {
      return lines;
    }
    if (nudge) {
      await page.keyboard.press('Enter');
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`no terminal line matches ${re} after ${timeoutMs} ms; the terminal shows:\n${lines.filter((l) => l !== '').slice(-15).join('\n')}`);
}

describe('serial console to a Linux guest', { timeout: 400_000, skip: noBrowser || skipUnlessInstalled('qemu-system-x86_64', 'qemu-system-x86') }, () => {
  const token = newToken();
  let guest;
  let caddy;
  let browser;

  before(async () => {
    guest = await startSerialGuest();
    caddy = await startCaddy({ [token]: guest.addr }, { readyPath: '/serial.html' });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await guest?.stop();
  }, { timeout: 60_000 });

  it('xterm.js: a command typed into the page runs in the guest', { timeout: 300_000 }, async (t) => {
    const tab = await openPage(browser);
    const other = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const { page } = tab;
        const url = `${caddy.origin}/serial.html?token=${encodeURIComponent(token)}`;
        await step('open the serial console page', () => page.goto(url, { waitUntil: 'commit' }));
        await step('page reports connected', () => waitForState(page, ['connected']));
        await step('the guest boots to its shell prompt (Enter pressed every second)', () =>
          waitForLine(page, new RegExp(`^${prompt}`), 180_000, { nudge: true }), 190_000);
        await step('type echo $((6*7)) and Enter', async () => {
          await page.locator('#terminal').click();
          await page.keyboard.type('echo $((6*7))');
          await page.keyboard.press('Enter');
        });
        await step('the terminal shows 42 on a line of its own', () => waitForLine(page, /^42\s*$/, 30_000));
        await step('the WebSocket upgrade was answered 101', async () => {
          const sockets = tab.websockets();
          assert.equal(sockets.length, 1);
          assert.equal(sockets[0].status, 101);
        });

        await step('a second console for the same serial port is refused', async () => {
          await other.page.goto(url, { waitUntil: 'commit' });
          const s = await waitForState(other.page, ['disconnected'], 15_000);
          assert.match(s.reason, /^Could not connect: .*in use/);
          const sockets = other.websockets();
          assert.equal(sockets.length, 1);
          assert.match(sockets[0].error, /Unexpected response code: 409/);
        });
        await step('the first console still works', async () => {
          await page.locator('#terminal').click();
          await page.keyboard.type('echo still-$((6*7))');
          await page.keyboard.press('Enter');
          await waitForLine(page, /^still-42\s*$/, 30_000);
        });

        await step('stop the guest', () => guest.stop());
        const state = await step('page reports disconnected with a reason', () => waitForState(page, ['disconnected'], 15_000));
        assert.equal(state.closeCode, 1000, 'the proxy closes with 1000 when the serial port closed');
        assert.equal(state.reason, 'Disconnected: the remote machine ended the session.');
        assert.equal(await page.locator('#status').textContent(), state.reason);
      });
    } finally {
      await tab.page.close().catch(() => {});
      await other.page.close().catch(() => {});
    }
  });

  it('Caddy logs never contain the console token, and record the 409', () => {
    const logs = caddy.logs();
    assert.ok(!logs.includes(token), "Caddy's logs contain the token");
    assert.match(logs, /console in use/);
  });
});
