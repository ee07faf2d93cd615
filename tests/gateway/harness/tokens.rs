//! Keys, JWS and tokens: every key the tests sign with (generated once per test binary),
//! hand-built JWS ([`jws`], [`Tok`]) so tests can produce malformed and odd tokens, DPoP
//! proofs ([`Proof`]), and the register of secrets the gateway's logs are checked against.
//!
//! Every token [`Tok::build`] or [`Proof::build`] makes, and every credential the raw client
//! sends in `Authorization`, `DPoP` or `X-API-Key`, is remembered; [`assert_no_tokens`] finds
//! any of them (or the payload or signature segment of one) in a log. The gateway launcher
//! runs it on every gateway's log when the gateway is dropped.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256,
};
use base64::engine::general_purpose::{STANDARD as B64_STD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `Instant` at which the wall clock reads `unix` seconds.
pub fn instant_of_unix(unix: i64) -> std::time::Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ahead = unix as f64 - now;
    if ahead >= 0.0 {
        std::time::Instant::now() + std::time::Duration::from_secs_f64(ahead)
    } else {
        std::time::Instant::now() - std::time::Duration::from_secs_f64(-ahead)
    }
}

pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes `%XX` escapes once (invalid escapes are kept verbatim).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every key the tests sign with, generated once per test binary.
pub struct Keys {
    /// ES256 / P-256, kid `k1`.
    pub k1: EcdsaKeyPair,
    /// Same private key as `k1`, producing DER (ASN.1) signatures.
    pub k1_der: EcdsaKeyPair,
    /// RS256 / RSA-2048, kid `k2`.
    pub k2: RsaKeyPair,
    /// EdDSA / Ed25519, kid `ed1`.
    pub ed: Ed25519KeyPair,
    /// ES384 / P-384, kid `p384`.
    pub p384: EcdsaKeyPair,
    /// ES256 key used for rotation (kid `k3`), not in the default JWKS.
    pub k3: EcdsaKeyPair,
    /// An attacker's ES256 key, never in a trusted JWKS.
    pub evil: EcdsaKeyPair,
    /// A second issuer's ES256 key (kid `o1`).
    pub other: EcdsaKeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> = LazyLock::new(|| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Keys {
            k1: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, p256.as_ref()).unwrap(),
            k1_der: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, p256.as_ref())
                .unwrap(),
            k2: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
            p384: EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
            k3: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            evil: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            other: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    });
    &KEYS
}

/// A 1024-bit RSA key (too weak; must be refused). Test fixture generated with
/// `openssl genrsa 1024`; signing is done with plain modular exponentiation.
pub mod weak_rsa {
    pub const N: &str = "b5a6022c2087e9d6e0cb7b20f1135a033dce6659c795941507310fecccc60ad221337243a948c0aa0243724d82a574d7abd875299c5de48768b0d860a6ee215a0f41f76bf3e366ca5c19e4d80b9f48d850d7f1097364d22693cf1790d9968144675ffae3ba4e884331e8bce5efe215ab4088d4e305d4b07375e99fc651cccbd9";
    pub const D: &str = "5f1a3338f72f317696eaf1e425538464fe0ef9f7374f50e0518b9652dc433397205ad71025a93975c90996e68de8226c684443d32d52db3b29ccacfcad692f7c1d131d22bc71d2408537f7928eb61ffd4271d41b7642e43b86bfc5ae13b4d5fa8761dc9566613158a47b74ba989532b124afb108b01b08a996ba3a3685446da1";

    pub fn n_bytes() -> Vec<u8> {
        num_bigint::BigUint::parse_bytes(N.as_bytes(), 16)
            .unwrap()
            .to_bytes_be()
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub fn sign_rs256(msg: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        let n = num_bigint::BigUint::parse_bytes(N.as_bytes(), 16).unwrap();
        let d = num_bigint::BigUint::parse_bytes(D.as_bytes(), 16).unwrap();
        let k = 128usize;
        let digest_info_prefix: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let hash = sha2::Sha256::digest(msg);
        let t_len = digest_info_prefix.len() + hash.len();
        let mut em = vec![0x00u8, 0x01];
        em.extend(std::iter::repeat_n(0xffu8, k - t_len - 3));
        em.push(0x00);
        em.extend_from_slice(&digest_info_prefix);
        em.extend_from_slice(&hash);
        let s = num_bigint::BigUint::from_bytes_be(&em).modpow(&d, &n);
        let mut out = s.to_bytes_be();
        while out.len() < k {
            out.insert(0, 0);
        }
        out
    }
}

fn ec_xy(kp: &EcdsaKeyPair) -> (String, String) {
    let pt = kp.public_key().as_ref();
    assert_eq!(pt[0], 4, "uncompressed point");
    let half = (pt.len() - 1) / 2;
    (b64u(&pt[1..1 + half]), b64u(&pt[1 + half..]))
}

pub fn ec_jwk(kp: &EcdsaKeyPair, kid: &str, crv: &str, alg: &str) -> Value {
    let (x, y) = ec_xy(kp);
    json!({"kty": "EC", "crv": crv, "x": x, "y": y, "kid": kid, "alg": alg, "use": "sig"})
}

pub fn rsa_n_e(kp: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    let pk = kp.public_key();
    (
        pk.modulus().big_endian_without_leading_zero().to_vec(),
        pk.exponent().big_endian_without_leading_zero().to_vec(),
    )
}

pub fn rsa_jwk(kp: &RsaKeyPair, kid: &str, alg: &str) -> Value {
    let (n, e) = rsa_n_e(kp);
    json!({"kty": "RSA", "n": b64u(&n), "e": b64u(&e), "kid": kid, "alg": alg, "use": "sig"})
}

pub fn ed_jwk(kp: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(kp.public_key().as_ref()), "kid": kid, "alg": "EdDSA", "use": "sig"})
}

