// mcpgate interop, issue 17: the official TypeScript SDK v2 client (@modelcontextprotocol/client,
// pinned to MCP 2026-07-28) calling tools through a route with every 2026-07-28 check on
// (protocol_versions, Mcp-Param-* against learned schemas, filtered lists made private,
// structured denials, tool pinning), against a v2 server (@modelcontextprotocol/server
// createMcpHandler, modern only). The exchange must be 2026-07-28, not a fallback.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { McpServer, createMcpHandler, fromJsonSchema } from '@modelcontextprotocol/server';

import { ROUTE_SCOPE, ADMIN_SCOPE, runGateway, startAuthServer } from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const MODERN = '2026-07-28';
const T = { timeout: 10_000 };

let as; let up; let gw;

function buildServer() {
  const s = new McpServer({ name: 'v2-upstream', version: '2.0.0' });
  s.registerTool('lookup', {
    description: 'Look up a region',
    inputSchema: fromJsonSchema({
      type: 'object',
      properties: {
        region: { type: 'string', 'x-mcp-header': 'Region' },
        limit: { type: 'integer', 'x-mcp-header': 'Limit' },
      },
      required: ['region'],
    }),
  }, async ({ region, limit }) => ({ content: [{ type: 'text', text: `${region}:${limit}` }] }));
  s.registerTool('secret_wipe', {
    description: 'Wipe everything',
    inputSchema: fromJsonSchema({ type: 'object', properties: {} }),
  }, async () => ({ content: [{ type: 'text', text: 'wiped' }] }));
  return s;
}

/** The v2 handler (modern only) behind a node:http server at /mcp; records every request. */
async function startV2Server() {
  const handler = createMcpHandler(() => buildServer(), { legacy: 'reject' });
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    requests.push({ method: req.method, url: req.url, headers: { ...req.headers }, body: body.toString('utf8') });
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      for (const one of [v].flat()) headers.append(k, one);
    }
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method, headers, body: ['GET', 'HEAD'].includes(req.method) ? undefined : body,
    });
    const response = await handler.fetch(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (response.body) Readable.fromWeb(response.body).pipe(res);
    else res.end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

before(async () => {
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  as = await startAuthServer();
  up = await startV2Server();
  gw = await runGateway({ bin: BIN, issuer: as.issuer, routes: `
  - name: v2
    path_prefix: /v2
    rewrite_prefix: /mcp
    upstream: ${up.origin}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    tools:
      "secret_*": [${ADMIN_SCOPE}]
      "*": []
    filter_tools_list: true
    protocol_versions: ["${MODERN}"]
    structured_denials: true
    pin_tools: {mode: enforce}
` });
}, { timeout: 45_000 });

after(async () => {
  await gw?.stop();
  await Promise.allSettled([up?.close(), as?.close()]);
}, { timeout: 15_000 });

async function connect(scope) {
  const { access_token: token } = await as.getToken({ resource: `${gw.publicUrl}/v2`, scope });
  const client = new Client(
    { name: 'mcpgate-interop-v2', version: '1.0.0' },
    { versionNegotiation: { mode: { pin: MODERN } } },
  );
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.publicUrl}/v2`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return { client, token };
}

test('SDK v2 pinned to 2026-07-28 lists and calls tools through every 2026-07-28 check', async () => {
  const { client } = await connect(ROUTE_SCOPE);
  const before = up.requests.length;
  const { tools } = await client.listTools(undefined, T);
  assert.deepEqual(tools.map((t) => t.name), ['lookup'], 'secret_wipe is filtered for this caller');
  const r = await client.callTool({ name: 'lookup', arguments: { region: 'us west 1', limit: 7 } }, T);
  assert.equal(r.content[0].text, 'us west 1:7');
  // The exchange was 2026-07-28: the version header and body claim, and the mirrored
  // Mcp-Param headers, reached the upstream as the client sent them.
  const seen = up.requests.slice(before).filter((q) => q.method === 'POST');
  assert.ok(seen.length >= 2, JSON.stringify(seen));
  for (const q of seen) {
    assert.equal(q.headers['mcp-protocol-version'], MODERN, JSON.stringify(q.headers));
    assert.equal(JSON.parse(q.body).params._meta['io.modelcontextprotocol/protocolVersion'], MODERN);
    assert.notEqual(JSON.parse(q.body).method, 'initialize');
  }
  const call = seen.find((q) => JSON.parse(q.body).method === 'tools/call');
  assert.equal(call.headers['mcp-param-region'], 'us west 1');
  assert.equal(call.headers['mcp-param-limit'], '7');
  await client.close();
});

test('the filtered tools/list answer is private with a ttlMs bounded by the token', async () => {
  const { token } = await connect(ROUTE_SCOPE);
  const res = await fetch(`${gw.publicUrl}/v2`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`, 'content-type': 'application/json',
      accept: 'application/json, text/event-stream', 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list',
    },
    body: JSON.stringify({
      jsonrpc: '2.0', id: 1, method: 'tools/list',
      params: { _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {} } },
    }),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const json = text.trimStart().startsWith('{')
    ? JSON.parse(text)
    : JSON.parse(text.split('\n').find((l) => l.startsWith('data: ')).slice(6));
  assert.equal(json.result.cacheScope, 'private', text);
  assert.ok(typeof json.result.ttlMs === 'number' && json.result.ttlMs <= 300_000, text);
});

test('a mismatched Mcp-Param header and a denied tool are refused before the upstream', async () => {
  const { client, token } = await connect(ROUTE_SCOPE);
  await client.listTools(undefined, T);
  const before = up.requests.length;
  const post = (name, args, extra) => fetch(`${gw.publicUrl}/v2`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`, 'content-type': 'application/json',
      accept: 'application/json, text/event-stream', 'mcp-protocol-version': MODERN,
      'mcp-method': 'tools/call', 'mcp-name': name, ...extra,
    },
    body: JSON.stringify({
      jsonrpc: '2.0', id: 9, method: 'tools/call',
      params: { name, arguments: args, _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {} } },
    }),
    signal: AbortSignal.timeout(5000),
  });
  let res = await post('lookup', { region: 'us', limit: 7 }, { 'mcp-param-region': 'eu', 'mcp-param-limit': '7' });
  let body = await res.json();
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.equal(body.error.code, -32020);
  res = await post('secret_wipe', {}, {});
  body = await res.json();
  assert.equal(res.status, 403, JSON.stringify(body));
  assert.match(res.headers.get('www-authenticate') ?? '', /insufficient_scope/);
  assert.equal(body.result.isError, true);
  assert.equal(body.result._meta['io.modelcontextprotocol/authorization'].remediation, 'available');
  // The SDK sees the refusal as an error, never as success.
  await assert.rejects(client.callTool({ name: 'secret_wipe', arguments: {} }, T));
  assert.equal(up.requests.length, before, 'a refused request must not reach the upstream');
  await client.close();
});

test('a 2025 request is refused with UnsupportedProtocolVersion naming 2026-07-28', async () => {
  const { token } = await connect(ROUTE_SCOPE);
  const before = up.requests.length;
  const res = await fetch(`${gw.publicUrl}/v2`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list' }),
    signal: AbortSignal.timeout(5000),
  });
  const body = await res.json();
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.equal(body.error.code, -32022);
  assert.deepEqual(body.error.data.supported, [MODERN]);
  assert.equal(up.requests.length, before);
});
