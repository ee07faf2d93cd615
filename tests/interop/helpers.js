// Fixtures for the interop test: a real authorization server (oidc-provider), a real MCP server
// (official TypeScript SDK, streamable HTTP) and the mcpgate binary. Loopback only; every wait is bounded.
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { SignJWT, calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import Provider, { errors as oidcErrors } from 'oidc-provider';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

export const CLIENT_ID = 'interop-client';
export const CLIENT_SECRET = 'interop-secret-0123456789';
export const ROUTE_SCOPE = 'mcp:tools';
/** Granted with JWTs too, for the routing test's `/admin` route. */
export const ADMIN_SCOPE = 'admin';
/** The gateway's own client at the AS: it may only introspect (RFC 7662). */
export const GATEWAY_CLIENT_ID = 'mcpgate-gateway';
export const GATEWAY_CLIENT_SECRET = 'gateway-secret-0123456789';
/** How long the gateway caches an introspection answer in this test (cache_max_seconds). */
export const INTROSPECTION_CACHE_SECONDS = 2;
/** The gateway's client for RFC 8693 token exchange (`private_key_jwt`), when asked for. */
export const EXCHANGER_ID = 'mcpgate-exchanger';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
/** A resource path for which the AS issues opaque tokens bound to it (aud) instead of JWTs. */
export const OPAQUE_RESOURCE_PATH = '/opaque-aud';
/** Gateway route with `dpop: required` (rewritten to the upstream's /mcp). */
export const DPOP_PATH = '/dpop/mcp';
/** Gateway route with `dpop: required` and `dpop_nonce: true`. */
export const DPOP_NONCE_PATH = '/dpop-nonce/mcp';

const LOOPBACK = '127.0.0.1';

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve(server.address().port));
  });
}

