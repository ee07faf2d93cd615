// mcpgate interop, issue 21.7: a real browser (Debian's headless Chromium, driven by
// playwright-core) calls an MCP tool through the gateway with fetch and a token, from a page
// served on an allowed origin. Authorization makes every call a CORS request with a preflight,
// which the gateway must answer itself; the session id and the 401 challenge must be readable
// by the page. A page on another origin must fail, and nothing of its calls reach the upstream.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { ROUTE_SCOPE, runGateway, startAuthServer, startMcpServer } from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// run.sh sets this when chromium is missing and could not be installed (never in CI).
const SKIP = process.env.MCPGATE_SKIP_BROWSER;
// The flags that work on this kind of machine (no network beyond loopback, run as root).
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** The page: reads the gateway URL and token from its fragment, runs MCP over fetch. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>mcpgate browser client</title>
<script>
const out = {};
const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: {
  protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '1' } } };
async function call(url, headers, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json',
    accept: 'application/json, text/event-stream', ...headers }, body: JSON.stringify(body) });
  return { status: r.status, sid: r.headers.get('mcp-session-id'),
    www: r.headers.get('www-authenticate'), text: await r.text() };
}
async function run() {
  const { url, token } = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  try { out.noToken = await call(url, {}, init); } catch (e) { out.noToken = { error: String(e) }; }
  try {
    const auth = { authorization: 'Bearer ' + token };
    out.init = await call(url, auth, init);
    const session = { ...auth, 'mcp-session-id': out.init.sid, 'mcp-protocol-version': '2025-06-18' };
    out.initialized = await call(url, session, { jsonrpc: '2.0', method: 'notifications/initialized' });
    out.call = await call(url, session, { jsonrpc: '2.0', id: 2, method: 'tools/call',
      params: { name: 'echo', arguments: { message: 'hello from the browser' } } });
  } catch (e) { out.error = String(e); }
  window.__result = out;
}
run();
</script>`;

/** A server for the page, on its own port: its origin is http://127.0.0.1:<port>. */
async function servePage() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(PAGE);
  });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

let as; let mcp; let gw; let allowed; let other; let browser; let profile;

before(async () => {
  if (SKIP) return;
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (run tests/interop/run.sh, which installs it)`);
  as = await startAuthServer();
  mcp = await startMcpServer();
  allowed = await servePage();
  other = await servePage();
  gw = await runGateway({ bin: BIN, issuer: as.issuer, routes: `
  - name: mcp
    path_prefix: /mcp
    upstream: ${mcp.origin}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    allowed_origins: [${allowed.origin}]
` });
  profile = mkdtempSync(join(tmpdir(), 'mcpgate-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000,
  });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await gw?.stop();
  await Promise.allSettled([mcp?.close(), as?.close(), allowed?.close(), other?.close()]);
  if (profile) rmSync(profile, { recursive: true, force: true });
}, { timeout: 20_000 });

/** Open the page on `origin` and return what its script found. */
async function runPage(origin, token) {
  const page = await browser.newPage();
  try {
    const hash = encodeURIComponent(JSON.stringify({ url: gw.mcpUrl, token }));
    await page.goto(`${origin}/#${hash}`, { timeout: 10_000 });
    await page.waitForFunction(() => window.__result, null, { timeout: 15_000 });
    return await page.evaluate(() => window.__result);
  } finally {
    await page.close();
  }
}

/** The JSON-RPC message of an MCP answer (JSON or one SSE `message` event). */
function rpc(text) {
  const data = text.split('\n').find((l) => l.startsWith('data: '));
  return JSON.parse(data ? data.slice(6) : text);
}

test('a page on an allowed origin calls a tool through the gateway', { skip: SKIP }, async () => {
  const token = (await as.getToken({ resource: gw.resource })).access_token;
  const before = mcp.requests.length;
  const r = await runPage(allowed.origin, token);
  const ctx = JSON.stringify(r, null, 1);
  assert.equal(r.error, undefined, ctx);
  // The 401 challenge is readable cross-origin, so discovery can start from it.
  assert.equal(r.noToken.status, 401, ctx);
  assert.match(r.noToken.www ?? '', /^Bearer resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\/mcp"/, ctx);
  assert.equal(JSON.parse(r.noToken.text).error, 'unauthorized', ctx);
  // initialize: the session id header is exposed to the page.
  assert.equal(r.init.status, 200, ctx);
  assert.ok(r.init.sid, `Mcp-Session-Id not readable by the page: ${ctx}`);
  assert.equal(r.initialized.status, 202, ctx);
  assert.equal(r.call.status, 200, ctx);
  assert.deepEqual(rpc(r.call.text).result.content, [{ type: 'text', text: 'hello from the browser' }], ctx);
  // The preflights were the gateway's: only the three POSTs reached the MCP server.
  const seen = mcp.requests.slice(before);
  assert.deepEqual(seen.map((q) => q.method), ['POST', 'POST', 'POST'], JSON.stringify(seen));
  assert.ok(seen.every((q) => q.headers.origin === allowed.origin && !q.headers.authorization));
});

test('a page on another origin cannot call the gateway, and nothing reaches the upstream', { skip: SKIP }, async () => {
  const token = (await as.getToken({ resource: gw.resource })).access_token;
  const before = mcp.requests.length;
  const r = await runPage(other.origin, token);
  const ctx = JSON.stringify(r, null, 1);
  // The browser refuses to read the 403 (no CORS headers on it), so fetch fails.
  assert.match(r.noToken.error ?? '', /TypeError/, ctx);
  assert.match(r.error ?? '', /TypeError/, ctx);
  assert.equal(r.init, undefined, ctx);
  assert.equal(mcp.requests.length, before, 'a call from a disallowed origin reached the upstream');
  // What the browser got: the gateway's 403 JSON.
  const res = await fetch(gw.mcpUrl, {
    method: 'OPTIONS',
    headers: { origin: other.origin, 'access-control-request-method': 'POST' },
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).error, 'access_denied');
  assert.equal(res.headers.get('access-control-allow-origin'), null);
});
