// mcpgate interop: oidc-provider (AS) + official MCP TypeScript SDK (server and client) through the gateway.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractWWWAuthenticateParams,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

import { setTimeout as sleep } from 'node:timers/promises';

import {
  CLIENT_ID, CLIENT_SECRET, DPOP_PATH, INTROSPECTION_CACHE_SECONDS, OPAQUE_RESOURCE_PATH, ROUTE_SCOPE, athOf,
  dpopFetch, dpopKey, dpopProof, htuOf, jwtParts, startAuthServer, startGateway, startMcpServer,
} from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const T = { timeout: 10_000 }; // per SDK request
const HTTP_TIMEOUT = 5_000;

let as; let mcp; let gw;

before(async () => {
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  as = await startAuthServer();
  mcp = await startMcpServer();
  gw = await startGateway({ bin: BIN, issuer: as.issuer, upstream: mcp.origin });
}, { timeout: 45_000 });

after(async () => {
  await gw?.stop();
  await Promise.allSettled([mcp?.close(), as?.close()]);
}, { timeout: 15_000 });

const prmUrl = () => `${gw.publicUrl}/.well-known/oauth-protected-resource/mcp`;

function sdkClient(headers, authProvider) {
  const transport = new StreamableHTTPClientTransport(new URL(gw.mcpUrl), {
    requestInit: { headers: headers ?? {} },
    authProvider,
  });
  return { client: new Client({ name: 'mcpgate-interop', version: '1.0.0' }), transport };
}

/** A raw MCP initialize POST to the gateway (to `url`, default the /mcp route). */
function rawInitialize(extraHeaders = {}, url = gw.mcpUrl) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extraHeaders },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    }),
    signal: AbortSignal.timeout(HTTP_TIMEOUT),
  });
}

function textOf(result) {
  return result.content.find((c) => c.type === 'text')?.text;
}

/** Assert a refusal, and that nothing reached the upstream while making it. */
async function expectRefused(send, status, check) {
  const before = mcp.requests.length;
  const res = await send();
  const body = await res.text();
  const www = res.headers.get('www-authenticate') ?? '';
  const ctx = `HTTP ${res.status}, WWW-Authenticate: ${www}, body: ${body}`;
  assert.equal(res.status, status, ctx);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, ctx);
  check({ res, www, json: JSON.parse(body), ctx });
  assert.equal(mcp.requests.length, before, 'a refused request must not reach the upstream');
}

test('SDK client with an oidc-provider token lists and calls tools through the gateway', { timeout: 30_000 }, async () => {
  const token = await as.getToken({ resource: gw.resource, scope: ROUTE_SCOPE });
  const { header, payload } = jwtParts(token.access_token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(payload.aud, gw.resource);
  assert.equal(payload.scope, ROUTE_SCOPE);

  const seenBefore = mcp.requests.length;
  const { client, transport } = sdkClient({ Authorization: `Bearer ${token.access_token}` });
  await client.connect(transport, T);
  try {
    const { tools } = await client.listTools({}, T);
    assert.deepEqual(tools.map((t) => t.name).sort(), ['add', 'echo', 'whoami']);
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: 'héllo' } }, undefined, T)), 'héllo');
    assert.equal(textOf(await client.callTool({ name: 'add', arguments: { a: 2, b: 40 } }, undefined, T)), '42');

    const seen = JSON.parse(textOf(await client.callTool({ name: 'whoami', arguments: {} }, undefined, T)));
    assert.equal(seen['x-auth-subject'], payload.sub, JSON.stringify(seen));
    assert.equal(seen['x-auth-client-id'], CLIENT_ID, JSON.stringify(seen));
    assert.equal(seen['x-auth-scopes'], ROUTE_SCOPE, JSON.stringify(seen));
    assert.equal(seen['x-auth-issuer'], as.issuer, JSON.stringify(seen));
    assert.equal(seen.authorization, undefined, 'Authorization must not be forwarded upstream');

    // A session id is not authentication: the same session without a token is refused.
    assert.ok(transport.sessionId, 'upstream session id should pass through the gateway');
    await expectRefused(() => rawInitialize({ 'mcp-session-id': transport.sessionId }), 401, () => {});

    await transport.terminateSession();
  } finally {
    await client.close();
  }

  const upstream = mcp.requests.slice(seenBefore);
  assert.ok(upstream.some((r) => r.method === 'GET'), 'the SSE GET stream should have been proxied');
  assert.ok(upstream.some((r) => r.method === 'DELETE'), 'the session DELETE should have been proxied');
  for (const r of upstream) {
    const where = `${r.method} ${r.url}: ${JSON.stringify(r.headers)}`;
    assert.equal(r.headers.authorization, undefined, where);
    assert.equal(r.headers['x-auth-subject'], payload.sub, where);
    assert.equal(r.headers['x-auth-client-id'], CLIENT_ID, where);
    assert.equal(r.headers['x-auth-scopes'], ROUTE_SCOPE, where);
  }
});

