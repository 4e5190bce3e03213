// Drives a headless browser for browsers_test.go through puppeteer-core:
// Debian's Chromium over the DevTools protocol, Debian's Firefox ESR over
// WebDriver BiDi. Never downloads a browser.
//
// Usage: node browser.js chrome|firefox <executable> <origin> <profile-dir> <tag>
//
// It loads <origin>/fast, then runs each task against a slow URL of the
// same origin. Before each task it prints {"ready": task} and waits for a
// line on standard input, so that the test can tell which 102s on the
// wire belong to which task; after it, one JSON line with what the page
// saw. The URLs carry ?tag=<tag>-<task>, which the test finds in Caddy's
// access log.
'use strict';
const readline = require('readline');
const puppeteer = require('puppeteer-core');

const [kind, executablePath, origin, profile, tag] = process.argv.slice(2);
const print = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// What the page itself can see of a finished request: the Resource Timing
// entry (its protocol, its status, and in Chromium the time of a first
// interim response).
function timingOf(url) {
  const e = performance.getEntriesByName(url).pop();
  if (!e) return null;
  return {
    protocol: e.nextHopProtocol,
    responseStatus: e.responseStatus ?? null,
    firstInterimResponseStart: e.firstInterimResponseStart ?? null,
  };
}

const tasks = {
  // fetch() of a slow resource; then of a fast one, whose Resource Timing
  // entry shows what no interim response looks like.
  async fetch(page, url) {
    return page.evaluate(async (url, timingSrc) => {
      const timingOf = eval(timingSrc);
      const t0 = performance.now();
      try {
        const r = await fetch(url);
        const body = await r.text();
        const ms = performance.now() - t0;
        const fast = new URL('/fast?' + new URL(url).search.slice(1) + '-control', url).href;
        await (await fetch(fast)).text();
        return { status: r.status, body, ms, timing: timingOf(url), control: timingOf(fast) };
      } catch (e) {
        return { error: String(e), ms: performance.now() - t0 };
      }
    }, url, `(${timingOf})`);
  },

  // XMLHttpRequest of a slow resource, with the status the script can read
  // at every event: a 102 shown to script would appear here.
  async xhr(page, url) {
    return page.evaluate((url, timingSrc) => new Promise((resolve) => {
      const timingOf = eval(timingSrc);
      const t0 = performance.now();
      const seen = [];
      const x = new XMLHttpRequest();
      const note = (ev) => seen.push(`${ev}:${x.readyState}:${x.status}`);
      x.onreadystatechange = () => note('readystatechange');
      x.onprogress = () => note('progress');
      x.onload = () => resolve({ status: x.status, body: x.responseText, statuses: seen, ms: performance.now() - t0, timing: timingOf(url) });
      x.onerror = () => resolve({ error: 'XHR error', statuses: seen, ms: performance.now() - t0 });
      x.open('GET', url);
      x.send();
    }), url, `(${timingOf})`);
  },

  // A top-level navigation to a slow page.
  async navigation(page, url) {
    const t0 = Date.now();
    try {
      const res = await page.goto(url, { waitUntil: 'load', timeout: 60000 });
      const body = await page.evaluate(() => document.body.innerText);
      const timing = await page.evaluate(() => {
        const e = performance.getEntriesByType('navigation')[0];
        return { protocol: e.nextHopProtocol, responseStatus: e.responseStatus ?? null,
          firstInterimResponseStart: e.firstInterimResponseStart ?? null };
      });
      return { status: res.status(), body: body + '\n', ms: Date.now() - t0, timing };
    } catch (e) {
      return { error: String(e), ms: Date.now() - t0 };
    }
  },

  // A form POST with a body that navigates to the slow answer.
  async form(page, url) {
    await page.evaluate((url) => {
      document.body.innerHTML = `<form method="post" action="${url}">` +
        '<input name="note" value="posted from a form"><button>send</button></form>';
    }, url);
    const t0 = Date.now();
    try {
      const [res] = await Promise.all([
        page.waitForNavigation({ waitUntil: 'load', timeout: 60000 }),
        page.evaluate(() => document.querySelector('form').submit()),
      ]);
      const body = await page.evaluate(() => document.body.innerText);
      return { status: res ? res.status() : 0, body: body + '\n', ms: Date.now() - t0 };
    } catch (e) {
      return { error: String(e), ms: Date.now() - t0 };
    }
  },

  // A WebDAV PROPFIND from fetch(), as a WebDAV web client sends it.
  async propfind(page, url) {
    return page.evaluate(async (url) => {
      const t0 = performance.now();
      try {
        const r = await fetch(url, {
          method: 'PROPFIND',
          headers: { Depth: '0', 'Content-Type': 'application/xml' },
          body: '<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>',
        });
        return { status: r.status, body: await r.text(), ms: performance.now() - t0 };
      } catch (e) {
        return { error: String(e), ms: performance.now() - t0 };
      }
    }, url);
  },
};

(async () => {
  const common = { executablePath, headless: true, userDataDir: profile, acceptInsecureCerts: true, protocolTimeout: 90000 };
  const browser = kind === 'firefox'
    ? await puppeteer.launch({
      ...common, browser: 'firefox',
      // Caddy offers HTTP/3 in Alt-Svc; the suite measures HTTP/1.1 and
      // HTTP/2 only.
      extraPrefsFirefox: { 'network.http.http3.enable': false },
    })
    : await puppeteer.launch({
      ...common,
      // Root has no sandbox here; the rest keeps Chromium off the network
      // and from racing to HTTP/3.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--ignore-certificate-errors'],
    });
  try {
    print({ version: await browser.version() });
    const page = await browser.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    for (const [name, run] of Object.entries(tasks)) {
      // Each task starts from a fast page of the origin, so that fetch
      // and XHR are same-origin.
      await page.goto(`${origin}/fast`, { waitUntil: 'load', timeout: 30000 });
      print({ ready: name });
      if ((await lines.next()).done) return;
      errors.length = 0;
      const result = await run(page, `${origin}/plain/slow?tag=${tag}-${name}`);
      print({ task: name, ...result, consoleErrors: [...errors] });
    }
  } finally {
    await browser.close();
    lines.return?.();
    process.stdin.destroy();
  }
})().catch((e) => {
  print({ fatal: String(e && e.stack || e) });
  process.exit(1);
});
