// mcpgate interop, issue 21.6: an Express upstream (case-insensitive routing, as Express does by
// default) behind `/admin` (scope `admin`) + `/` (`auth: none`). No spelling of `/admin` may run
// the admin handler without the admin route's policy.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { after, before, test } from 'node:test';

import express from 'express';

import { ADMIN_SCOPE, ROUTE_SCOPE, runGateway, startAuthServer } from './helpers.js';

const BIN = process.env.MCPGATE_BIN;
const HTTP_TIMEOUT = 5_000;

let as; let app; let gw;

/** Express app: `/admin` and below run the admin handler, everything else the open one. */
async function startExpress() {
  const hits = [];
  const x = express();
  const handler = (name) => (req, res) => {
    hits.push({ handler: name, method: req.method, url: req.originalUrl });
    res.json({ handler: name, url: req.originalUrl });
  };
  x.all('/admin', handler('admin'));
  x.all('/admin/*rest', handler('admin'));
  x.use(handler('open'));
  const server = await new Promise((resolve, reject) => {
    const s = x.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    hits,
    admin: () => hits.filter((h) => h.handler === 'admin'),
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

before(async () => {
  assert.ok(BIN && existsSync(BIN), `gateway binary not found: MCPGATE_BIN=${BIN}`);
  as = await startAuthServer();
  app = await startExpress();
  gw = await runGateway({ bin: BIN, issuer: as.issuer, routes: `
  - name: admin
    path_prefix: /admin
    upstream: ${app.origin}
    issuers: [oidc]
    scopes: [${ADMIN_SCOPE}]
  - name: open
    path_prefix: /
    upstream: ${app.origin}
    auth: none
` });
}, { timeout: 45_000 });

after(async () => {
  await gw?.stop();
  await Promise.allSettled([app?.close(), as?.close()]);
}, { timeout: 15_000 });

/** A request with `path` sent exactly as written (fetch would normalize it). */
function send(base, path, { method = 'GET', token } = {}) {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: url.hostname,
      port: url.port,
      method,
      path, // sent exactly as written
      headers: token ? { authorization: `Bearer ${token}` } : {},
      timeout: HTTP_TIMEOUT,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end();
  });
}

const VARIANTS = ['/ADMIN', '/Admin', '/Admin/x', '/aDmIn/users', '/ADM%49N', '/%41DMIN/x', '/ADMIN/'];
const SUFFIXED = ['/admin.', '/admin%2e', '/admin%2E', '/admin%20', '/admin%09', '/ADMIN.', '/admin./x', '/adm%C4%B1n', '/%EF%BD%81dmin'];

test('control: Express itself runs the admin handler for case variants of /admin', async () => {
  const before = app.admin().length;
  for (const path of ['/ADMIN', '/Admin/x']) {
    const res = await send(app.origin, path);
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.body).handler, 'admin', `${path} on Express directly`);
  }
  assert.equal(app.admin().length, before + 2);
});

test('without a token, no spelling of /admin reaches the admin handler', async () => {
  const before = app.hits.length;
  for (const path of VARIANTS) {
    for (const method of ['GET', 'POST', 'DELETE', 'PUT']) {
      const res = await send(gw.publicUrl, path, { method });
      const ctx = `${method} ${path}: ${res.status} ${res.body}`;
      assert.equal(res.status, 401, ctx);
      assert.match(res.headers['content-type'] ?? '', /^application\/json/, ctx);
      assert.equal(JSON.parse(res.body).error, 'unauthorized', ctx);
      assert.match(res.headers['www-authenticate'] ?? '', /oauth-protected-resource\/admin"/, ctx);
    }
  }
  for (const path of SUFFIXED) {
    const res = await send(gw.publicUrl, path);
    const ctx = `${path}: ${res.status} ${res.body}`;
    assert.equal(res.status, 400, ctx);
    assert.equal(JSON.parse(res.body).error, 'invalid_request', ctx);
  }
  assert.deepEqual(app.hits.slice(before), [], 'refused requests reached Express');
});

test('a token without the admin scope is refused on every spelling; with it, the admin handler runs', async () => {
  const resource = `${gw.publicUrl}/admin`;
  const reader = (await as.getToken({ resource, scope: ROUTE_SCOPE })).access_token;
  const admin = (await as.getToken({ resource, scope: ADMIN_SCOPE })).access_token;
  let before = app.hits.length;
  for (const path of VARIANTS) {
    const res = await send(gw.publicUrl, path, { token: reader });
    assert.equal(res.status, 403, `${path}: ${res.body}`);
    assert.equal(JSON.parse(res.body).error, 'insufficient_scope');
  }
  assert.deepEqual(app.hits.slice(before), []);
  before = app.admin().length;
  for (const [path, upstreamPath] of [['/ADMIN', '/ADMIN'], ['/Admin/x', '/Admin/x'], ['/ADM%49N', '/ADMIN']]) {
    const res = await send(gw.publicUrl, path, { token: admin });
    assert.equal(res.status, 200, `${path}: ${res.body}`);
    assert.deepEqual(JSON.parse(res.body), { handler: 'admin', url: upstreamPath });
  }
  assert.equal(app.admin().length, before + 3);
});

test('the open route still serves everything else without a token', async () => {
  for (const path of ['/', '/adminx', '/public/ADMIN']) {
    const res = await send(gw.publicUrl, path);
    assert.equal(res.status, 200, `${path}: ${res.body}`);
    assert.equal(JSON.parse(res.body).handler, 'open');
  }
});
