// Differential verification, step 1: generate JWTs and DPoP proofs, valid and mutated.
//
//   node generate.mjs OUT.json [COUNT] [SEED]
//
// Keys are made fresh with node's crypto (OpenSSL); tokens are signed here by hand (not
// through jose) so that the mutations can reach every byte: header members, claims,
// encodings, signatures, key types and algorithms. mcpgate (src/fuzzing.rs,
// `differential_against_jose`) and judge.mjs (jose plus the strict reference rules) then
// judge every vector; run.sh compares. The policy both apply is in README.md ("Differential
// verification").
import crypto from 'node:crypto';
import fs from 'node:fs';

const [out, countArg, seedArg] = process.argv.slice(2);
const COUNT = Number(countArg ?? 3000);
let seed = Number(seedArg ?? Date.now() % 2 ** 31) >>> 0;
const SEED = seed;
function rnd() { // mulberry32
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];

const NOW = 1_800_000_000;
const ISSUER = 'https://as.example.com';
const AUDIENCE = 'https://mcp.example.com/deny';
const SKEW = 60;
const ACCESS_TOKEN = 'diff-access-token.' + crypto.randomBytes(8).toString('hex');
const HTU = 'https://mcp.example.com/mcp';

const b64 = (buf) => Buffer.from(buf).toString('base64url');
const enc = (obj) => b64(typeof obj === 'string' ? obj : JSON.stringify(obj));

function key(type, opts) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, opts);
  return { privateKey, publicKey, jwk: publicKey.export({ format: 'jwk' }) };
}
const K = {
  rsa: key('rsa', { modulusLength: 2048 }),
  p256: key('ec', { namedCurve: 'P-256' }),
  p384: key('ec', { namedCurve: 'P-384' }),
  ed: key('ed25519'),
  small: key('rsa', { modulusLength: 1024 }),
  psonly: key('rsa', { modulusLength: 2048 }),
  enc: key('ec', { namedCurve: 'P-256' }),
  rsa3072: key('rsa', { modulusLength: 3072 }),
};
const jwks = {
  keys: [
    { ...K.rsa.jwk, kid: 'rsa' },
    { ...K.p256.jwk, kid: 'p256' },
    { ...K.p384.jwk, kid: 'p384' },
    { ...K.ed.jwk, kid: 'ed' },
    { ...K.small.jwk, kid: 'small' },
    { ...K.psonly.jwk, kid: 'psonly', alg: 'PS256' },
    { ...K.enc.jwk, kid: 'enc', use: 'enc' },
    { ...K.rsa3072.jwk, kid: 'rsa3072', use: 'sig' },
  ],
};
// Keys only the attacker has (never in the JWKS).
const OTHER = { p256: key('ec', { namedCurve: 'P-256' }), rsa: key('rsa', { modulusLength: 2048 }), ed: key('ed25519') };

