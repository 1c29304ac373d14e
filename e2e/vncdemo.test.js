// noVNC in Chromium, through Caddy's vnc_proxy over TLS, to the project's
// demo VNC server, whose picture is known pixel for pixel
// (internal/vncdemo/doc.go): the console connects, shows that picture at its
// size, sends keys and clicks, logs in with a password, and tells the user
// when the VNC server goes away.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  noBrowser, canvasInfo, launchBrowser, openPage, waitForPixels, waitForState, withSteps,
} from './lib/browser.js';
import { newToken, startCaddy } from './lib/caddy.js';
import { tempDir } from './lib/processes.js';
import { startVncdemo } from './lib/targets.js';

const W = 800;
const H = 600;
const background = [32, 32, 32];
const corners = [
  { x: 5, y: 5, rgb: [255, 0, 0] },
  { x: W - 6, y: 5, rgb: [0, 255, 0] },
  { x: 5, y: H - 6, rgb: [0, 0, 255] },
  { x: W - 6, y: H - 6, rgb: [255, 255, 255] },
];
const indicator = { x: 64, y: 16 };
const black = [0, 0, 0];
const yellow = [255, 255, 0];
const magenta = [255, 0, 255];

describe('console to vncdemo', { timeout: 240_000, skip: noBrowser }, () => {
  const token = newToken();
  const lockedToken = newToken();
  const lostToken = newToken();
  const socketToken = newToken();
  const password = 'e2e-secret';
  const socketDir = tempDir('socket');
  let demo;
  let locked;
  let lost;
  let onSocket;
  let caddy;
  let browser;

  before(async () => {
    demo = await startVncdemo();
    locked = await startVncdemo({ password });
    lost = await startVncdemo();
    onSocket = await startVncdemo({ unix: path.join(socketDir, 'vnc.sock') });
    caddy = await startCaddy({
      [token]: demo.addr, [lockedToken]: locked.addr, [lostToken]: lost.addr, [socketToken]: onSocket.addr,
    });
    browser = await launchBrowser();
  }, { timeout: 90_000 });

  after(async () => {
    await browser?.close();
    await caddy?.stop();
    await Promise.all([demo, locked, lost, onSocket].map((p) => p?.stop()));
    fs.rmSync(socketDir, { recursive: true, force: true });
  }, { timeout: 60_000 });

  // open runs body(step, page, tab) on a new tab showing the console for
  // token, and closes the tab afterwards.
  async function open(t, consoleToken, body) {
    const tab = await openPage(browser);
    try {
      await withSteps(t, tab, async (step) => {
        await step('open the console page', () => tab.page.goto(`${caddy.origin}/?token=${encodeURIComponent(consoleToken)}`, { waitUntil: 'commit' }));
        await body(step, tab.page, tab);
      });
    } finally {
      await tab.page.close().catch(() => {});
    }
  }

  it('vncdemo: connects and shows the server picture at 800x600', { timeout: 60_000 }, async (t) => {
    await open(t, token, async (step, page, tab) => {
      const state = await step('page reports connected', () => waitForState(page, ['connected']));
      await step('framebuffer is the server size, 800x600', async () => {
        assert.equal(state.width, W);
        assert.equal(state.height, H);
        const canvas = await canvasInfo(page);
        assert.equal(canvas.width, W, 'canvas width');
        assert.equal(canvas.height, H, 'canvas height');
        assert.equal(canvas.box.width, W, 'canvas is not scaled');
        assert.equal(state.name, 'vncdemo');
      });
      await step('canvas shows the corner squares and the background', () =>
        waitForPixels(page, [...corners, { x: 400, y: 100, rgb: background }]));
      await step('the status line names the desktop and its size', async () => {
        const status = await page.locator('#status').textContent();
        assert.match(status, /Connected to vncdemo \(800×600\)/);
      });
      await step('the WebSocket upgrade was answered 101', async () => {
        const sockets = tab.websockets();
        assert.equal(sockets.length, 1);
        assert.equal(sockets[0].status, 101);
      });
    });
  });

  it('vncdemo: a click and a key press change the remote picture', { timeout: 60_000 }, async (t) => {
    await open(t, token, async (step, page) => {
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('key indicator is black before any key', () =>
        waitForPixels(page, [{ ...indicator, rgb: black }, corners[0]]));
      const click = { x: 200, y: 450 };
      await step('click at (200,450) in the canvas', async () => {
        const { box } = await canvasInfo(page);
        await page.mouse.click(box.x + click.x + 0.5, box.y + click.y + 0.5);
      });
      await step('a 9x9 magenta square appears centred on the click', () =>
        waitForPixels(page, [
          { ...click, rgb: magenta },
          { x: click.x - 4, y: click.y - 4, rgb: magenta },
          { x: click.x + 4, y: click.y + 4, rgb: magenta },
          { x: click.x + 6, y: click.y, rgb: background },
          { x: click.x, y: click.y - 6, rgb: background },
        ]));
      await step('press a key', () => page.keyboard.press('a'));
      await step('key indicator turns yellow', () => waitForPixels(page, [{ ...indicator, rgb: yellow }]));
      await step('Ctrl-Alt-Del button sends keys and the session stays up', async () => {
        await page.locator('#ctrl-alt-del').click();
        const s = await waitForState(page, ['connected'], 2000);
        assert.equal(s.state, 'connected');
      });
    });
  });

  it('vncdemo on a Unix socket: connects and shows the picture', { timeout: 60_000 }, async (t) => {
    await open(t, socketToken, async (step, page) => {
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('canvas shows the corner squares', () => waitForPixels(page, corners));
    });
  });

  it('vncdemo: asks for the VNC password and connects with it', { timeout: 60_000 }, async (t) => {
    await open(t, lockedToken, async (step, page) => {
      await step('page asks for the password', () => waitForState(page, ['password']));
      await step('enter the password', async () => {
        await page.locator('#password').fill(password);
        await page.locator('#credentials button[type=submit]').click();
      });
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('canvas shows the corner squares', () => waitForPixels(page, corners));
    });
  });

  it('vncdemo: a wrong VNC password is reported as an authentication failure', { timeout: 60_000 }, async (t) => {
    await open(t, lockedToken, async (step, page) => {
      await step('page asks for the password', () => waitForState(page, ['password']));
      await step('enter a wrong password', async () => {
        await page.locator('#password').fill('not-the-password');
        await page.locator('#credentials button[type=submit]').click();
      });
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected']));
      assert.match(state.reason, /^Authentication failed/);
    });
  });

  it('vncdemo: the VNC server going away mid-session is shown to the user', { timeout: 60_000 }, async (t) => {
    await open(t, lostToken, async (step, page, tab) => {
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('canvas shows the picture', () => waitForPixels(page, corners));
      await step('stop the VNC server', () => lost.stop());
      const state = await step('page reports disconnected with a reason', () => waitForState(page, ['disconnected'], 10_000));
      await step('the reason says the remote machine ended the session', async () => {
        assert.equal(state.closeCode, 1000, 'the proxy closes with 1000 when the VNC server closed');
        assert.equal(state.reason, 'Disconnected: the remote machine ended the session.');
        assert.equal(await page.locator('#status').textContent(), state.reason);
      });
      await step('reconnecting fails promptly with a clear reason', async () => {
        await page.locator('#reconnect').click();
        const again = await waitForState(page, ['disconnected'], 10_000);
        assert.match(again.reason, /^Could not connect/);
        const sockets = tab.websockets();
        assert.equal(sockets.length, 2);
        assert.match(sockets[1].error, /Unexpected response code: 502/, 'a target that refuses is a 502');
      });
    });
  });

  it('Caddy logs never contain a console token', () => {
    const logs = caddy.logs();
    assert.match(logs, /websockify/, 'the access log records the WebSocket requests');
    for (const [name, tok] of Object.entries({ token, lockedToken, lostToken, socketToken })) {
      assert.ok(!logs.includes(tok), `Caddy's logs contain the token ${name}`);
    }
  });

  // Last: it stops this suite's Caddy.
  it('Caddy stopping ends live consoles with 1001 and the page says so', { timeout: 60_000 }, async (t) => {
    await open(t, token, async (step, page) => {
      await step('page reports connected', () => waitForState(page, ['connected']));
      await step('canvas shows the picture', () => waitForPixels(page, corners));
      await step('stop Caddy', () => caddy.proc.stop(15_000), 20_000);
      const state = await step('page reports disconnected', () => waitForState(page, ['disconnected'], 10_000));
      assert.equal(state.closeCode, 1001, 'close code');
      assert.equal(state.reason, 'Disconnected: the console proxy is shutting down or restarting.');
    });
  });
});