function closeServer(server) {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port that was free a moment ago (bind port 0, read it, release it). */
export async function freePort() {
  const srv = net.createServer();
  const port = await listen(srv);
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/**
 * oidc-provider with the client_credentials grant; resource indicators make it issue
 * ES256-signed JWT access tokens (typ at+jwt) whose `aud` is the requested resource.
 * Without a resource indicator it issues opaque tokens (no `aud`), which the gateway checks
 * at the RFC 7662 introspection endpoint with its own client; revocation (RFC 7009) is on.
 * DPoP (RFC 9449) is on and its token endpoint requires its own server nonce in every proof:
 * a token request with a proof gets a DPoP-bound token (`token_type: DPoP`, `cnf.jkt`).
 */
export async function startAuthServer({ exchangerJwks } = {}) {
  const server = http.createServer();
  const port = await listen(server);
  const issuer = `http://${LOOPBACK}:${port}`;

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomUUID()}`, alg: 'ES256', use: 'sig' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    }, {
      client_id: GATEWAY_CLIENT_ID,
      client_secret: GATEWAY_CLIENT_SECRET,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    }, ...(exchangerJwks ? [{
      // The gateway exchanging its callers' tokens (RFC 8693), authenticated by RFC 7523
      // client assertion; it also gets its own token (client_credentials) as the actor.
      client_id: EXCHANGER_ID,
      grant_types: ['client_credentials', TOKEN_EXCHANGE],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: exchangerJwks,
      id_token_signed_response_alg: 'ES256',
    }] : [])],
    scopes: ['openid', 'offline_access', ROUTE_SCOPE, 'other:scope', ADMIN_SCOPE],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomUUID()] },
    features: {
      devInteractions: { enabled: false },
      // DPoP-bound tokens for requests that carry a proof; the AS insists on its own nonce.
      dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
      clientCredentials: { enabled: true },
      // Only the gateway's client may introspect; a client may revoke its own tokens.
      introspection: {
        enabled: true,
        allowedPolicy: (_ctx, client) => client.clientId === GATEWAY_CLIENT_ID,
      },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => client.clientId === token.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        // Any loopback http(s) URL is a resource server here; the gateway decides what it accepts.
        getResourceServerInfo: (_ctx, resource) => resourceInfo(resource),
      },
    },
    ttl: { ClientCredentials: 300, AccessToken: 300 },
    // A token's own `extra` (the exchange grant's `act`) into its claims: the default
    // replaces it with nothing.
    extraTokenClaims: (_ctx, token) => token.extra,
  });
  const exchanges = [];
  if (exchangerJwks) {
    registerTokenExchange(provider, issuer, signingKey, exchanges);
  }
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));
  server.on('request', provider.callback());

  const basic = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;

  /**
   * client_credentials grant; returns the raw token response JSON (throws on non-200).
   * Without `resource`, the token is opaque and has no audience.
   */
  async function getToken({ resource, scope = ROUTE_SCOPE }) {
    const params = { grant_type: 'client_credentials', scope };
    if (resource) params.resource = resource;
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`token endpoint ${res.status}: ${JSON.stringify(body)}`);
    return body;
  }

  /**
   * client_credentials grant with a DPoP proof made with `key` (a `dpopKey()`); returns the token
   * response JSON plus `asNonce`: the nonce the AS asked for (400 `use_dpop_nonce` with a
   * `DPoP-Nonce` header, RFC 9449 §8), which the second attempt carries.
   */
  async function getDpopToken({ resource, scope = ROUTE_SCOPE, key }) {
    const params = { grant_type: 'client_credentials', scope, resource };
    let asNonce;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const proof = await dpopProof(key, { htm: 'POST', htu: `${issuer}/token`, nonce: asNonce });
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: new URLSearchParams(params),
        signal: AbortSignal.timeout(5000),
      });
      const body = await res.json();
      const nonce = res.headers.get('dpop-nonce');
      if (res.status === 400 && body.error === 'use_dpop_nonce' && nonce && asNonce === undefined) {
        asNonce = nonce;
        continue;
      }
      if (res.status !== 200) throw new Error(`token endpoint ${res.status}: ${JSON.stringify(body)}`);
      return { ...body, asNonce };
    }
    throw new Error('token endpoint: still use_dpop_nonce after sending its nonce');
  }

  /** RFC 7009 revocation of one of the interop client's tokens (throws on non-200). */
  async function revoke(token) {
    const res = await fetch(`${issuer}/token/revocation`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
      signal: AbortSignal.timeout(5000),
    });
    if (res.status !== 200) throw new Error(`revocation endpoint ${res.status}: ${await res.text()}`);
  }

  return { issuer, getToken, getDpopToken, revoke, exchanges, close: () => closeServer(server) };
}

/** What oidc-provider issues for a resource (any loopback URL is a resource server here). */
function resourceInfo(resource) {
  const url = new URL(resource);
  if (url.hostname !== LOOPBACK) throw new Error(`unexpected resource ${resource}`);
  if (url.pathname === OPAQUE_RESOURCE_PATH) {
    return { scope: `${ROUTE_SCOPE} other:scope`, audience: resource, accessTokenFormat: 'opaque', accessTokenTTL: 300 };
  }
  return {
    scope: `${ROUTE_SCOPE} other:scope ${ADMIN_SCOPE}`,
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: 300,
    jwt: { sign: { alg: 'ES256' } },
  };
}

/**
 * RFC 8693 token exchange, which oidc-provider does not have: registered with its
 * `registerGrantType`. Client authentication, token issuance, signing and JWKS stay
 * oidc-provider's; the handler validates the subject token (a JWT access token this provider
 * issued: jose against its own key, since JWT access tokens are not stored), and the actor
 * token likewise, and issues an access token for the requested resource with the subject's
 * `sub` and, when an actor token came, `act: {sub: <actor>}`. Every exchange is recorded in
 * `exchanges`.
 */
function registerTokenExchange(provider, issuer, signingKey, exchanges) {
  const { d: _d, ...publicJwk } = signingKey;
  const keys = createLocalJWKSet({ keys: [publicJwk] });
  const verify = async (token, what) => {
    try {
      const { payload } = await jwtVerify(token, keys, { issuer, typ: 'at+jwt' });
      return payload;
    } catch (e) {
      throw new oidcErrors.InvalidGrant(`${what} is not a valid access token of this issuer (${e.code ?? e.message})`);
    }
  };
  const params = ['audience', 'resource', 'scope', 'requested_token_type', 'subject_token', 'subject_token_type',
    'actor_token', 'actor_token_type'];
  provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
    const p = ctx.oidc.params;
    if (p.subject_token_type !== TYPE_ACCESS_TOKEN) {
      throw new oidcErrors.InvalidRequest('subject_token_type must be an access token');
    }
    if (p.requested_token_type && p.requested_token_type !== TYPE_ACCESS_TOKEN) {
      throw new oidcErrors.InvalidRequest('only access tokens are issued');
    }
    const subject = await verify(p.subject_token, 'subject_token');
    let act;
    if (p.actor_token) {
      if (p.actor_token_type !== TYPE_ACCESS_TOKEN) throw new oidcErrors.InvalidRequest('actor_token_type');
      const actor = await verify(p.actor_token, 'actor_token');
      // Only the authenticated client may act, with its own token.
      if (actor.client_id !== ctx.oidc.client.clientId) throw new oidcErrors.InvalidGrant('actor_token is not the client\'s');
      act = { sub: actor.sub };
    } else if (p.actor_token_type) {
      throw new oidcErrors.InvalidRequest('actor_token_type without actor_token');
    }
    const resources = [p.resource].flat().filter(Boolean);
    if (resources.length !== 1) throw new oidcErrors.InvalidTarget('exactly one resource is supported');
    let info;
    try { info = resourceInfo(resources[0]); } catch { throw new oidcErrors.InvalidTarget('unknown resource'); }
    const allowed = new Set(info.scope.split(' '));
    const scopes = (p.scope ?? '').split(' ').filter(Boolean);
    const bad = scopes.find((s) => !allowed.has(s));
    if (bad) throw new oidcErrors.InvalidScope('scope not allowed for this resource', bad);
    const at = new provider.AccessToken({
      accountId: subject.sub,
      client: ctx.oidc.client,
      scope: scopes.join(' ') || undefined,
      gty: TOKEN_EXCHANGE,
      extra: act ? { act } : undefined,
    });
    at.resourceServer = new provider.ResourceServer(resources[0], info);
    const value = await at.save();
    exchanges.push({ subject: p.subject_token, actor: p.actor_token, resource: resources[0], scope: p.scope, token: value });
    ctx.body = {
      access_token: value,
      issued_token_type: TYPE_ACCESS_TOKEN,
      token_type: at.tokenType,
      expires_in: at.expiration,
      scope: at.scope,
    };
  }, params, ['audience', 'resource']);
}

/** Claims of a JWT, unverified (for assertions only). */
export function jwtParts(token) {
  const [h, p] = token.split('.');
  const dec = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  return { header: dec(h), payload: dec(p) };
}

/** A fresh ES256 DPoP key pair (jose): `{ privateKey, jwk, jkt }` (jkt: RFC 7638 thumbprint). */
export async function dpopKey() {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}

/** base64url(SHA-256(token)): a proof's `ath`. */
export const athOf = (token) => createHash('sha256').update(token).digest('base64url');

/** `htu` for a URL: without query and fragment (RFC 9449 §4.2). */
export function htuOf(url) {
  const u = new URL(url);
  u.search = '';
  u.hash = '';
  return u.href;
}

/**
 * A DPoP proof JWT (jose SignJWT): header `typ: dpop+jwt`, `alg: ES256`, `jwk` = the key's public
 * JWK; claims htm, htu, iat (now), a fresh jti, `ath` when there is an access token, `nonce` when
 * given. `signWith` signs with another private key than the one named in `jwk` (a forgery);
 * `iat` (epoch seconds) replaces the current time.
 */
export function dpopProof(key, { htm, htu, accessToken, nonce, signWith, iat }) {
  const claims = { htm, htu };
  if (accessToken !== undefined) claims.ath = athOf(accessToken);
  if (nonce !== undefined) claims.nonce = nonce;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .setIssuedAt(iat)
    .setJti(randomUUID())
    .sign(signWith ?? key.privateKey);
}

/**
 * A fetch that presents `token` with the DPoP scheme and a fresh proof for each request (htm =
 * the method, htu = the URL without query). On 401 `use_dpop_nonce` with a `DPoP-Nonce` header it
 * keeps that nonce and retries once (RFC 9449 §9); later proofs carry the latest nonce. Every
 * exchange is recorded in `sent` ({ method, url, proof, status, nonce }).
 */
export function dpopFetch(key, token) {
  const state = { nonce: undefined, sent: [] };
  const one = async (url, init) => {
    const method = (init?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init?.headers);
    const proof = await dpopProof(key, { htm: method, htu: htuOf(url), accessToken: token, nonce: state.nonce });
    headers.set('authorization', `DPoP ${token}`);
    headers.set('dpop', proof);
    const res = await fetch(url, { ...init, headers });
    state.sent.push({ method, url: String(url), proof, status: res.status, nonce: state.nonce, www: res.headers.get('www-authenticate') });
    return res;
  };
  const wrapped = async (url, init) => {
    const res = await one(url, init);
    const nonce = res.headers.get('dpop-nonce');
    if (nonce) {
      const retry = res.status === 401 && /error="use_dpop_nonce"/.test(res.headers.get('www-authenticate') ?? '');
      state.nonce = nonce;
      if (retry) {
        await res.body?.cancel();
        return one(url, init);
      }
    }
    return res;
  };
  wrapped.state = state;
  return wrapped;
}

function buildMcpServer() {
  const server = new McpServer({ name: 'interop-upstream', version: '1.0.0' });
  server.registerTool('echo', {
    description: 'Echo the message back',
    inputSchema: { message: z.string() },
  }, async ({ message }) => ({ content: [{ type: 'text', text: message }] }));
  server.registerTool('add', {
    description: 'Add two numbers',
    inputSchema: { a: z.number(), b: z.number() },
  }, async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
  server.registerTool('whoami', {
    description: 'Return the identity-related HTTP headers this server received',
  }, async (extra) => {
    const h = extra.requestInfo?.headers ?? {};
    const seen = Object.fromEntries(Object.entries(h).filter(([k]) => /^(authorization|x-auth-|x-forwarded-|host$)/i.test(k)));
    return { content: [{ type: 'text', text: JSON.stringify(seen) }] };
  });
  return server;
}

function readJsonBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) reject(new Error('body too large'));
      else chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try { resolve(text ? JSON.parse(text) : undefined); } catch (e) { reject(e); }
    });
    req.on('error', reject);
  });
}

/**
 * MCP server (official SDK, stateful streamable HTTP) at http://127.0.0.1:<port>/mcp.
 * `requests` records method, url and headers of every HTTP request it received.
 */
export async function startMcpServer() {
  const sessions = new Map(); // mcp-session-id -> transport
  const requests = [];
  const server = http.createServer(async (req, res) => {
    requests.push({ method: req.method, url: req.url, headers: { ...req.headers } });
    const fail = (status, message) => {
      if (res.headersSent) return res.end();
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
    };
    try {
      if (new URL(req.url, 'http://x').pathname !== '/mcp') return fail(404, 'not found');
      const body = req.method === 'POST' ? await readJsonBody(req) : undefined;
      const sid = req.headers['mcp-session-id'];
      let transport = sid ? sessions.get(sid) : undefined;
      if (!transport) {
        if (sid) return fail(404, 'unknown session');
        if (req.method !== 'POST' || !isInitializeRequest(body)) return fail(400, 'no session');
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => sessions.set(id, transport),
        });
        transport.onclose = () => sessions.delete(transport.sessionId);
        await buildMcpServer().connect(transport);
      }
      await transport.handleRequest(req, res, body);
    } catch (err) {
      fail(500, String(err?.message ?? err));
    }
  });
  const port = await listen(server);
  return {
    url: `http://${LOOPBACK}:${port}/mcp`,
    origin: `http://${LOOPBACK}:${port}`,
    requests,
    close: async () => {
      await Promise.allSettled([...sessions.values()].map((t) => t.close()));
      await closeServer(server);
    },
  };
}

