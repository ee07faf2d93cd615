// mcpgate interop, issue 16: RFC 8693 token exchange at a real AS. oidc-provider performs the
// exchange (its token endpoint, client authentication by RFC 7523 client assertion, issuance,
// signing and JWKS; the exchange grant itself is registered with its registerGrantType API,
// see helpers.js), the official MCP SDK client calls a tool through the gateway, and the
// upstream (the SDK server's whoami tool, which returns the headers it received) gets a token
// that verifies with the AS's keys, whose `aud` is the upstream API's resource, `sub` the
// original subject and `act.sub` the gateway — never the client's token.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';

import {
  CLIENT_ID, EXCHANGER_ID, ROUTE_SCOPE, runGateway, startAuthServer, startMcpServer,
} from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const T = { timeout: 10_000 };

let as; let mcp; let gw; let dir; let apiResource; let actorResource;

before(async () => {
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  // The gateway's key for private_key_jwt: PKCS#8 PEM for the gateway, the public JWK for the AS.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  dir = mkdtempSync(join(tmpdir(), 'mcpgate-exchange-'));
  const keyFile = join(dir, 'exchanger.pem');
  writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'exchanger-1', alg: 'ES256', use: 'sig' };
  as = await startAuthServer({ exchangerJwks: { keys: [jwk] } });
  mcp = await startMcpServer();
  apiResource = `${mcp.origin}/api`;
  actorResource = `${as.issuer}/actor`;
  gw = await runGateway({ bin: BIN, issuer: as.issuer, routes: `
  - name: xch
    path_prefix: /xch
    rewrite_prefix: /mcp
    upstream: ${mcp.origin}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    upstream_auth:
      mode: token_exchange
      issuer: oidc
      resource: ${apiResource}
      scopes: [other:scope]
      client_id: ${EXCHANGER_ID}
      private_key_jwt: {key_file: ${keyFile}, alg: ES256, kid: exchanger-1}
      actor: {resource: '${actorResource}', scopes: [other:scope]}
` });
}, { timeout: 45_000 });

after(async () => {
  await gw?.stop();
  await Promise.allSettled([mcp?.close(), as?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
}, { timeout: 15_000 });

function sdk(token) {
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.publicUrl}/xch`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  return { client: new Client({ name: 'mcpgate-exchange-interop', version: '1.0.0' }), transport };
}

test('the upstream receives a token exchanged at oidc-provider, never the client\'s', async () => {
  const { access_token: clientToken } = await as.getToken({ resource: `${gw.publicUrl}/xch` });
  const seenBefore = mcp.requests.length;
  const { client, transport } = sdk(clientToken);
  await client.connect(transport, T);
  try {
    const tools = await client.listTools(undefined, T);
    assert.ok(tools.tools.some((t) => t.name === 'whoami'));
    const r = await client.callTool({ name: 'whoami', arguments: {} }, undefined, T);
    const headers = JSON.parse(r.content.find((c) => c.type === 'text').text);
    const upstreamToken = headers.authorization?.replace(/^Bearer /, '');
    assert.ok(upstreamToken, `no Authorization upstream: ${JSON.stringify(headers)}`);
    assert.notEqual(upstreamToken, clientToken, 'the client\'s token was passed through');

    // It verifies with the AS's keys and says: for the API, the same subject, the gateway acting.
    const jwks = createRemoteJWKSet(new URL(`${as.issuer}/jwks`));
    const { payload, protectedHeader } = await jwtVerify(upstreamToken, jwks, {
      issuer: as.issuer, audience: apiResource, typ: 'at+jwt',
    });
    assert.equal(protectedHeader.alg, 'ES256');
    assert.equal(payload.sub, CLIENT_ID, 'sub is the original subject');
    assert.deepEqual(payload.act, { sub: EXCHANGER_ID }, 'act names the gateway');
    assert.equal(payload.client_id, EXCHANGER_ID);
    assert.equal(payload.scope, 'other:scope');
    assert.equal(payload.gty, undefined); // oidc-provider keeps gty internal

    // Every request of the session carried the exchanged token; none the client's.
    const sent = mcp.requests.slice(seenBefore);
    assert.ok(sent.length >= 3, `${sent.length} requests`);
    for (const req of sent) {
      assert.equal(req.headers.authorization, `Bearer ${upstreamToken}`);
      assert.equal(req.headers.dpop, undefined);
    }
    // One exchange for the whole session (cached), with the gateway's own token as actor.
    assert.equal(as.exchanges.length, 1, `${as.exchanges.length} exchanges`);
    const x = as.exchanges[0];
    assert.equal(x.subject, clientToken);
    assert.equal(x.resource, apiResource);
    assert.equal(x.scope, 'other:scope');
    const actor = await jwtVerify(x.actor, jwks, { issuer: as.issuer, audience: actorResource });
    assert.equal(actor.payload.client_id, EXCHANGER_ID);
  } finally {
    await client.close();
  }
  // The token never reached the gateway's log.
  assert.ok(!gw.log().includes(clientToken), 'client token in the gateway log');
  assert.ok(!gw.log().includes(as.exchanges[0].token), 'exchanged token in the gateway log');
});

test('an exchange the AS refuses is a 403 naming the route and the code, nothing forwarded', async () => {
  // The client's token is good (the gateway accepts it), but the route asks the AS for a
  // scope the API's resource does not have: oidc-provider's grant answers invalid_scope.
  const bad = await runGateway({ bin: BIN, issuer: as.issuer, routes: `
  - name: refused
    path_prefix: /xch
    rewrite_prefix: /mcp
    upstream: ${mcp.origin}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    upstream_auth:
      mode: token_exchange
      issuer: oidc
      resource: ${apiResource}
      scopes: [no-such-scope]
      client_id: ${EXCHANGER_ID}
      private_key_jwt: {key_file: ${join(dir, 'exchanger.pem')}, alg: ES256, kid: exchanger-1}
` });
  try {
    const { access_token: t } = await as.getToken({ resource: `${bad.publicUrl}/xch` });
    const before = mcp.requests.length;
    const r = await fetch(`${bad.publicUrl}/xch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.error, 'access_denied');
    assert.equal(body.route, 'refused');
    assert.equal(body.as_error, 'invalid_scope');
    assert.ok(!JSON.stringify(body).includes('not allowed for this resource'), 'AS text echoed');
    assert.equal(mcp.requests.length, before, 'something reached the upstream');
  } finally {
    await bad.stop();
  }
});