test('without a token: 401 challenge, and the AS can be discovered from it (SDK helpers)', { timeout: 30_000 }, async () => {
  const { client, transport } = sdkClient();
  await assert.rejects(client.connect(transport, T), (err) => err.code === 401);
  await client.close();

  let challenge;
  await expectRefused(() => rawInitialize(), 401, ({ res, www, json, ctx }) => {
    assert.match(www, /^Bearer /i, ctx);
    assert.ok(www.includes(`resource_metadata="${prmUrl()}"`), ctx);
    assert.ok(www.includes(`scope="${ROUTE_SCOPE}"`), ctx);
    assert.doesNotMatch(www, /error=/, ctx);
    assert.equal(json.error, 'unauthorized', ctx);
    challenge = extractWWWAuthenticateParams(res);
  });
  assert.equal(challenge.resourceMetadataUrl?.href, prmUrl());
  assert.equal(challenge.scope, ROUTE_SCOPE);

  // Raw GET of the PRM URL.
  const res = await fetch(prmUrl(), { signal: AbortSignal.timeout(HTTP_TIMEOUT) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const prm = await res.json();
  assert.equal(prm.resource, gw.resource, JSON.stringify(prm));
  assert.ok(prm.authorization_servers.includes(as.issuer), JSON.stringify(prm));
  assert.ok(prm.scopes_supported.includes(ROUTE_SCOPE), JSON.stringify(prm));
  assert.deepEqual(prm.bearer_methods_supported, ['header']);

  // The SDK's own discovery: from the challenge URL, and by path insertion from the server URL alone.
  const viaHeader = await discoverOAuthProtectedResourceMetadata(gw.mcpUrl, { resourceMetadataUrl: challenge.resourceMetadataUrl });
  const viaWellKnown = await discoverOAuthProtectedResourceMetadata(gw.mcpUrl);
  assert.deepEqual(viaHeader, prm);
  assert.deepEqual(viaWellKnown, prm);

  const asMeta = await discoverAuthorizationServerMetadata(prm.authorization_servers[0]);
  assert.equal(asMeta.issuer, as.issuer);
  assert.equal(asMeta.token_endpoint, `${as.issuer}/token`);
  const oidc = await (await fetch(`${prm.authorization_servers[0]}/.well-known/openid-configuration`, {
    signal: AbortSignal.timeout(HTTP_TIMEOUT),
  })).json();
  assert.equal(oidc.token_endpoint, asMeta.token_endpoint);
});

test('SDK ClientCredentialsProvider: 401 -> PRM -> AS metadata -> token -> tools, all by itself', { timeout: 30_000 }, async () => {
  const authProvider = new ClientCredentialsProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    scope: ROUTE_SCOPE,
    expectedIssuer: as.issuer,
  });
  const { client, transport } = sdkClient(undefined, authProvider);
  await client.connect(transport, T);
  try {
    const { tools } = await client.listTools({}, T);
    assert.ok(tools.some((t) => t.name === 'add'));
    const token = authProvider.tokens()?.access_token;
    assert.ok(token, 'the SDK should have obtained a token');
    assert.equal(jwtParts(token).payload.aud, gw.resource, 'the SDK should request the PRM resource');
    await transport.terminateSession();
  } finally {
    await client.close();
  }
});