async function waitFor(what, deadlineMs, probe, child) {
  const until = Date.now() + deadlineMs;
  let last;
  while (Date.now() < until) {
    if (child && child.exitCode !== null) throw new Error(`${what}: gateway exited with code ${child.exitCode}`);
    try {
      if (await probe()) return;
    } catch (e) { last = e; }
    await sleep(100);
  }
  throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: LOOPBACK, port });
    s.setTimeout(1000);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.once('timeout', () => { s.destroy(); resolve(false); });
  });
}

/**
 * The mcpgate binary with a temp config: route /mcp -> the MCP server, scope mcp:tools. The
 * issuer's JWTs are verified with its keys; its opaque tokens are introspected (endpoint
 * discovered from its metadata) with a short cache, and since they carry no `aud`, the
 * issuer sets `require_aud: false`. Two more routes lead to the same upstream /mcp:
 * DPOP_PATH (`dpop: required`) and DPOP_NONCE_PATH (`dpop: required`, `dpop_nonce: true`).
 */
export function startGateway({ bin, issuer, upstream }) {
  return runGateway({ bin, issuer, routes: `
  - name: mcp
    path_prefix: /mcp
    upstream: ${upstream}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
  - name: dpop
    path_prefix: ${DPOP_PATH}
    rewrite_prefix: /mcp
    upstream: ${upstream}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    dpop: required
  - name: dpop-nonce
    path_prefix: ${DPOP_NONCE_PATH}
    rewrite_prefix: /mcp
    upstream: ${upstream}
    issuers: [oidc]
    scopes: [${ROUTE_SCOPE}]
    dpop: required
    dpop_nonce: true
` });
}