pub fn weak_rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "n": b64u(&weak_rsa::n_bytes()), "e": "AQAB", "kid": kid, "alg": "RS256", "use": "sig"})
}

/// SubjectPublicKeyInfo DER of `k2`.
pub fn k2_spki_der() -> Vec<u8> {
    let der = keys().k2.public_key().as_der().unwrap();
    der.as_ref().to_vec()
}

/// PEM text of `k2`'s public key.
pub fn k2_pem() -> String {
    let b64 = B64_STD.encode(k2_spki_der());
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The default trusted key set: `k1` (ES256), `k2` (RS256), `ed1` (EdDSA), `p384` (ES384).
pub fn default_jwks() -> Value {
    let k = keys();
    json!({"keys": [
        ec_jwk(&k.k1, "k1", "P-256", "ES256"),
        rsa_jwk(&k.k2, "k2", "RS256"),
        ed_jwk(&k.ed, "ed1"),
        ec_jwk(&k.p384, "p384", "P-384", "ES384"),
    ]})
}

/// The attacker's key set (served by [`Canary`]).
pub fn attacker_jwks() -> Value {
    json!({"keys": [ec_jwk(&keys().evil, "k1", "P-256", "ES256")]})
}

/// How a JWS signature is produced.
#[derive(Clone, Debug)]
pub enum Signer {
    /// ES256 with `k1` (raw r||s).
    K1,
    /// ES256 with `k1`, DER-encoded signature.
    K1Der,
    /// RS256 with `k2`.
    K2,
    /// PS256 with `k2`.
    K2Pss,
    /// EdDSA with the Ed25519 key.
    Ed,
    /// ES384 with the P-384 key.
    P384,
    /// ES256 with the rotation key `k3`.
    K3,
    /// ES256 with the attacker key.
    Evil,
    /// ES256 with the second issuer's key.
    Other,
    /// RS256 with the 1024-bit key.
    Weak,
    /// HMAC-SHA256 with the given secret.
    Hmac(Vec<u8>),
    /// A fixed signature (e.g. empty, zeros).
    Fixed(Vec<u8>),
}

impl Signer {
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let k = keys();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::K1 => k.k1.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::K1Der => k.k1_der.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::K3 => k.k3.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Evil => k.evil.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Other => k.other.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::P384 => k.p384.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ed => k.ed.sign(input).as_ref().to_vec(),
            Signer::K2 | Signer::K2Pss => {
                let mut sig = vec![0u8; k.k2.public_modulus_len()];
                let enc = if matches!(self, Signer::K2) {
                    &RSA_PKCS1_SHA256
                } else {
                    &RSA_PSS_SHA256
                };
                k.k2.sign(enc, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::Weak => weak_rsa::sign_rs256(input),
            Signer::Hmac(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
            }
            Signer::Fixed(sig) => sig.clone(),
        }
    }
}

/// `b64u(header).b64u(payload).b64u(sig)` over raw header/payload bytes.
pub fn jws_bytes(header: &[u8], payload: &[u8], signer: &Signer) -> String {
    let input = format!("{}.{}", b64u(header), b64u(payload));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64u(&sig))
}

/// Compact JWS from raw JSON text (so tests can write duplicate members etc.).
pub fn jws(header: &str, payload: &str, signer: &Signer) -> String {
    jws_bytes(header.as_bytes(), payload.as_bytes(), signer)
}

/// A token under construction: header and claims as JSON objects plus a signer.
#[derive(Clone, Debug)]
pub struct Tok {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signer: Signer,
}

