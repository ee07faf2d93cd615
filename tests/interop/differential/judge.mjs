// Differential verification, step 2: the independent verdict on every vector.
//
//   node judge.mjs VECTORS.json OUT.json
//
// jose (signature verification, JOSE header handling, registered claims) plus the strict
// reference rules below, which state mcpgate's documented policy where jose is more lenient
// or does not decide (README.md, "Differential verification"). Nothing here is mcpgate's
// code: this file and jose judge from the bytes of the vector alone.
import fs from 'node:fs';
import crypto from 'node:crypto';
import * as jose from 'jose';

const [vin, vout] = process.argv.slice(2);
const V = JSON.parse(fs.readFileSync(vin, 'utf8'));

const ALLOWED = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA', 'Ed25519'];
const KTY = (alg) => (/^(RS|PS)/.test(alg) ? ['RSA', null] : alg === 'ES256' ? ['EC', 'P-256'] : alg === 'ES384' ? ['EC', 'P-384'] : ['OKP', 'Ed25519']);

// A strict JSON reader: the value as JSON.parse reads it, plus the names of the members
// that appear more than once in the top-level object, and the nesting depth.
function strictJson(text) {
  let i = 0;
  const dups = new Set();
  let maxDepth = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = () => { throw new Error('not JSON'); };
  function str() {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    if (i >= text.length) fail();
    i++;
    return JSON.parse(text.slice(start, i));
  }
  function value(depth) {
    ws();
    if (text[i] === '{' || text[i] === '[') {
      maxDepth = Math.max(maxDepth, depth + 1);
      const close = text[i] === '{' ? '}' : ']';
      const obj = close === '}';
      const seen = new Set();
      i++;
      ws();
      if (text[i] === close) { i++; return; }
      for (;;) {
        ws();
        if (obj) {
          if (text[i] !== '"') fail();
          const k = str();
          if (seen.has(k) && depth === 0) dups.add(k);
          seen.add(k);
          ws();
          if (text[i++] !== ':') fail();
        }
        value(depth + 1);
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === close) { i++; return; }
        fail();
      }
    } else if (text[i] === '"') str();
    else {
      const m = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i));
      if (!m) fail();
      i += m[0].length;
    }
  }
  const parsed = JSON.parse(text); // the value (and JSON.parse's own strictness)
  value(0);
  ws();
  if (i !== text.length) fail();
  return { value: parsed, dups, depth: maxDepth };
}

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (o, k) => Object.hasOwn(o, k);
function segment(s) {
  if (s.length === 0 || !/^[A-Za-z0-9_-]+$/.test(s)) throw new Error('segment is not base64url');
  const b = Buffer.from(s, 'base64url');
  if (b.toString('base64url') !== s) throw new Error('non-canonical base64url');
  return b;
}
function utf8(b) {
  const s = new TextDecoder('utf-8', { fatal: true }).decode(b);
  return s;
}
const intDate = (v) => Number.isInteger(v) && v >= 0 && v <= 253402300799;
const strOrAbsent = (o, k) => !has(o, k) || o[k] === null || typeof o[k] === 'string';