/**
 * The mcpgate binary with a temp config whose `routes:` list is `routes` (YAML text, its items
 * indented by two spaces), and the `oidc` issuer of `startGateway`. Waits for /healthz.
 */
export async function runGateway({ bin, issuer, routes }) {
  const [port, adminPort] = [await freePort(), await freePort()];
  const publicUrl = `http://${LOOPBACK}:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'mcpgate-interop-'));
  const configPath = join(dir, 'mcpgate.yaml');
  // No jwks_uri: the gateway must discover it from the issuer's metadata.
  writeFileSync(configPath, `listen:
  address: ${LOOPBACK}:${port}
  public_url: ${publicUrl}
  threads: 1
admin:
  address: ${LOOPBACK}:${adminPort}
issuers:
  - name: oidc
    issuer: ${issuer}
    algorithms: [ES256]
    introspection:
      client_id: ${GATEWAY_CLIENT_ID}
      client_secret: ${GATEWAY_CLIENT_SECRET}
      cache_max_seconds: ${INTROSPECTION_CACHE_SECONDS}
      require_aud: false
routes:${routes}`);

  const child = spawn(bin, ['run', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  let log = '';
  const keep = (chunk) => { log = (log + chunk.toString()).slice(-64 * 1024); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', resolve));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) { child.kill('SIGKILL'); await exited; }
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitFor('gateway public port', 20000, () => tcpOpen(port), child);
    await waitFor('gateway /healthz', 20000, async () => {
      const r = await fetch(`http://${LOOPBACK}:${adminPort}/healthz`, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    }, child);
  } catch (err) {
    await stop();
    err.message += `\n--- gateway log ---\n${log}`;
    throw err;
  }

  return {
    publicUrl,
    adminUrl: `http://${LOOPBACK}:${adminPort}`,
    resource: `${publicUrl}/mcp`,
    mcpUrl: `${publicUrl}/mcp`,
    /** The `dpop: required` route: its resource is also its URL. */
    dpopUrl: `${publicUrl}${DPOP_PATH}`,
    dpopNonceUrl: `${publicUrl}${DPOP_NONCE_PATH}`,
    log: () => log,
    stop,
  };
}