test('token issued for another resource is refused with 401 invalid_token', { timeout: 20_000 }, async () => {
  const other = `${gw.publicUrl}/other`;
  const token = await as.getToken({ resource: other, scope: ROUTE_SCOPE });
  assert.equal(jwtParts(token.access_token).payload.aud, other);

  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token.access_token}` }), 401, ({ www, json, ctx }) => {
    assert.match(www, /^Bearer /i, ctx);
    assert.ok(www.includes('error="invalid_token"'), ctx);
    assert.ok(www.includes(`resource_metadata="${prmUrl()}"`), ctx);
    assert.equal(json.error, 'invalid_token', ctx);
  });

  const { client, transport } = sdkClient({ Authorization: `Bearer ${token.access_token}` });
  await assert.rejects(client.connect(transport, T), (err) => err.code === 401);
  await client.close();
});

test('token without the route scope is refused with 403 insufficient_scope', { timeout: 20_000 }, async () => {
  const token = await as.getToken({ resource: gw.resource, scope: 'other:scope' });
  assert.equal(jwtParts(token.access_token).payload.scope, 'other:scope');

  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token.access_token}` }), 403, ({ www, json, ctx }) => {
    assert.ok(www.includes('error="insufficient_scope"'), ctx);
    assert.ok(www.includes(`scope="${ROUTE_SCOPE}"`), ctx);
    assert.ok(www.includes(`resource_metadata="${prmUrl()}"`), ctx);
    assert.equal(json.error, 'insufficient_scope', ctx);
  });
});

test('opaque token (no resource indicator): accepted through the AS introspection endpoint, refused after revocation once the cache entry expires', { timeout: 40_000 }, async () => {
  const { access_token: token } = await as.getToken({ scope: ROUTE_SCOPE });
  assert.ok(!token.includes('.'), `without a resource indicator oidc-provider issues an opaque token: ${token}`);

  // The whole SDK flow works with it; the identity comes from the introspection answer.
  const seenBefore = mcp.requests.length;
  const { client, transport } = sdkClient({ Authorization: `Bearer ${token}` });
  await client.connect(transport, T);
  try {
    const { tools } = await client.listTools({}, T);
    assert.ok(tools.some((t) => t.name === 'whoami'));
    const seen = JSON.parse(textOf(await client.callTool({ name: 'whoami', arguments: {} }, undefined, T)));
    assert.equal(seen['x-auth-client-id'], CLIENT_ID, JSON.stringify(seen));
    assert.equal(seen['x-auth-scopes'], ROUTE_SCOPE, JSON.stringify(seen));
    assert.equal(seen['x-auth-issuer'], as.issuer, JSON.stringify(seen));
    assert.equal(seen['x-auth-method'], 'oauth', JSON.stringify(seen));
    assert.equal(seen['x-auth-subject'], undefined, 'client_credentials tokens have no sub');
    assert.equal(seen.authorization, undefined, 'Authorization must not be forwarded upstream');
    await transport.terminateSession();
  } finally {
    await client.close();
  }
  assert.ok(mcp.requests.length > seenBefore);

  // Let the entry from the session above expire, then cache a fresh answer at a known time.
  await sleep(INTROSPECTION_CACHE_SECONDS * 1000 + 300);
  const cachedAt = Date.now();
  const fresh = await rawInitialize({ authorization: `Bearer ${token}` });
  await fresh.text();
  assert.equal(fresh.status, 200);

  await as.revoke(token);
  // Within the cache bound the gateway still serves the cached answer (documented staleness)...
  const soon = await rawInitialize({ authorization: `Bearer ${token}` });
  await soon.text();
  if (Date.now() - cachedAt < INTROSPECTION_CACHE_SECONDS * 1000 - 500) {
    assert.equal(soon.status, 200, 'the cached answer is used until cache_max_seconds');
  }
  // ...and once the entry has expired, it asks the AS again and refuses the revoked token.
  await sleep(Math.max(0, cachedAt + INTROSPECTION_CACHE_SECONDS * 1000 + 300 - Date.now()));
  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token}` }), 401, ({ www, json, ctx }) => {
    assert.match(www, /^Bearer /i, ctx);
    assert.ok(www.includes('error="invalid_token"'), ctx);
    assert.ok(www.includes(`resource_metadata="${prmUrl()}"`), ctx);
    assert.equal(json.error, 'invalid_token', ctx);
  });
  assert.ok(!gw.log().includes(token), 'the token must never be logged');
});

test('opaque token bound to another resource is refused: a present aud is checked even with require_aud: false', { timeout: 20_000 }, async () => {
  const other = `${gw.publicUrl}${OPAQUE_RESOURCE_PATH}`;
  const { access_token: token } = await as.getToken({ resource: other, scope: ROUTE_SCOPE });
  assert.ok(!token.includes('.'), 'the AS issues opaque tokens for this resource');
  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token}` }), 401, ({ www, json, ctx }) => {
    assert.ok(www.includes('error="invalid_token"'), ctx);
    assert.equal(json.error, 'invalid_token', ctx);
  });
});


// ---------------------------------------------------------------------------------------------
// DPoP (RFC 9449): oidc-provider issues DPoP-bound JWTs; the gateway checks a proof per request.
// ---------------------------------------------------------------------------------------------

