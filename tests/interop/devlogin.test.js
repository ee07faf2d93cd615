// `mcpgate dev`'s interactive login driven by the official MCP TypeScript SDK's OAuth client:
// an in-memory OAuthClientProvider whose redirectToAuthorization does what a browser would
// (fetches the dev issuer's consent page, follows its approval link, reads the code off the
// redirect to the loopback callback). The SDK does everything else by itself: the 401, the
// protected resource metadata, the authorization server metadata, dynamic registration
// (RFC 7591), PKCE S256, the resource indicator, the token request, the refresh.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

import { jwtParts } from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const T = { timeout: 10_000 }; // per SDK request
const HTTP_TIMEOUT = 5_000;
/** Never listened on: the redirect is read off the Location header, as a browser would. */
const CALLBACK = 'http://127.0.0.1:1/callback';

let dev;

/** Starts `mcpgate dev` on ports the kernel picks and reads the URLs off its banner. */
async function startDev() {
  const child = spawn(BIN, ['dev', '--port', '0', '--admin-port', '0', '--issuer-port', '0', '--demo-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  let out = '';
  let log = '';
  child.stdout.on('data', (c) => { out += c.toString(); });
  child.stderr.on('data', (c) => { log = (log + c.toString()).slice(-64 * 1024); });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) { child.kill('SIGKILL'); await exited; }
    }
  };
  const deadline = Date.now() + 20_000;
  while (!out.includes('--tool-name whoami')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`mcpgate dev printed no banner:\n${out}\n${log}`);
    }
    await sleep(20);
  }
  const url = (label) => {
    const line = out.split('\n').find((l) => l.trim().startsWith(label));
    assert.ok(line, `no ${label} line in:\n${out}`);
    return line.trim().slice(label.length).trim().split(/\s+/)[0];
  };
  const admin = new URL(url('admin')).origin;
  while (true) {
    const ok = await fetch(`${admin}/readyz`, { signal: AbortSignal.timeout(HTTP_TIMEOUT) })
      .then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > deadline) { await stop(); throw new Error(`mcpgate dev not ready:\n${log}`); }
    await sleep(20);
  }
  return { mcp: url('gateway'), issuer: url('dev issuer'), stop, log: () => log };
}

before(async () => {
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  dev = await startDev();
}, { timeout: 30_000 });

after(async () => { await dev?.stop(); }, { timeout: 15_000 });

/**
 * The provider of a headless test: everything in memory; the "browser" fetches the
 * authorization URL (the consent page), follows its approval link, and keeps the code.
 */
class HeadlessProvider {
  constructor() {
    this.client = undefined;
    this.tokenSet = undefined;
    this.verifier = undefined;
    this.code = undefined;
    this.consentPage = undefined;
    this.authorizationUrl = undefined;
    this.redirect = undefined;
  }
  get redirectUrl() { return CALLBACK; }
  get clientMetadata() {
    return {
      client_name: 'mcpgate interop (headless)',
      redirect_uris: [CALLBACK],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() { return 'interop-state'; }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; }
  tokens() { return this.tokenSet; }
  saveTokens(tokens) { this.tokenSet = tokens; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
  async redirectToAuthorization(url) {
    this.authorizationUrl = new URL(url);
    const page = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(HTTP_TIMEOUT) });
    assert.equal(page.status, 200, `consent page: ${page.status} ${await page.clone().text()}`);
    this.consentPage = await page.text();
    const href = /id="approve" href="([^"]+)"/.exec(this.consentPage)?.[1];
    assert.ok(href, `no approval link in:\n${this.consentPage}`);
    const approved = await fetch(new URL(href.replaceAll('&amp;', '&'), url), {
      redirect: 'manual', signal: AbortSignal.timeout(HTTP_TIMEOUT),
    });
    assert.equal(approved.status, 302);
    this.redirect = new URL(approved.headers.get('location'));
    assert.equal(this.redirect.origin + this.redirect.pathname, CALLBACK);
    this.code = this.redirect.searchParams.get('code');
  }
}

