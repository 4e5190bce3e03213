// Follows an async job's status monitor with a browser's EventSource, for
// progress_clients_test.go: Debian's Chromium over the DevTools protocol,
// through puppeteer-core, which never downloads a browser.
//
// Usage: node eventsource.js <executable> <page-url> <monitor-path> <profile-dir>
//
// It loads <page-url> (a page of the same origin as the monitor), opens
// new EventSource(<monitor-path>) in it and prints one JSON line per event
// the page receives: {"data": <the event's data, parsed>}. On a terminal
// status the page closes the EventSource, as a page must (EventSource
// reconnects to a stream the server ended), and it prints {"done": true}.
'use strict';
const puppeteer = require('puppeteer-core');

const [executablePath, pageURL, monitor, profile] = process.argv.slice(2);
const print = (o) => process.stdout.write(JSON.stringify(o) + '\n');

(async () => {
  const browser = await puppeteer.launch({
    executablePath, headless: true, userDataDir: profile, protocolTimeout: 90000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    print({ version: await browser.version() });
    const page = await browser.newPage();
    let finished;
    const done = new Promise((resolve) => { finished = resolve; });
    await page.exposeFunction('report', (o) => {
      print(o);
      if (o.done || o.error) finished();
    });
    await page.goto(pageURL, { waitUntil: 'load', timeout: 30000 });
    await page.evaluate((monitor) => {
      const es = new EventSource(monitor);
      es.onmessage = (ev) => {
        const status = JSON.parse(ev.data);
        window.report({ data: status });
        if (status.status !== 'running') {
          es.close();
          window.report({ done: true });
        }
      };
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) window.report({ error: 'EventSource closed' });
      };
    }, monitor);
    await done;
  } finally {
    await browser.close();
  }
})().catch((e) => {
  print({ fatal: String(e && e.stack || e) });
  process.exit(1);
});