const dpopPrmUrl = () => `${gw.publicUrl}/.well-known/oauth-protected-resource${DPOP_PATH}`;

/** A DPoP-bound token for `resource` from oidc-provider, checked to be bound to `key`. */
async function boundToken(resource, key) {
  const tok = await as.getDpopToken({ resource, scope: ROUTE_SCOPE, key });
  assert.equal(tok.token_type, 'DPoP', JSON.stringify(tok));
  const { header, payload } = jwtParts(tok.access_token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(payload.aud, resource);
  assert.equal(payload.cnf?.jkt, key.jkt, 'the token must be bound to the proof key (cnf.jkt)');
  return { tok, token: tok.access_token, payload };
}

test('DPoP: oidc-provider issues a bound JWT after its nonce dance; the route metadata advertises DPoP', { timeout: 20_000 }, async () => {
  const key = await dpopKey();
  const { tok } = await boundToken(gw.dpopUrl, key);
  assert.ok(tok.asNonce, 'oidc-provider asked for its own nonce (use_dpop_nonce) before issuing');

  // PRM of the dpop: required route.
  const res = await fetch(dpopPrmUrl(), { signal: AbortSignal.timeout(HTTP_TIMEOUT) });
  assert.equal(res.status, 200);
  const prm = await res.json();
  assert.equal(prm.resource, gw.dpopUrl, JSON.stringify(prm));
  assert.ok(prm.authorization_servers.includes(as.issuer), JSON.stringify(prm));
  assert.equal(prm.dpop_bound_access_tokens_required, true, JSON.stringify(prm));
  assert.ok(Array.isArray(prm.dpop_signing_alg_values_supported), JSON.stringify(prm));
  assert.ok(prm.dpop_signing_alg_values_supported.includes('ES256'), JSON.stringify(prm));
  for (const alg of prm.dpop_signing_alg_values_supported) {
    assert.ok(!/^(none|HS\d+)$/.test(alg), `symmetric or none alg advertised: ${alg}`);
  }
  // The SDK finds the same document by path insertion.
  assert.deepEqual(await discoverOAuthProtectedResourceMetadata(gw.dpopUrl), prm);

  // The AS and the gateway share at least the algorithm the client uses.
  const asMeta = await discoverAuthorizationServerMetadata(as.issuer);
  assert.ok(asMeta.dpop_signing_alg_values_supported?.includes('ES256'), JSON.stringify(asMeta.dpop_signing_alg_values_supported));

  // The /mcp route allows DPoP (the default) but does not require it.
  const plain = await (await fetch(prmUrl(), { signal: AbortSignal.timeout(HTTP_TIMEOUT) })).json();
  assert.ok(plain.dpop_signing_alg_values_supported?.includes('ES256'), JSON.stringify(plain));
  assert.equal(plain.dpop_bound_access_tokens_required, undefined, JSON.stringify(plain));
});

test('DPoP: SDK client with a bound token and a fresh proof per request works through a dpop: required route', { timeout: 30_000 }, async () => {
  const key = await dpopKey();
  const { token, payload } = await boundToken(gw.dpopUrl, key);
  const dfetch = dpopFetch(key, token);

  const seenBefore = mcp.requests.length;
  const transport = new StreamableHTTPClientTransport(new URL(gw.dpopUrl), { fetch: dfetch });
  const client = new Client({ name: 'mcpgate-interop-dpop', version: '1.0.0' });
  await client.connect(transport, T);
  try {
    const { tools } = await client.listTools({}, T);
    assert.deepEqual(tools.map((t) => t.name).sort(), ['add', 'echo', 'whoami']);
    assert.equal(textOf(await client.callTool({ name: 'add', arguments: { a: 20, b: 22 } }, undefined, T)), '42');
    const seen = JSON.parse(textOf(await client.callTool({ name: 'whoami', arguments: {} }, undefined, T)));
    assert.equal(seen['x-auth-client-id'], CLIENT_ID, JSON.stringify(seen));
    assert.equal(seen['x-auth-scopes'], ROUTE_SCOPE, JSON.stringify(seen));
    assert.equal(seen['x-auth-issuer'], as.issuer, JSON.stringify(seen));
    assert.equal(seen['x-auth-subject'], payload.sub, JSON.stringify(seen));
    assert.equal(seen.authorization, undefined, 'Authorization must not be forwarded upstream');
    await transport.terminateSession();
  } finally {
    await client.close();
  }

  const { sent } = dfetch.state;
  assert.ok(sent.length >= 5, `requests sent: ${sent.length}`);
  assert.ok(sent.every((s) => s.status < 300), JSON.stringify(sent.map((s) => [s.method, s.status, s.www])));
  const jtis = new Set(sent.map((s) => jwtParts(s.proof).payload.jti));
  assert.equal(jtis.size, sent.length, 'one fresh proof per request');
  for (const s of sent) {
    const { header, payload: p } = jwtParts(s.proof);
    assert.equal(header.typ, 'dpop+jwt');
    assert.equal(p.htm, s.method);
    assert.equal(p.htu, gw.dpopUrl);
    assert.equal(p.ath, athOf(token));
  }
  assert.ok(sent.some((s) => s.method === 'GET'), 'the SSE GET went through with its own proof');
  assert.ok(sent.some((s) => s.method === 'DELETE'), 'the session DELETE went through with its own proof');

  // Every request reached the upstream at /mcp, without Authorization or DPoP.
  const upstream = mcp.requests.slice(seenBefore);
  assert.equal(upstream.length, sent.length);
  for (const r of upstream) {
    const where = `${r.method} ${r.url}: ${JSON.stringify(r.headers)}`;
    assert.equal(new URL(r.url, 'http://x').pathname, '/mcp', where);
    assert.equal(r.headers.authorization, undefined, where);
    assert.equal(r.headers.dpop, undefined, where);
    assert.equal(r.headers['x-auth-client-id'], CLIENT_ID, where);
  }
});

test('DPoP: the gateway refuses a replayed proof, another key, the token as Bearer, a missing or stale proof, an unbound token', { timeout: 30_000 }, async () => {
  const key = await dpopKey();
  const other = await dpopKey();
  const { token } = await boundToken(gw.dpopUrl, key);
  const url = gw.dpopUrl;
  const proofFor = (k, extra = {}) => dpopProof(k, { htm: 'POST', htu: url, accessToken: token, ...extra });
  const dpopAuth = { authorization: `DPoP ${token}` };

  // Challenges on a dpop: required route: DPoP only (no Bearer), with algs and resource_metadata.
  const dpopChallenge = (error) => ({ res, www, json, ctx }) => {
    assert.doesNotMatch(www, /Bearer/i, ctx);
    assert.match(www, /^DPoP /, ctx);
    assert.match(www, /algs="[^"]*\bES256\b[^"]*"/, ctx);
    assert.ok(www.includes(`resource_metadata="${dpopPrmUrl()}"`), ctx);
    if (error) {
      assert.ok(www.includes(`error="${error}"`), ctx);
      assert.equal(json.error, error, ctx);
    } else {
      assert.doesNotMatch(www, /error=/, ctx);
    }
    assert.equal(res.headers.get('dpop-nonce'), null, ctx);
  };

  // A fresh proof is accepted; the very same proof again is a replay.
  const proof = await proofFor(key);
  const first = await rawInitialize({ ...dpopAuth, dpop: proof }, url);
  await first.text();
  assert.equal(first.status, 200);
  await expectRefused(() => rawInitialize({ ...dpopAuth, dpop: proof }, url), 401, dpopChallenge('invalid_dpop_proof'));

  // A valid proof by another key: the token is bound to `key` (cnf.jkt mismatch).
  await expectRefused(() => proofFor(other).then((p) => rawInitialize({ ...dpopAuth, dpop: p }, url)), 401,
    dpopChallenge('invalid_token'));
  // The bound key's jwk in the header, but signed by another key: a bad signature.
  await expectRefused(() => proofFor(key, { signWith: other.privateKey }).then((p) => rawInitialize({ ...dpopAuth, dpop: p }, url)), 401,
    dpopChallenge('invalid_dpop_proof'));

  // The bound token as Bearer (with and without a proof alongside): a downgrade.
  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token}` }, url), 401, dpopChallenge('invalid_token'));
  await expectRefused(() => proofFor(key).then((p) => rawInitialize({ authorization: `Bearer ${token}`, dpop: p }, url)), 401,
    dpopChallenge('invalid_token'));

  // DPoP scheme without a proof; and no credentials at all (the discovery challenge).
  await expectRefused(() => rawInitialize(dpopAuth, url), 401, dpopChallenge('invalid_dpop_proof'));
  await expectRefused(() => rawInitialize({}, url), 401, dpopChallenge(undefined));

  // A proof for the upstream's own URL (not the gateway's public URL), and one for another method.
  await expectRefused(() => dpopProof(key, { htm: 'POST', htu: mcp.url, accessToken: token })
    .then((p) => rawInitialize({ ...dpopAuth, dpop: p }, url)), 401, dpopChallenge('invalid_dpop_proof'));
  await expectRefused(() => dpopProof(key, { htm: 'GET', htu: url, accessToken: token })
    .then((p) => rawInitialize({ ...dpopAuth, dpop: p }, url)), 401, dpopChallenge('invalid_dpop_proof'));

  // A proof older than the ±300 s iat window.
  await expectRefused(() => proofFor(key, { iat: Math.floor(Date.now() / 1000) - 600 })
    .then((p) => rawInitialize({ ...dpopAuth, dpop: p }, url)), 401, dpopChallenge('invalid_dpop_proof'));

  // An unbound token (no cnf) for this resource under the DPoP scheme, with a valid proof.
  const { access_token: unbound } = await as.getToken({ resource: url, scope: ROUTE_SCOPE });
  assert.equal(jwtParts(unbound).payload.cnf, undefined);
  await expectRefused(() => dpopProof(key, { htm: 'POST', htu: url, accessToken: unbound })
    .then((p) => rawInitialize({ authorization: `DPoP ${unbound}`, dpop: p }, url)), 401, dpopChallenge('invalid_token'));

  // The query is not part of htu: a proof for the bare URL fits a request with ?x=1.
  const withQuery = await rawInitialize({ ...dpopAuth, dpop: await proofFor(key) }, `${url}?x=1`);
  await withQuery.text();
  assert.equal(withQuery.status, 200);
  assert.equal(htuOf(`${url}?x=1`), url);
});

test('DPoP: a bound token on a route that only allows DPoP: accepted with a proof, refused as Bearer', { timeout: 20_000 }, async () => {
  const key = await dpopKey();
  const { token } = await boundToken(gw.resource, key);

  const ok = await rawInitialize({ authorization: `DPoP ${token}`, dpop: await dpopProof(key, { htm: 'POST', htu: gw.mcpUrl, accessToken: token }) });
  await ok.text();
  assert.equal(ok.status, 200);

  await expectRefused(() => rawInitialize({ authorization: `Bearer ${token}` }), 401, ({ www, json, ctx }) => {
    assert.equal(json.error, 'invalid_token', ctx);
    assert.ok(www.includes('error="invalid_token"'), ctx);
    assert.ok(www.includes(`resource_metadata="${prmUrl()}"`), ctx);
  });
});

test('DPoP: with dpop_nonce the gateway asks for its nonce once, and the SDK client goes on with it', { timeout: 30_000 }, async () => {
  const key = await dpopKey();
  const { token } = await boundToken(gw.dpopNonceUrl, key);
  const dfetch = dpopFetch(key, token);
  const transport = new StreamableHTTPClientTransport(new URL(gw.dpopNonceUrl), { fetch: dfetch });
  const client = new Client({ name: 'mcpgate-interop-dpop-nonce', version: '1.0.0' });
  await client.connect(transport, T);
  try {
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { message: 'nonce' } }, undefined, T)), 'nonce');
    await transport.terminateSession();
  } finally {
    await client.close();
  }
  const { sent } = dfetch.state;
  const challenged = sent.filter((s) => s.status === 401);
  assert.equal(challenged.length, 1, JSON.stringify(sent.map((s) => [s.method, s.status, s.www])));
  assert.equal(challenged[0].nonce, undefined);
  assert.match(challenged[0].www, /^DPoP .*error="use_dpop_nonce"/, challenged[0].www);
  assert.ok(sent.slice(1).every((s) => s.status < 300 && s.nonce), JSON.stringify(sent.map((s) => [s.method, s.status])));

  // A made-up nonce is refused with a fresh DPoP-Nonce.
  await expectRefused(() => dpopProof(key, { htm: 'POST', htu: gw.dpopNonceUrl, accessToken: token, nonce: 'bm90LWEtbm9uY2U' })
    .then((p) => rawInitialize({ authorization: `DPoP ${token}`, dpop: p }, gw.dpopNonceUrl)), 401, ({ res, www, json, ctx }) => {
    assert.equal(json.error, 'use_dpop_nonce', ctx);
    assert.match(www, /^DPoP .*error="use_dpop_nonce"/, ctx);
    assert.ok(res.headers.get('dpop-nonce'), ctx);
    assert.equal(res.headers.get('cache-control'), 'no-store', ctx);
  });
});