// An audience URI with its scheme and authority lower-cased; anything else as it is.
function canonicalAudience(a) {
  const m = /^([^:/?#]+:\/\/)([^/?#]*)(.*)$/s.exec(a);
  return m ? m[1].toLowerCase() + m[2].toLowerCase() + m[3] : a;
}

// The header and claims rules of the policy (beyond what jose checks).
function jwtReference(token) {
  if (token.length > 16384) throw new Error('too large');
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('not three segments');
  const [hb, pb] = [segment(parts[0]), segment(parts[1])];
  segment(parts[2]);
  const H = strictJson(utf8(hb));
  const P = strictJson(utf8(pb));
  if (H.depth > 16 || P.depth > 16) throw new Error('too deep');
  const h = H.value, c = P.value;
  if (!isObj(h)) throw new Error('header not an object');
  for (const m of ['alg', 'typ', 'kid', 'crit', 'jwk', 'jku', 'x5u', 'x5c', 'b64']) if (H.dups.has(m)) throw new Error(`duplicate ${m}`);
  for (const m of ['crit', 'b64', 'jwk', 'jku', 'x5u', 'x5c']) if (has(h, m)) throw new Error(`header ${m}`);
  if (typeof h.alg !== 'string' || !ALLOWED.includes(h.alg)) throw new Error('alg');
  if (has(h, 'kid') && (typeof h.kid !== 'string' || Buffer.byteLength(h.kid) > 256)) throw new Error('kid');
  if (has(h, 'typ')) {
    if (typeof h.typ !== 'string') throw new Error('typ type');
    if (!['at+jwt', 'application/at+jwt', 'jwt', 'application/jwt'].includes(h.typ.toLowerCase())) throw new Error('typ');
  }
  if (!isObj(c)) throw new Error('claims not an object');
  for (const m of ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'client_id', 'azp', 'scope', 'scp', 'cnf']) if (P.dups.has(m)) throw new Error(`duplicate ${m}`);
  for (const k of ['iss', 'sub', 'jti', 'client_id', 'azp', 'scope']) if (!strOrAbsent(c, k)) throw new Error(`${k} type`);
  if (c.iss !== V.issuer) throw new Error('iss');
  const aud = c.aud;
  if (!(typeof aud === 'string' || (Array.isArray(aud) && aud.every((a) => typeof a === 'string')))) throw new Error('aud type');
  // RFC 3986 §6.2.2.1: scheme and host are case-insensitive; the rest is compared exactly.
  if (![aud].flat().some((a) => canonicalAudience(a) === canonicalAudience(V.audience))) throw new Error('aud');
  const dates = {};
  for (const k of ['exp', 'nbf', 'iat']) {
    if (!has(c, k)) continue;
    if (typeof c[k] !== 'number') throw new Error(`${k} type`);
    if (!intDate(c[k])) throw new Error(`${k} not an integer NumericDate`);
    dates[k] = c[k];
  }
  if (dates.exp === undefined) throw new Error('no exp');
  if (dates.iat !== undefined && dates.iat > V.now + V.skew) throw new Error('iat in the future');
  if (has(c, 'scp') && c.scp !== null && !(typeof c.scp === 'string' || (Array.isArray(c.scp) && c.scp.every((s) => typeof s === 'string')))) throw new Error('scp type');
  if (has(c, 'cnf') && c.cnf !== null) {
    const j = isObj(c.cnf) ? c.cnf.jkt : undefined;
    if (typeof j !== 'string' || j.length === 0 || j.length > 128) throw new Error('cnf');
  }
  return h;
}

// The keys a token may be checked with: by kid when it names one, the key's alg when it has
// one, signing keys of the alg's type, RSA of at least 2048 bits.
function candidates(h) {
  const [kty, crv] = KTY(h.alg);
  return V.jwks.keys.filter((k) => {
    if (has(h, 'kid') ? k.kid !== h.kid : false) return false;
    if (k.use !== undefined && k.use !== 'sig') return false;
    if (k.alg !== undefined && k.alg !== (h.alg === 'Ed25519' ? 'EdDSA' : h.alg) && k.alg !== h.alg) return false;
    if (k.kty !== kty || (crv && k.crv !== crv)) return false;
    if (kty === 'RSA' && Buffer.from(k.n, 'base64url').length * 8 < 2048) return false;
    return true;
  });
}

async function judgeJwt(token) {
  let h;
  try {
    h = jwtReference(token);
  } catch (e) {
    return { ok: false, why: `reference: ${e.message}` };
  }
  let last = 'no key';
  for (const k of candidates(h)) {
    try {
      const key = await jose.importJWK({ ...k, alg: undefined }, h.alg);
      await jose.jwtVerify(token, key, {
        algorithms: ALLOWED, issuer: V.issuer, // audience: the reference above
        clockTolerance: V.skew, currentDate: new Date(V.now * 1000), requiredClaims: ['exp'],
      });
      return { ok: true };
    } catch (e) {
      last = `jose: ${e.code ?? e.message}`;
      if (has(h, 'kid')) break;
    }
  }
  return { ok: false, why: last };
}

// DPoP: RFC 9449 §4.3 with the policy's htu comparison.
function normalizeHtu(u) {
  if (typeof u !== 'string' || u.length === 0 || !/^[\x21-\x7e]+$/.test(u) || /[?#]/.test(u)) return null;
  const m = /^(https?):\/\/([^/]*)(\/.*)?$/i.exec(u);
  if (!m) return null;
  const scheme = m[1].toLowerCase();
  const [, , authority, rawPath = '/'] = m;
  const hp = /^([A-Za-z0-9._-]+)(?::([1-9][0-9]*))?$/.exec(authority);
  if (!hp) return null;
  const port = hp[2] ? Number(hp[2]) : scheme === 'https' ? 443 : 80;
  if (port > 65535) return null;
  // The path: unreserved escapes decoded; nothing else may need interpreting.
  const path = rawPath.replace(/%([0-9A-Fa-f]{2})/g, (all, x) => {
    const ch = String.fromCharCode(parseInt(x, 16));
    return /[A-Za-z0-9._~-]/.test(ch) ? ch : all.toUpperCase();
  });
  if (!/^(\/[A-Za-z0-9._~!$&'()*+,=:@-]+)*\/?$/.test(path) || path.split('/').some((s) => s === '.' || s === '..')) return null;
  if (/\/\//.test(path)) return null;
  return `${scheme}://${hp[1].toLowerCase()}:${port}${path}`;
}

async function judgeDpop(proof, D) {
  try {
    if (proof.length > 8192) throw new Error('too large');
    const parts = proof.split('.');
    if (parts.length !== 3) throw new Error('not three segments');
    const H = strictJson(utf8(segment(parts[0])));
    const P = strictJson(utf8(segment(parts[1])));
    segment(parts[2]);
    const h = H.value, c = P.value;
    if (!isObj(h) || !isObj(c)) throw new Error('not objects');
    for (const m of ['typ', 'alg', 'jwk', 'crit', 'b64']) if (H.dups.has(m)) throw new Error(`duplicate ${m}`);
    for (const m of ['jti', 'htm', 'htu', 'iat', 'ath', 'nonce']) if (P.dups.has(m)) throw new Error(`duplicate ${m}`);
    if (has(h, 'crit') || has(h, 'b64')) throw new Error('crit/b64');
    if (typeof h.typ !== 'string' || !['dpop+jwt', 'application/dpop+jwt'].includes(h.typ.toLowerCase())) throw new Error('typ');
    if (typeof h.alg !== 'string' || !ALLOWED.includes(h.alg)) throw new Error('alg');
    if (!isObj(h.jwk) || has(h.jwk, 'd')) throw new Error('jwk');
    const [kty, crv] = KTY(h.alg);
    if (h.jwk.kty !== kty || (crv && h.jwk.crv !== crv)) throw new Error('jwk type');
    if (kty === 'RSA' && (typeof h.jwk.n !== 'string' || Buffer.from(h.jwk.n, 'base64url').length * 8 < 2048)) throw new Error('small');
    const key = await jose.importJWK({ kty: h.jwk.kty, crv: h.jwk.crv, x: h.jwk.x, y: h.jwk.y, n: h.jwk.n, e: h.jwk.e }, h.alg);
    const { payload } = await jose.compactVerify(proof, key, { algorithms: ALLOWED });
    void payload;
    if (typeof c.jti !== 'string' || Buffer.byteLength(c.jti) === 0 || Buffer.byteLength(c.jti) > 256) throw new Error('jti');
    if (c.htm !== D.method) throw new Error('htm');
    if (normalizeHtu(c.htu) !== normalizeHtu(D.htu)) throw new Error('htu');
    if (!Number.isInteger(c.iat) || c.iat < V.now - D.past || c.iat > V.now + D.future) throw new Error('iat');
    const ath = crypto.createHash('sha256').update(D.access_token).digest('base64url');
    if (c.ath !== ath) throw new Error('ath');
    const jkt = await jose.calculateJwkThumbprint(h.jwk, 'sha256');
    return { ok: true, jkt };
  } catch (e) {
    return { ok: false, why: e.code ?? e.message };
  }
}

const out = { jwt: {}, dpop: {} };
for (const v of V.jwt) out.jwt[v.id] = await judgeJwt(v.token);
for (const v of V.dpop.vectors) out.dpop[v.id] = await judgeDpop(v.proof, V.dpop);
fs.writeFileSync(vout, JSON.stringify(out));
const acc = (o) => Object.values(o).filter((r) => r.ok).length;
console.log(`judged: ${acc(out.jwt)}/${V.jwt.length} JWTs and ${acc(out.dpop)}/${V.dpop.vectors.length} proofs accepted`);
