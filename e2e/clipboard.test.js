// The clipboard policy in the browser: noVNC in Chromium, through Caddy, to
// TigerVNC's Xvnc, whose X clipboard xclip sets and reads. With
// `clipboard { copy off; paste off }` the page never gets Xvnc's clipboard
// and its paste never reaches Xvnc; through a framed console that allows
// both, the same steps go through, so the test shows the policy at work.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { noBrowser, launchBrowser, openPage, waitForState, withSteps } from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { Process, skipUnlessInstalled, tempDir } from './lib/processes.js';
import { startXvnc } from './lib/targets.js';

const noXvnc = skipUnlessInstalled('Xvnc', 'tigervnc-standalone-server') || skipUnlessInstalled('xclip', 'xclip');

describe('clipboard policy with noVNC and Xvnc', { timeout: 240_000, skip: noBrowser || noXvnc }, () => {
  const token = newToken();
  let xvnc;
  let caddy;
  let browser;
  let owner; // the xclip that serves Xvnc's clipboard

  before(async () => {
    xvnc = await startXvnc();
    caddy = await startCaddy({ [token]: xvnc.addr });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await owner?.stop();
    await caddy?.stop();
    await xvnc?.stop();
  }, { timeout: 60_000 });

  // copyInXvnc makes text the X clipboard of Xvnc's display; xclip serves it
  // until the next copy.
  async function copyInXvnc(text) {
    await owner?.stop();
    const file = path.join(tempDir('clipboard'), 'text');
    fs.writeFileSync(file, text);
    owner = new Process('xclip', 'xclip', ['-quiet', '-selection', 'clipboard', '-i', file], { env: { DISPLAY: xvnc.display } });
  }

  // xvncClipboard is the X clipboard of Xvnc's display ('' when none).
  function xvncClipboard() {
    return new Promise((resolve) => {
      execFile('xclip', ['-o', '-selection', 'clipboard'], { env: { ...process.env, DISPLAY: xvnc.display }, timeout: 10_000 },
        (err, stdout) => resolve(err ? '' : stdout));
    });
  }

  async function waitFor(what, cond, timeoutMs = 15_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (await cond()) {
        return;
      }
      if (Date.now() > end) {
        throw new Error(`timed out waiting for ${what}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const pageClipboard = (page) => page.evaluate(() => window.consoleState.clipboard);

  it('copy off and paste off: the page gets nothing, Xvnc keeps its clipboard; both go through where allowed', { timeout: 120_000 }, async (t) => {
    const off = await openPage(browser);
    const on = await openPage(browser);
    try {
      await withSteps(t, off, async (step) => {
        for (const [tab, route] of [[off, 'clipboard-off'], [on, 'clipboard-on']]) {
          const p = encodeURIComponent(`${route}?token=${token}`);
          await step(`open ${route}`, () => tab.page.goto(`${caddy.origin}/?path=${p}`, { waitUntil: 'commit' }));
          await step(`${route} reports connected`, () => waitForState(tab.page, ['connected']));
        }

        const copied = 'copied in the VM';
        await step('copy in Xvnc: the allowed console gets the text', async () => {
          await copyInXvnc(copied);
          await waitFor('the text on the allowed console', async () => (await pageClipboard(on.page)) === copied);
        });
        await step('the console with copy off got nothing', async () => {
          assert.equal(await pageClipboard(off.page), '', 'the page got the clipboard');
        });

        await step('paste from the console with paste off: Xvnc keeps its clipboard', async () => {
          await off.page.evaluate(() => window.consolePaste('pasted through the off console'));
          // The allowed console's session sees the same Xvnc: pictures
          // still come on the other one.
          await waitForState(off.page, ['connected'], 1000);
          assert.equal(await xvncClipboard(), copied, "Xvnc's clipboard changed");
        });

        const pasted = 'pasted through the allowed console';
        await step('paste from the allowed console: Xvnc gets it', async () => {
          await on.page.evaluate((text) => window.consolePaste(text), pasted);
          await waitFor("the text in Xvnc's clipboard", async () => (await xvncClipboard()) === pasted);
        });
        await step('the console with copy off still got nothing, and stays up', async () => {
          assert.equal(await pageClipboard(off.page), '', 'the page got the clipboard');
          await waitForState(off.page, ['connected'], 1000);
        });
      });
    } finally {
      await off.page.close().catch(() => {});
      await on.page.close().catch(() => {});
    }
    await waitFor('both sessions to end', () => (caddy.logs().match(/"session ended"/g) || []).length >= 2);
    const ended = caddy.logs().split('\n').filter((l) => l.includes('"session ended"'));
    const dropped = ended.map((l) => Number((l.match(/"clipboard_dropped":(\d+)/) || [])[1]));
    assert.equal(dropped.length, 2, `session ended lines:\n${ended.join('\n')}`);
    assert.ok(dropped.some((n) => n >= 2), `no console dropped both ways: ${dropped}`);
    assert.ok(!caddy.logs().includes(token), 'a token is in the logs');
    assert.ok(!caddy.logs().includes('copied in the VM') && !caddy.logs().includes('pasted through'), 'clipboard text is in the logs');
  });
});