const HASH = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };
function sign(alg, k, input) {
  const data = Buffer.from(input);
  const bits = alg.slice(2);
  if (alg.startsWith('RS')) return crypto.sign(HASH[bits], data, k.privateKey);
  if (alg.startsWith('PS')) {
    return crypto.sign(HASH[bits], data, {
      key: k.privateKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(bits) / 8,
    });
  }
  if (alg.startsWith('ES')) return crypto.sign(HASH[bits], data, { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
  if (alg === 'EdDSA' || alg === 'Ed25519') return crypto.sign(null, data, k.privateKey);
  if (alg.startsWith('HS')) return crypto.createHmac(HASH[bits], k).update(data).digest();
  if (alg === 'none') return Buffer.alloc(0);
  throw new Error(alg);
}
const ALGS_OF = {
  rsa: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
  rsa3072: ['RS256', 'PS512'],
  p256: ['ES256'], p384: ['ES384'], ed: ['EdDSA', 'Ed25519'],
  small: ['RS256'], psonly: ['PS256', 'RS256'], enc: ['ES256'],
};

// ECDSA: the other valid signature (r, n - s).
const ORDER = {
  ES256: BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551'),
  ES384: BigInt('0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973'),
};
function highS(alg, sig) {
  const n = sig.length / 2;
  const s = BigInt('0x' + sig.subarray(n).toString('hex'));
  const s2 = (ORDER[alg] - s).toString(16).padStart(n * 2, '0');
  return Buffer.concat([sig.subarray(0, n), Buffer.from(s2, 'hex')]);
}
function toDer(sig) {
  const n = sig.length / 2;
  const int = (b) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    b = b.subarray(i);
    if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
    return Buffer.concat([Buffer.from([2, b.length]), b]);
  };
  const body = Buffer.concat([int(sig.subarray(0, n)), int(sig.subarray(n))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

// ------------------------------------------------------------------------------------------
// JWT mutations. Each works on {header, claims, headerRaw?, claimsRaw?, keyName, alg} before
// signing, or on the compact token after (post).
// ------------------------------------------------------------------------------------------
const dup = (json, member, value) => json.replace(/^\{/, `{"${member}":${JSON.stringify(value)},`);
const PRE = [
  ['alg none', (t) => { t.header.alg = 'none'; t.signAlg = 'none'; }],
  ['alg HS256 keyed with the public key', (t) => {
    t.header.alg = 'HS256'; t.signAlg = 'HS256';
    t.hmacKey = K.rsa.publicKey.export({ type: 'spki', format: 'pem' });
  }],
  ['alg of another family', (t) => { t.header.alg = pick(['RS256', 'ES256', 'EdDSA', 'PS384', 'ES384']); }],
  ['alg lower case', (t) => { t.header.alg = String(t.header.alg).toLowerCase(); }],
  ['alg missing', (t) => { delete t.header.alg; }],
  ['alg not a string', (t) => { t.header.alg = pick([1, null, ['ES256'], { a: 1 }]); }],
  ['kid unknown', (t) => { t.header.kid = 'nope'; }],
  ['kid not a string', (t) => { t.header.kid = pick([1, null, ['p256'], true]); }],
  ['kid missing', (t) => { delete t.header.kid; }],
  ['kid long', (t) => { t.header.kid = 'k'.repeat(300); }],
  ['typ', (t) => { t.header.typ = pick(['at+jwt', 'AT+JWT', 'application/at+jwt', 'JWT', 'jwt', 'application/jwt', 'dpop+jwt', 'JOSE', 'at+jwt ', '', null, 1]); }],
  ['typ missing', (t) => { delete t.header.typ; }],
  ['crit', (t) => { t.header.crit = pick([['exp'], [], ['b64']]); }],
  ['b64 false', (t) => { t.header.b64 = false; t.header.crit = ['b64']; }],
  ['embedded jwk', (t) => { t.header.jwk = OTHER.p256.jwk; }],
  ['jku', (t) => { t.header.jku = 'https://evil.example/jwks'; }],
  ['x5c', (t) => { t.header.x5c = ['MIIB']; }],
  ['x5u null', (t) => { t.header.x5u = null; }],
  ['unread header member', (t) => { t.header.zip = 'DEF'; t.header.foo = { bar: [1, 2] }; }],
  ['duplicate header alg (same)', (t) => { t.headerDup = ['alg', t.header.alg]; }],
  ['duplicate header alg (other)', (t) => { t.headerDup = ['alg', 'none']; }],
  ['duplicate header kid', (t) => { t.headerDup = ['kid', 'nope']; }],
  ['duplicate unread header member', (t) => { t.header.foo = 1; t.headerDup = ['foo', 2]; }],
  ['header not an object', (t) => { t.headerRaw = pick(['[]', '"x"', '1', 'null', '{', '{"alg":"ES256"} x']); }],
  ['deep header', (t) => { let v = 1; for (let i = 0; i < 20; i++) v = [v]; t.header.foo = v; }],
  ['iss wrong', (t) => { t.claims.iss = pick([ISSUER + '/', 'https://AS.example.com', 'https://evil.example', '', 1, null]); }],
  ['iss missing', (t) => { delete t.claims.iss; }],
  ['aud', (t) => { t.claims.aud = pick([[AUDIENCE], ['x', AUDIENCE], ['x'], 'x', AUDIENCE + '/', [], [AUDIENCE, 1], 1, null, 'https://MCP.example.com/deny']); }],
  ['aud missing', (t) => { delete t.claims.aud; }],
  ['exp', (t) => {
    t.claims.exp = pick([NOW - SKEW - 1, NOW - SKEW, NOW - SKEW + 1, NOW, NOW + 1, NOW - 1000, NOW + 0.5, NOW + 3600.5,
      String(NOW + 3600), -1, 0, 1e20, 253402300799, 253402300800, null, true, [NOW + 3600]]);
  }],
  ['exp missing', (t) => { delete t.claims.exp; }],
  ['nbf', (t) => { t.claims.nbf = pick([NOW + SKEW, NOW + SKEW + 1, NOW + SKEW - 1, NOW, NOW + 0.5, String(NOW), -5, null]); }],
  ['iat', (t) => { t.claims.iat = pick([NOW + SKEW, NOW + SKEW + 1, NOW - 100000, NOW + 1.5, String(NOW), -1, null]); }],
  ['claim types', (t) => {
    const c = pick(['sub', 'jti', 'client_id', 'azp', 'scope']);
    t.claims[c] = pick([1, null, ['x'], { a: 1 }, '', 'ok']);
  }],
  ['scp', (t) => { t.claims.scp = pick([['mcp:tools'], 'mcp:tools mcp:read', ['a b'], [1], 1, null]); }],
  ['cnf', (t) => { t.claims.cnf = pick([{ jkt: 'abc' }, { jkt: '' }, { jkt: 'x'.repeat(129) }, { 'x5t#S256': 'abc' }, {}, 'jkt', null, { jkt: 1 }]); }],
  ['duplicate claim (exp)', (t) => { t.claimsDup = ['exp', NOW - 100000]; }],
  ['duplicate claim (aud)', (t) => { t.claimsDup = ['aud', 'x']; }],
  ['duplicate claim (iss, same)', (t) => { t.claimsDup = ['iss', ISSUER]; }],
  ['duplicate unread claim', (t) => { t.claims.foo = 1; t.claimsDup = ['foo', 2]; }],
  ['claims not an object', (t) => { t.claimsRaw = pick(['[]', '"x"', '1', 'null', '{"exp":1', '{}']); }],
  ['huge token', (t) => { t.claims.pad = 'x'.repeat(pick([11000, 13000])); }],
  ['deep claims', (t) => { let v = {}; for (let i = 0; i < 17; i++) v = { a: v }; t.claims.foo = v; }],
  ['unicode claims', (t) => { t.claims.sub = 'é\u0000\u2028'; t.claims.iss = pick([ISSUER, 'https://as.example.com\u0000']); }],
  ['escaped iss', (t) => { t.claimsRaw = JSON.stringify(t.claims).replace('"iss":"https://as.example.com"', '"iss":"https:\\/\\/as.example.com"'); }],
  ['key: unlisted signer', (t) => { t.signKey = pick(['p256', 'rsa', 'ed']); t.other = true; }],
  ['key: small RSA', (t) => { t.keyName = 'small'; t.header.kid = 'small'; t.header.alg = 'RS256'; }],
  ['key: alg-bound key used with another alg', (t) => { t.keyName = 'psonly'; t.header.kid = 'psonly'; t.header.alg = pick(['RS256', 'PS256']); }],
  ['key: encryption key', (t) => { t.keyName = 'enc'; t.header.kid = 'enc'; t.header.alg = 'ES256'; }],
  ['key: kid of another key', (t) => { t.header.kid = pick(['rsa', 'p256', 'p384', 'ed', 'rsa3072']); }],
];
const POST = [
  ['padding', (s) => s.replace(/\.([^.]*)$/, '.$1==')],
  ['padding in header', (s) => s.replace(/^([^.]*)/, '$1=')],
  ['standard alphabet', (s) => s.replace(/-/g, '+').replace(/_/g, '/')],
  ['white space', (s) => s.replace('.', ' .')],
  ['extra segment', (s) => s + '.AAAA'],
  ['two segments', (s) => s.split('.').slice(0, 2).join('.')],
  ['empty signature', (s) => s.replace(/\.[^.]*$/, '.')],
  ['signature trailing bits', (s) => {
    const i = s.length - 1;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sig = s.slice(s.lastIndexOf('.') + 1);
    if (sig.length % 4 === 0) return s;
    const c = alphabet.indexOf(s[i]);
    return s.slice(0, i) + alphabet[c ^ 1];
  }],
  ['bit flip in signature', (s) => {
    const [h, p, sig] = s.split('.');
    const b = Buffer.from(sig, 'base64url');
    if (b.length) b[Math.floor(rnd() * b.length)] ^= 1 << Math.floor(rnd() * 8);
    return `${h}.${p}.${b64(b)}`;
  }],
  ['truncated signature', (s) => {
    const [h, p, sig] = s.split('.');
    const b = Buffer.from(sig, 'base64url');
    return `${h}.${p}.${b64(b.subarray(0, Math.max(1, b.length - 1 - Math.floor(rnd() * 4))))}`;
  }],
  ['zero signature', (s) => { const [h, p, sig] = s.split('.'); return `${h}.${p}.${b64(Buffer.alloc(Buffer.from(sig, 'base64url').length))}`; }],
  ['payload swapped after signing', (s) => { const [h, , sig] = s.split('.'); return `${h}.${enc({ iss: ISSUER, aud: AUDIENCE, exp: NOW + 99999 })}.${sig}`; }],
  ['bit flip in payload', (s) => {
    const [h, p, sig] = s.split('.');
    const b = Buffer.from(p, 'base64url');
    b[Math.floor(rnd() * b.length)] ^= 1 << Math.floor(rnd() * 8);
    return `${h}.${b64(b)}.${sig}`;
  }],
];

function base(keyName) {
  const alg = pick(ALGS_OF[keyName]);
  return {
    keyName, signAlg: null,
    header: { alg, kid: keyName, ...(rnd() < 0.5 ? { typ: pick(['at+jwt', 'JWT']) } : {}) },
    claims: {
      iss: ISSUER, sub: 'alice', aud: rnd() < 0.5 ? AUDIENCE : ['other', AUDIENCE],
      exp: NOW + 600, iat: NOW - 10, jti: crypto.randomBytes(6).toString('hex'), client_id: 'c1', scope: 'mcp:tools',
    },
  };
}

function buildJwt(t) {
  if (t.other) t.header.alg = pick({ p256: ['ES256'], rsa: ['RS256', 'PS256'], ed: ['EdDSA'] }[t.signKey]);
  let h = t.headerRaw ?? JSON.stringify(t.header);
  if (t.headerDup && !t.headerRaw) h = dup(h, ...t.headerDup);
  let c = t.claimsRaw ?? JSON.stringify(t.claims);
  if (t.claimsDup && !t.claimsRaw) c = dup(c, ...t.claimsDup);
  const input = `${enc(h)}.${enc(c)}`;
  const alg = t.signAlg ?? (typeof t.header.alg === 'string' ? t.header.alg : null);
  let signAlg, k;
  if (t.other) [signAlg, k] = [t.header.alg, OTHER[t.signKey]];
  else if (alg === 'none' || alg === 'HS256') [signAlg, k] = [alg, t.hmacKey];
  else [signAlg, k] = [ALGORITHM_FOR_KEY(alg, t.keyName), K[t.keyName]];
  let sig;
  try {
    sig = sign(signAlg, k, input);
  } catch {
    sig = crypto.randomBytes(64);
  }
  if (t.ecdsaHighS && /^ES(256|384)$/.test(signAlg)) sig = highS(signAlg, sig);
  if (t.ecdsaDer && /^ES(256|384)$/.test(signAlg)) sig = toDer(sig);
  return `${input}.${b64(sig)}`;
}
// The algorithm the signer actually uses: the header's when it fits the key, else the key's
// own (so a mismatched header alg carries a signature made under another algorithm).
function ALGORITHM_FOR_KEY(alg, keyName) {
  const fits = ALGS_OF[keyName];
  if (fits.includes(alg)) return alg;
  const lower = fits.find((a) => a.toLowerCase() === String(alg).toLowerCase());
  return lower ?? fits[0];
}

const vectors = { seed: SEED, now: NOW, issuer: ISSUER, audience: AUDIENCE, skew: SKEW, jwks, jwt: [], dpop: null };
const keyNames = ['rsa', 'p256', 'p384', 'ed', 'rsa3072'];
for (let i = 0; i < COUNT; i++) {
  const t = base(pick(keyNames));
  const notes = [];
  const n = i < COUNT / 10 ? 0 : 1 + Math.floor(rnd() * 2);
  for (let j = 0; j < n; j++) {
    const [name, f] = pick(PRE);
    f(t);
    notes.push(name);
  }
  if (rnd() < 0.08) { t.ecdsaHighS = true; notes.push('ECDSA high s'); }
  if (rnd() < 0.04) { t.ecdsaDer = true; notes.push('ECDSA DER signature'); }
  let token = buildJwt(t);
  if (rnd() < 0.2) {
    const [name, f] = pick(POST);
    token = f(token);
    notes.push(name);
  }
  vectors.jwt.push({ id: i, note: notes.join('; ') || 'valid', token });
}

// ------------------------------------------------------------------------------------------
// DPoP proofs
// ------------------------------------------------------------------------------------------
const ath = b64(crypto.createHash('sha256').update(ACCESS_TOKEN).digest());
const PROOF_KEYS = {
  p256: { k: key('ec', { namedCurve: 'P-256' }), algs: ['ES256'] },
  p384: { k: key('ec', { namedCurve: 'P-384' }), algs: ['ES384'] },
  ed: { k: key('ed25519'), algs: ['EdDSA', 'Ed25519'] },
  rsa: { k: key('rsa', { modulusLength: 2048 }), algs: ['RS256', 'PS256', 'PS512', 'RS384'] },
  small: { k: key('rsa', { modulusLength: 1024 }), algs: ['RS256'] },
};
const DPRE = [
  ['typ', (p) => { p.header.typ = pick(['DPoP+JWT', 'application/dpop+jwt', 'jwt', 'at+jwt', '', null, 1]); }],
  ['typ missing', (p) => { delete p.header.typ; }],
  ['alg none', (p) => { p.header.alg = 'none'; p.signAlg = 'none'; }],
  ['alg HS256', (p) => { p.header.alg = 'HS256'; p.signAlg = 'HS256'; p.hmacKey = 'secret'; }],
  ['alg mismatched to jwk', (p) => { p.header.alg = pick(['ES256', 'RS256', 'EdDSA', 'ES384']); }],
  ['alg not a string', (p) => { p.header.alg = 1; }],
  ['jwk missing', (p) => { delete p.header.jwk; }],
  ['jwk private', (p) => { p.header.jwk = p.key.k.privateKey.export({ format: 'jwk' }); }],
  ['jwk of another key', (p) => { p.header.jwk = pick(Object.values(PROOF_KEYS)).k.jwk; }],
  ['jwk with alg/use/kid members', (p) => { p.header.jwk = { ...p.header.jwk, kid: 'x', use: pick(['sig', 'enc']), alg: pick(['ES256', 'RS256']) }; }],
  ['jwk symmetric', (p) => { p.header.jwk = { kty: 'oct', k: 'c2VjcmV0' }; }],
  ['jwk not an object', (p) => { p.header.jwk = pick(['x', 1, null, []]); }],
  ['small RSA jwk', (p) => { p.key = PROOF_KEYS.small; p.header.jwk = p.key.k.jwk; p.header.alg = 'RS256'; }],
  ['crit', (p) => { p.header.crit = pick([['exp'], ['htm'], []]); }],
  ['b64 false', (p) => { p.header.b64 = false; p.header.crit = ['b64']; }],
  ['x5c and kid beside jwk', (p) => { p.header.x5c = ['MIIB']; p.header.kid = 'k'; }],
  ['duplicate header alg', (p) => { p.headerDup = ['alg', pick(['none', p.header.alg])]; }],
  ['duplicate header jwk', (p) => { p.headerDup = ['jwk', PROOF_KEYS.p256.k.jwk]; }],
  ['duplicate header typ', (p) => { p.headerDup = ['typ', 'jwt']; }],
  ['htm', (p) => { p.claims.htm = pick(['GET', 'post', 'POST ', 'PUT', '', 1, null]); }],
  ['htm missing', (p) => { delete p.claims.htm; }],
  ['htu', (p) => {
    p.claims.htu = pick(['https://MCP.EXAMPLE.COM/mcp', 'https://mcp.example.com:443/mcp', 'HTTPS://mcp.example.com/%6Dcp',
      'https://mcp.example.com/mcp/', 'https://mcp.example.com/mcp?x=1', 'https://mcp.example.com/mcp#f',
      'https://user@mcp.example.com/mcp', 'http://mcp.example.com/mcp', 'https://mcp.example.com:8443/mcp',
      'https://mcp.example.com./mcp', 'https://mcp.example.com/MCP', 'https://mcp.example.com/mcp/../mcp',
      'https://mcp.example.com//mcp', 'https://mcp.example.com', 'https://other.example/mcp', ' https://mcp.example.com/mcp',
      'https://mcp.example.com:0443/mcp', 'https://mcp.example.com/%6dcp', 1, null]);
  }],
  ['htu missing', (p) => { delete p.claims.htu; }],
  ['iat', (p) => { p.claims.iat = pick([NOW - 300, NOW - 301, NOW + 300, NOW + 301, NOW + 0.5, String(NOW), null, -1]); }],
  ['iat missing', (p) => { delete p.claims.iat; }],
  ['jti', (p) => { p.claims.jti = pick(['', 'j'.repeat(256), 'j'.repeat(257), 1, null, 'é'.repeat(128), 'é'.repeat(129)]); }],
  ['jti missing', (p) => { delete p.claims.jti; }],
  ['ath', (p) => { p.claims.ath = pick([ath + '=', ath.toUpperCase(), b64(crypto.createHash('sha256').update('other').digest()), '', 1, null]); }],
  ['ath missing', (p) => { delete p.claims.ath; }],
  ['duplicate claim htm', (p) => { p.claimsDup = ['htm', 'GET']; }],
  ['duplicate claim iat', (p) => { p.claimsDup = ['iat', NOW]; }],
  ['unread claims', (p) => { p.claims.foo = [1]; p.claims.nonce = 'n'; }],
  ['claims not an object', (p) => { p.claimsRaw = pick(['[]', '1', 'null', '{']); }],
];
const dpop = { method: 'POST', htu: HTU, access_token: ACCESS_TOKEN, past: 300, future: 300, vectors: [] };
for (let i = 0; i < Math.floor(COUNT / 2); i++) {
  const key = pick(Object.values(PROOF_KEYS).filter((k) => k !== PROOF_KEYS.small));
  const p = {
    key,
    header: { typ: 'dpop+jwt', alg: pick(key.algs), jwk: key.k.jwk },
    claims: { jti: crypto.randomBytes(8).toString('hex'), htm: 'POST', htu: HTU, iat: NOW - Math.floor(rnd() * 200), ath },
  };
  const notes = [];
  const n = i < COUNT / 20 ? 0 : 1 + Math.floor(rnd() * 2);
  for (let j = 0; j < n; j++) {
    const [name, f] = pick(DPRE);
    f(p);
    notes.push(name);
  }
  let h = p.headerRaw ?? JSON.stringify(p.header);
  if (p.headerDup) h = dup(h, ...p.headerDup);
  let c = p.claimsRaw ?? JSON.stringify(p.claims);
  if (p.claimsDup) c = dup(c, ...p.claimsDup);
  const input = `${enc(h)}.${enc(c)}`;
  const want = p.signAlg ?? (typeof p.header.alg === 'string' ? p.header.alg : p.key.algs[0]);
  const signAlg = want === 'none' || want === 'HS256' ? want : (p.key.algs.includes(want) ? want : p.key.algs[0]);
  let sig = sign(signAlg, signAlg === 'HS256' ? p.hmacKey : p.key.k, input);
  if (rnd() < 0.05 && /^ES/.test(signAlg)) { sig = highS(signAlg, sig); notes.push('ECDSA high s'); }
  let proof = `${input}.${b64(sig)}`;
  if (rnd() < 0.1) {
    const [name, f] = pick(POST.filter(([n]) => n !== 'payload swapped after signing'));
    proof = f(proof);
    notes.push(name);
  }
  dpop.vectors.push({ id: i, note: notes.join('; ') || 'valid', proof });
}
vectors.dpop = dpop;
fs.writeFileSync(out, JSON.stringify(vectors));
console.log(`generated ${vectors.jwt.length} JWTs and ${dpop.vectors.length} DPoP proofs (seed ${SEED}) into ${out}`);