impl Tok {
    /// A good RFC 9068 access token: ES256/k1, `typ=at+jwt`, sub alice, scope `mcp:read`.
    pub fn new(iss: &str, aud: &str) -> Tok {
        let t = now();
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
        let claims = json!({
            "iss": iss,
            "aud": aud,
            "sub": "alice",
            "client_id": "client-1",
            "jti": random_hex(8),
            "iat": t,
            "exp": t + 300,
            "scope": "mcp:read",
        });
        Tok {
            header: header.as_object().unwrap().clone(),
            claims: claims.as_object().unwrap().clone(),
            signer: Signer::K1,
        }
    }
    pub fn h(mut self, k: &str, v: Value) -> Tok {
        self.header.insert(k.into(), v);
        self
    }
    pub fn no_h(mut self, k: &str) -> Tok {
        self.header.remove(k);
        self
    }
    pub fn c(mut self, k: &str, v: Value) -> Tok {
        self.claims.insert(k.into(), v);
        self
    }
    pub fn no_c(mut self, k: &str) -> Tok {
        self.claims.remove(k);
        self
    }
    pub fn scope(self, s: &str) -> Tok {
        self.c("scope", json!(s))
    }
    pub fn signer(mut self, s: Signer) -> Tok {
        self.signer = s;
        self
    }
    /// Sets `alg`, `kid` and the signer together.
    pub fn key(self, alg: &str, kid: &str, s: Signer) -> Tok {
        self.h("alg", json!(alg)).h("kid", json!(kid)).signer(s)
    }
    pub fn header_text(&self) -> String {
        serde_json::to_string(&self.header).unwrap()
    }
    pub fn claims_text(&self) -> String {
        serde_json::to_string(&self.claims).unwrap()
    }
    /// The compact token (remembered for the log checks).
    pub fn build(&self) -> String {
        let t = jws(&self.header_text(), &self.claims_text(), &self.signer);
        remember(&t);
        t
    }
}

// ---------------------------------------------------------------------------------------------
// DPoP proofs
// ---------------------------------------------------------------------------------------------

/// The DPoP fixtures' proof key `P`: the attacker fixture key (a client key the IdP never
/// trusts for tokens).
pub fn p_key() -> &'static EcdsaKeyPair {
    &keys().evil
}

/// The public JWK of a P-256 key, as a DPoP proof carries it (no `kid`, `alg`, `use`).
pub fn public_jwk(kp: &EcdsaKeyPair) -> Value {
    let mut jwk = ec_jwk(kp, "x", "P-256", "ES256");
    let m = jwk.as_object_mut().unwrap();
    m.remove("kid");
    m.remove("alg");
    m.remove("use");
    jwk
}

/// RFC 7638 thumbprint of a P-256 JWK, computed here independently of the gateway.
pub fn jkt(kp: &EcdsaKeyPair) -> String {
    let jwk = public_jwk(kp);
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    b64u(&Sha256::digest(canonical.as_bytes()))
}

/// `ath`: the base64url SHA-256 of the access token.
pub fn ath(token: &str) -> String {
    b64u(&Sha256::digest(token.as_bytes()))
}

/// The DPoP `htu` of the fixtures' `/mcp` route.
pub const HTU: &str = "https://mcp.example.com/mcp";

/// A DPoP proof builder; defaults are a valid proof by `P` for POST [`HTU`].
pub struct Proof {
    header: Value,
    claims: Value,
    key: &'static EcdsaKeyPair,
    raw_signature: Option<Vec<u8>>,
    /// Bytes written in place of every string `"ODD"` of the header and claims (any bytes,
    /// UTF-8 or not), before signing.
    odd: Option<Vec<u8>>,
}

impl Proof {
    pub fn new(token: &str) -> Proof {
        Proof::for_htu(token, "POST", HTU)
    }

