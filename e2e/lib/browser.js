// Debian's Chromium driven by playwright-core, and helpers that read the
// console page's own state and its canvas.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { e2eDir, requireProgram, skipUnlessInstalled, tempDir } from './processes.js';

export const screenshotDir = path.join(e2eDir, 'screenshots');
console.log(`screenshots of every test: ${screenshotDir}`);

// noBrowser is the `skip` option of every suite: each needs Chromium.
export const noBrowser = skipUnlessInstalled('chromium', 'chromium');

const chromiumFlags = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// launchBrowser starts Chromium with a fresh profile; close() ends it and
// removes the profile.
export async function launchBrowser() {
  const executablePath = requireProgram('chromium', 'chromium');
  const profile = tempDir('chromium');
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: chromiumFlags,
      ignoreHTTPSErrors: true,
      viewport: { width: 1000, height: 720 },
      timeout: 30_000,
    });
  } catch (err) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  context.setDefaultTimeout(30_000);
  return {
    context,
    async close() {
      await Promise.race([context.close(), new Promise((r) => setTimeout(r, 10_000).unref())]);
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

// openPage opens a new tab that records its WebSocket handshakes (through
// the DevTools protocol, which sees the HTTP status of a refused upgrade)
// and its console messages.
export async function openPage(browser) {
  const page = await browser.context.newPage();
  const sockets = new Map();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send('Network.enable');
  const entry = (id) => {
    if (!sockets.has(id)) {
      sockets.set(id, { url: '', status: 0, error: '', closed: false });
    }
    return sockets.get(id);
  };
  cdp.on('Network.webSocketCreated', (e) => { entry(e.requestId).url = e.url; });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => { entry(e.requestId).status = e.response.status; });
  cdp.on('Network.webSocketFrameError', (e) => { entry(e.requestId).error = e.errorMessage; });
  cdp.on('Network.webSocketClosed', (e) => { entry(e.requestId).closed = true; });
  return {
    page,
    consoleLines,
    // websockets lists the page's WebSockets in creation order: url, the
    // handshake's status (101, or 0 when the upgrade was refused), the
    // browser's error text (a refusal reads "Unexpected response code:
    // 403"), and whether it has closed.
    websockets: () => [...sockets.values()].map((s) => ({ ...s })),
  };
}

// waitForState waits for the console page to publish one of the wanted
// states (use it rather than goto's load event: the page's module scripts
// may finish after that) (see demo/site/console.js) and returns its state object. Reaching
// "disconnected" when it is not wanted fails at once with the page's reason.
export async function waitForState(page, wanted, timeoutMs = 30_000) {
  return page.evaluate(({ wanted, timeoutMs }) => new Promise((resolve, reject) => {
    const check = (s) => {
      if (!s) {
        return false;
      }
      if (wanted.includes(s.state)) {
        finish(null, { ...s });
        return true;
      }
      if (s.state === 'disconnected') {
        finish(new Error(`page is disconnected (${s.reason}) while waiting for ${wanted.join(' or ')}`));
        return true;
      }
      return false;
    };
    const onChange = (e) => check(e.detail);
    const timer = setTimeout(() => {
      finish(new Error(`page state is ${JSON.stringify(window.consoleState)} after ${timeoutMs} ms, wanted ${wanted.join(' or ')}`));
    }, timeoutMs);
    function finish(err, value) {
      clearTimeout(timer);
      document.removeEventListener('consolestatechange', onChange);
      err ? reject(err) : resolve(value);
    }
    document.addEventListener('consolestatechange', onChange);
    check(window.consoleState);
  }), { wanted, timeoutMs });
}

// waitForSize waits until the page reports this framebuffer size.
export async function waitForSize(page, width, height, timeoutMs = 10_000) {
  return page.evaluate(({ width, height, timeoutMs }) => new Promise((resolve, reject) => {
    const matches = (s) => s && s.state === 'connected' && s.width === width && s.height === height;
    if (matches(window.consoleState)) {
      resolve();
      return;
    }
    const onChange = (e) => {
      if (matches(e.detail)) {
        clearTimeout(timer);
        document.removeEventListener('consolestatechange', onChange);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      document.removeEventListener('consolestatechange', onChange);
      reject(new Error(`page reports ${window.consoleState.width}x${window.consoleState.height}, not ${width}x${height}, after ${timeoutMs} ms`));
    }, timeoutMs);
    document.addEventListener('consolestatechange', onChange);
  }), { width, height, timeoutMs });
}

// canvasInfo returns the remote screen canvas's size and its CSS box.
export async function canvasInfo(page) {
  return page.evaluate(() => {
    const c = document.querySelector('#screen canvas');
    if (!c) {
      return null;
    }
    const r = c.getBoundingClientRect();
    return { width: c.width, height: c.height, box: { x: r.x, y: r.y, width: r.width, height: r.height } };
  });
}

// pixel returns [r, g, b, a] of the canvas at framebuffer point (x, y).
export async function pixel(page, x, y) {
  return page.evaluate(({ x, y }) => {
    const c = document.querySelector('#screen canvas');
    return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
  }, { x, y });
}

// waitForPixels waits until every listed canvas point has its colour
// ({x, y, rgb: [r, g, b]}); the canvas changes without page events, so this
// polls on animation frames.
export async function waitForPixels(page, points, timeoutMs = 10_000) {
  try {
    await page.waitForFunction((points) => {
      const c = document.querySelector('#screen canvas');
      if (!c) {
        return false;
      }
      const ctx = c.getContext('2d');
      return points.every(({ x, y, rgb }) => {
        const d = ctx.getImageData(x, y, 1, 1).data;
        return d[0] === rgb[0] && d[1] === rgb[1] && d[2] === rgb[2] && d[3] === 255;
      });
    }, points, { timeout: timeoutMs, polling: 'raf' });
  } catch (err) {
    const actual = [];
    for (const p of points) {
      const got = await pixel(page, p.x, p.y).catch(() => null);
      actual.push(`(${p.x},${p.y}) is ${got ? `rgba(${got})` : 'unreadable'}, want rgb(${p.rgb})`);
    }
    throw new Error(`canvas pixels not as expected after ${timeoutMs} ms: ${actual.join('; ')}`, { cause: err });
  }
}

// colourCount returns how many different opaque colours the canvas has
// (capped at limit) and how many pixels are still transparent, i.e. never
// drawn by noVNC.
export async function colourCount(page, limit = 16) {
  return page.evaluate((limit) => {
    const c = document.querySelector('#screen canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    let transparent = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] !== 255) {
        transparent++;
        continue;
      }
      if (seen.size < limit) {
        seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      }
    }
    return { colours: seen.size, transparent };
  }, limit);
}

