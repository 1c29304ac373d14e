// The RFB-aware mode in the browser: noVNC in Chromium connects through
// Caddy to QEMU with a VNC password and to QEMU requiring VeNCrypt X.509
// with a client certificate, with no password prompt (the proxy logs in);
// and a view-only console whose keys and clicks change nothing on vncdemo
// while its picture keeps moving.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasInfo, launchBrowser, openPage, pixel, waitForPicture, waitForPixels, waitForState, withSteps,
} from './lib/browser.js';
import { newToken, startCaddy, vncPassword } from './lib/caddy.js';
import { skipUnlessInstalled } from './lib/processes.js';
import { startQemu, startVncdemo } from './lib/targets.js';

const noQemu = skipUnlessInstalled('qemu-system-x86_64', 'qemu-system-x86');

describe('RFB-aware consoles', { timeout: 300_000, skip: noBrowser || noQemu }, () => {
  const passwordToken = newToken();
  const tlsToken = newToken();
  const demoToken = newToken();
  let qemuPassword;
  let qemuTLS;
  let demo;
  let caddy;
  let browser;

  before(async () => {
    demo = await startVncdemo();
    // The PKI comes with Caddy; the QEMU that needs it starts after it.
    caddy = await startCaddy({ [demoToken]: demo.addr });
    qemuPassword = await startQemu({ password: vncPassword });
    qemuTLS = await startQemu({ tlsDir: caddy.pkiDir });
    caddy.writeTokens({ [demoToken]: demo.addr, [passwordToken]: qemuPassword.addr, [tlsToken]: qemuTLS.addr });
    browser = await launchBrowser();
  }, { timeout: 120_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await Promise.all([qemuPassword, qemuTLS, demo].map((p) => p?.stop()));
  }, { timeout: 60_000 });

  async function open(t, route, consoleToken, body) {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        const path = encodeURIComponent(`${route}?token=${consoleToken}`);
        await step('open the console page', () => tab.page.goto(`${caddy.origin}/?path=${path}`, { waitUntil: 'commit' }));
        await body(step, tab.page, tab);
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  }

  for (const [name, tokenOf] of [
    ['QEMU with a VNC password', () => passwordToken],
    ['QEMU requiring VeNCrypt X.509 and a client certificate', () => tlsToken],
  ]) {
    it(`${name}: connects with no password prompt and shows SeaBIOS`, { timeout: 120_000 }, async (t) => {
      await open(t, 'rfb-aware', tokenOf(), async (step, page) => {
        const state = await step('page reports connected without asking for a password', () =>
          waitForState(page, ['connected', 'password']));
        assert.equal(state.state, 'connected', 'the page asked for a password');
        assert.ok(state.width > 0 && state.height > 0, `size ${state.width}x${state.height}`);
        await step('SeaBIOS has drawn something: the canvas is not all one colour', () =>
          waitForPicture(page, 2, 60_000), 70_000);
        await step('Ctrl-Alt-Del reaches the machine and the session stays up', async () => {
          await page.locator('#ctrl-alt-del').click();
          await waitForState(page, ['connected'], 2000);
        });
      });
    });
  }

  it('view-only: keys and clicks change nothing, the picture still moves', { timeout: 90_000 }, async (t) => {
    await open(t, 'view-only', demoToken, async (step, page) => {
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('canvas shows the corner squares, key indicator black', () =>
        waitForPixels(page, [{ x: 5, y: 5, rgb: [255, 0, 0] }, { x: 64, y: 16, rgb: [0, 0, 0] }]));
      const click = { x: 200, y: 450 };
      await step('click in the canvas and type', async () => {
        const { box } = await canvasInfo(page);
        await page.mouse.click(box.x + click.x + 0.5, box.y + click.y + 0.5);
        await page.keyboard.type('abc');
        await page.locator('#ctrl-alt-del').click();
      });
      await step('the animation bar moves: the picture still updates', async () => {
        const track = async () => {
          const row = [];
          for (let x = 200; x < 600; x += 8) {
            row.push((await pixel(page, x, 355)).join(','));
          }
          return row.join(' ');
        };
        const first = await track();
        let moved = false;
        for (let i = 0; i < 20 && !moved; i++) {
          await new Promise((r) => setTimeout(r, 150));
          moved = (await track()) !== first;
        }
        assert.ok(moved, 'the animation bar did not move in 3 s');
      });
      await step('no dot where the click was, key indicator still black, session up', async () => {
        assert.deepEqual((await pixel(page, click.x, click.y)).slice(0, 3), [32, 32, 32], 'click dot drawn');
        assert.deepEqual((await pixel(page, 64, 16)).slice(0, 3), [0, 0, 0], 'key indicator lit');
        await waitForState(page, ['connected'], 1000);
      });
    });
  });

  it('Caddy logs never contain the VNC password or a token', async () => {
    // A console's "session ended" line follows its tab's closing.
    for (let i = 0; i < 50 && !/"dropped_input"/.test(caddy.logs()); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const logs = caddy.logs();
    assert.match(logs, /"vnc_security":"vencrypt x509none"/, 'a console logged in with VeNCrypt X509None');
    assert.match(logs, /"vnc_security":"vnc"/, 'a console logged in with VNC authentication');
    assert.match(logs, /"dropped_input":[1-9]/, 'the view-only console dropped input');
    assert.ok(!logs.includes(vncPassword), "Caddy's logs contain the VNC password");
    for (const tok of [passwordToken, tlsToken, demoToken]) {
      assert.ok(!logs.includes(tok), "Caddy's logs contain a token");
    }
  });
});