    pub fn for_htu(token: &str, htm: &str, htu: &str) -> Proof {
        Proof {
            header: json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(p_key())}),
            claims: json!({"jti": random_hex(12), "htm": htm, "htu": htu, "iat": now(), "ath": ath(token)}),
            key: p_key(),
            raw_signature: None,
            odd: None,
        }
    }

    /// Writes `bytes` in place of every string value `"ODD"` (see [`Proof::h`], [`Proof::c`]).
    pub fn odd(mut self, bytes: &[u8]) -> Proof {
        self.odd = Some(bytes.to_vec());
        self
    }

    fn segment(&self, v: &Value) -> String {
        let text = serde_json::to_vec(v).unwrap();
        let Some(odd) = &self.odd else {
            return b64u(&text);
        };
        let mut out = Vec::new();
        let mut rest = text.as_slice();
        while let Some(i) = rest.windows(5).position(|w| w == b"\"ODD\"") {
            out.extend_from_slice(&rest[..=i]);
            out.extend_from_slice(odd);
            out.push(b'"');
            rest = &rest[i + 5..];
        }
        out.extend_from_slice(rest);
        b64u(&out)
    }

    pub fn h(mut self, k: &str, v: Value) -> Proof {
        self.header[k] = v;
        self
    }

    pub fn no_h(mut self, k: &str) -> Proof {
        self.header.as_object_mut().unwrap().remove(k);
        self
    }

    pub fn c(mut self, k: &str, v: Value) -> Proof {
        self.claims[k] = v;
        self
    }

    pub fn no_c(mut self, k: &str) -> Proof {
        self.claims.as_object_mut().unwrap().remove(k);
        self
    }

    pub fn signed_by(mut self, key: &'static EcdsaKeyPair) -> Proof {
        self.key = key;
        self
    }

    pub fn signature(mut self, sig: Vec<u8>) -> Proof {
        self.raw_signature = Some(sig);
        self
    }

    /// The compact proof (remembered for the log checks).
    pub fn build(&self) -> String {
        let input = format!(
            "{}.{}",
            self.segment(&self.header),
            self.segment(&self.claims)
        );
        let sig = match &self.raw_signature {
            Some(s) => s.clone(),
            None => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                self.key
                    .sign(&rng, input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
        };
        let proof = format!("{input}.{}", b64u(&sig));
        remember(&proof);
        proof
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets that must never reach a log
// ---------------------------------------------------------------------------------------------

/// Shorter strings (a JWS segment of a tiny payload, a test's `a b`) are not looked for.
const MIN_SECRET: usize = 16;

/// Every remembered needle, indexed by its first [`MIN_SECRET`] bytes, so a log is scanned
/// once whatever the number of secrets.
static SECRETS: LazyLock<Mutex<HashMap<[u8; MIN_SECRET], Vec<String>>>> =
    LazyLock::new(Mutex::default);

/// Remembers a credential: the whole string and, for a compact JWS, its payload and
/// signature segments (a token split or re-encoded in a log line is still a leak).
pub fn remember(secret: &str) {
    let mut needles = vec![secret];
    let parts: Vec<&str> = secret.split('.').collect();
    if parts.len() == 3 {
        needles.push(parts[1]);
        needles.push(parts[2]);
    }
    let mut index = SECRETS.lock().unwrap();
    for n in needles.into_iter().filter(|n| n.len() >= MIN_SECRET) {
        let key: [u8; MIN_SECRET] = n.as_bytes()[..MIN_SECRET].try_into().unwrap();
        let list = index.entry(key).or_default();
        if !list.iter().any(|x| x == n) {
            list.push(n.to_string());
        }
    }
}

/// The first remembered secret found in `logs`.
pub fn leaked_secret(logs: &str) -> Option<String> {
    let index = SECRETS.lock().unwrap();
    let b = logs.as_bytes();
    (0..b.len().saturating_sub(MIN_SECRET - 1)).find_map(|i| {
        let key: &[u8; MIN_SECRET] = b[i..i + MIN_SECRET].try_into().unwrap();
        index
            .get(key)?
            .iter()
            .find(|n| b[i..].starts_with(n.as_bytes()))
            .cloned()
    })
}

/// Panics if `logs` contains any remembered token, proof or key, or the payload or
/// signature segment of one.
pub fn assert_no_tokens(logs: &str) {
    if let Some(n) = leaked_secret(logs) {
        panic!("a credential (or a segment of one) appears in the gateway's logs: {n:.40}…");
    }
    if let Some(at) = query_token(logs) {
        panic!("a query-string token appears in the gateway's logs: {at:.60}…");
    }
}

/// Where a query parameter named like a credential (`access_token=`, `api_key=`, ...) is
/// logged with a value, whoever sent it: tokens in a URL must never be logged.
pub fn query_token(logs: &str) -> Option<&str> {
    const NAMES: [&str; 4] = ["access_token=", "api_key=", "apikey=", "token="];
    let lower = logs.to_ascii_lowercase();
    NAMES.iter().find_map(|name| {
        lower.match_indices(name).find_map(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let param_start = matches!(before, Some('?' | '&' | ';'));
            let value = &logs[i + name.len()..];
            let has_value = value
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && !matches!(c, '&' | '"' | '<' | '\\'));
            (param_start && has_value).then(|| &logs[i..])
        })
    })
}

/// Lower-case hex SHA-256 of the token, first 12 digits: what the audit log may carry.
pub fn token_hash_prefix(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds `t` (remembered for the log checks, as every built token is).
pub fn mint(t: Tok) -> String {
    t.build()
}