// screenshot saves the page as e2e/screenshots/<name>.png and returns the
// path, or '' when the page could not be captured.
export async function screenshot(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  const file = path.join(screenshotDir, `${slug(name)}.png`);
  try {
    await page.screenshot({ path: file, timeout: 10_000 });
    return file;
  } catch {
    return '';
  }
}

function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

// withSteps runs body(step) for a test on a tab from openPage;
// step(name, fn, timeoutMs) runs one named step with a time limit. The page
// is photographed at the end, passed or failed; a failure names the step,
// the screenshot and the page's last console lines.
export async function withSteps(t, tab, body) {
  const { page } = tab;
  let current = '(setup)';
  const step = async (name, fn, timeoutMs = 45_000) => {
    current = name;
    let timer;
    try {
      return await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`step took longer than ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    await body(step);
  } catch (err) {
    const file = await screenshot(page, t.name);
    const lines = tab.consoleLines.slice(-10).map((l) => `    ${l}`).join('\n');
    throw new Error(`step "${current}" failed: ${err.message}\n  screenshot: ${file || '(none)'}\n  page console:\n${lines}`, { cause: err });
  }
  await screenshot(page, t.name);
}

// waitForPicture waits until noVNC has drawn every canvas pixel (none left
// transparent) in at least minColours different colours, and returns the
// last colourCount result.
export async function waitForPicture(page, minColours, timeoutMs) {
  try {
    await page.waitForFunction((minColours) => {
      const c = document.querySelector('#screen canvas');
      if (!c || c.width === 0 || c.height === 0) {
        return false;
      }
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] !== 255) {
          return false;
        }
        if (seen.size < minColours) {
          seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
      }
      return seen.size >= minColours;
    }, minColours, { timeout: timeoutMs, polling: 250 });
  } catch (err) {
    const got = await colourCount(page).catch(() => null);
    throw new Error(`canvas not drawn in ${minColours}+ colours after ${timeoutMs} ms: ${JSON.stringify(got)}`, { cause: err });
  }
  return colourCount(page);
}

// canvasHash is a hash of every pixel of the page's #screen canvas, with
// its size.
export async function canvasHash(page) {
  return page.evaluate(() => {
    const c = document.querySelector('#screen canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 0x811c9dc5;
    for (let i = 0; i < d.length; i++) {
      h = Math.imul(h ^ d[i], 0x01000193);
    }
    return `${c.width}x${c.height}:${(h >>> 0).toString(16)}`;
  });
}
