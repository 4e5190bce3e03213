// One GET with Node's built-in clients, for clients_test.go.
// Usage: node node_client.js http|fetch <url> <timeout-ms, 0 for the default>
// Prints one JSON line: {interims, status, body, error}. interims lists the
// 1xx codes the client reported ('information' events; fetch has no way).
'use strict';
const http = require('http');

const [mode, url, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg) || 0;
const done = (o) => process.stdout.write(JSON.stringify(o) + '\n');

if (mode === 'http') {
  const interims = [];
  // agent: false, so no keep-alive socket holds the process open.
  const req = http.request(url, { agent: false }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c) => { body += c; });
    res.on('end', () => done({ interims, status: res.statusCode, body }));
  });
  req.on('information', (info) => interims.push(info.statusCode));
  if (timeoutMs) {
    // The socket's idle timeout: any bytes read, a 102 included, restart it.
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`socket idle for ${timeoutMs}ms`)));
  }
  req.on('error', (e) => done({ interims, status: 0, error: String(e.message || e) }));
  req.end();
} else if (mode === 'fetch') {
  (async () => {
    const opts = {};
    if (timeoutMs) {
      // Node's fetch is undici, whose Agent takes headersTimeout; Node does
      // not export the class, but the global dispatcher is one, created by
      // the first fetch.
      await fetch('data:,warm-up');
      const global = globalThis[Symbol.for('undici.globalDispatcher.1')];
      if (!global) {
        done({ interims: null, status: 0, error: 'no undici dispatcher to set headersTimeout on' });
        return;
      }
      opts.dispatcher = new global.constructor({ headersTimeout: timeoutMs });
    }
    try {
      const res = await fetch(url, opts);
      done({ interims: null, status: res.status, body: await res.text() });
    } catch (e) {
      done({ interims: null, status: 0, error: String((e.cause && e.cause.message) || e.message || e) });
    }
    if (opts.dispatcher) await opts.dispatcher.close();
  })();
} else {
  done({ status: 0, error: `unknown mode ${mode}` });
}