test('MCP SDK OAuth client: 401 -> discovery -> registration -> consent -> code + PKCE -> token -> tool call, then refresh', { timeout: 60_000 }, async () => {
  const provider = new HeadlessProvider();
  const url = new URL(dev.mcp);

  // First connection: the gateway says 401, the SDK runs the whole discovery and sends the
  // "browser" to the authorization URL; the connection fails with UnauthorizedError.
  const first = new StreamableHTTPClientTransport(url, { authProvider: provider });
  const c1 = new Client({ name: 'interop-devlogin', version: '1.0.0' });
  await assert.rejects(c1.connect(first, T), UnauthorizedError);
  await c1.close();

  // What the SDK sent and what the issuer showed.
  assert.ok(provider.client?.client_id, 'the SDK registered itself (RFC 7591)');
  const q = provider.authorizationUrl.searchParams;
  assert.equal(new URL(provider.authorizationUrl).origin, dev.issuer);
  assert.equal(q.get('code_challenge_method'), 'S256');
  assert.equal(q.get('resource'), dev.mcp, 'the SDK asks for the gateway route as resource (RFC 8707)');
  assert.equal(q.get('client_id'), provider.client.client_id);
  for (const shown of ['mcpgate interop (headless)', provider.client.client_id, 'mcp:tools', dev.mcp]) {
    assert.ok(provider.consentPage.includes(shown), `${shown} not on the consent page`);
  }
  assert.equal(provider.redirect.searchParams.get('state'), 'interop-state');
  assert.equal(provider.redirect.searchParams.get('iss'), dev.issuer);
  assert.ok(provider.code, 'a code came back');

  // The SDK redeems the code (with its verifier), then a fresh connection works.
  await first.finishAuth(provider.code);
  const access = provider.tokens()?.access_token;
  assert.ok(access, 'the SDK obtained a token');
  assert.ok(provider.tokens().refresh_token, 'and a refresh token');
  const claims = jwtParts(access).payload;
  assert.equal(claims.aud, dev.mcp, 'aud is the requested resource');
  assert.equal(claims.sub, 'dev-user');
  assert.equal(claims.client_id, provider.client.client_id);

  const c2 = new Client({ name: 'interop-devlogin', version: '1.0.0' });
  const second = new StreamableHTTPClientTransport(url, { authProvider: provider });
  await c2.connect(second, T);
  try {
    const { tools } = await c2.listTools({}, T);
    assert.ok(tools.some((t) => t.name === 'whoami'));
    assert.ok(!tools.some((t) => t.name === 'reset_demo'), 'the admin tool is filtered for mcp:tools');
    const who = await c2.callTool({ name: 'whoami', arguments: {} }, undefined, T);
    assert.equal(who.isError, false);
    assert.match(who.content[0].text, /dev-user/);
  } finally {
    await c2.close();
  }

  // An expired access token: the SDK refreshes with its refresh token (rotated) by itself.
  const before = provider.tokens();
  provider.saveTokens({ ...before, access_token: 'expired.not-a.jwt' });
  const c3 = new Client({ name: 'interop-devlogin', version: '1.0.0' });
  const third = new StreamableHTTPClientTransport(url, { authProvider: provider });
  await c3.connect(third, T);
  try {
    const who = await c3.callTool({ name: 'whoami', arguments: {} }, undefined, T);
    assert.equal(who.isError, false);
  } finally {
    await c3.close();
  }
  const after = provider.tokens();
  assert.notEqual(after.access_token, 'expired.not-a.jwt');
  assert.notEqual(after.refresh_token, before.refresh_token, 'the refresh token was rotated');

  // The old refresh token again: reuse; the family (and so the current token) is revoked.
  const tokenUrl = `${dev.issuer}/token`;
  const refresh = (rt) => fetch(tokenUrl, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, client_id: provider.client.client_id }),
    signal: AbortSignal.timeout(HTTP_TIMEOUT),
  });
  const reused = await refresh(before.refresh_token);
  assert.equal(reused.status, 400);
  assert.equal((await reused.json()).error, 'invalid_grant');
  const current = await refresh(after.refresh_token);
  assert.equal(current.status, 400, 'the family is revoked');
});
