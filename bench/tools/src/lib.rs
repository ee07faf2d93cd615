//! Shared helpers of the benchmark tools: signing keys and access-token minting.
//!
//! Tokens look like what a real authorization server issues for an MCP client (RFC 9068
//! `at+jwt`, `iss`, `sub`, `aud`, `exp`, `iat`, `jti`, `client_id`, `scope`), signed with
//! aws-lc-rs. Nothing here is used by the gateway itself.

use std::error::Error;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The `kid`s of the benchmark keys (the JWKS carries all three).
pub const RS256_KID: &str = "bench-rs256";
pub const ES256_KID: &str = "bench-es256";
pub const EDDSA_KID: &str = "bench-eddsa";
/// The client's DPoP key (never in the JWKS: proofs carry it).
pub const DPOP_KID: &str = "bench-dpop";

enum Key {
    Rs(RsaKeyPair),
    Es(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key with its JOSE algorithm and `kid`.
pub struct Signer {
    pub alg: &'static str,
    pub kid: &'static str,
    key: Key,
    rng: SystemRandom,
}

impl Signer {
    /// A fresh RSA-2048 key for RS256.
    pub fn generate_rs256() -> Result<Signer> {
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation")?;
        Ok(Signer::new("RS256", RS256_KID, Key::Rs(kp)))
    }

    /// A fresh P-256 key for ES256.
    pub fn generate_es256() -> Result<Signer> {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "P-256 key generation")?;
        Ok(Signer::new("ES256", ES256_KID, Key::Es(kp)))
    }

    /// A fresh Ed25519 key for EdDSA (RFC 8037).
    pub fn generate_eddsa() -> Result<Signer> {
        let kp = Ed25519KeyPair::generate().map_err(|_| "Ed25519 key generation")?;
        Ok(Signer::new("EdDSA", EDDSA_KID, Key::Ed(kp)))
    }

    /// A fresh P-256 key for a DPoP client.
    pub fn generate_dpop() -> Result<Signer> {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| "P-256 key generation")?;
        Ok(Signer::new("ES256", DPOP_KID, Key::Es(kp)))
    }

    /// Load a key written by [`Signer::pkcs8`].
    pub fn from_pkcs8(alg: &str, der: &[u8]) -> Result<Signer> {
        match alg {
            "RS256" => Ok(Signer::new(
                "RS256",
                RS256_KID,
                Key::Rs(RsaKeyPair::from_pkcs8(der).map_err(|e| format!("RSA key: {e}"))?),
            )),
            "ES256" | "DPOP-ES256" => Ok(Signer::new(
                "ES256",
                if alg == "ES256" { ES256_KID } else { DPOP_KID },
                Key::Es(
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(|e| format!("P-256 key: {e}"))?,
                ),
            )),
            other => Err(format!("unsupported algorithm {other}").into()),
        }
    }

    fn new(alg: &'static str, kid: &'static str, key: Key) -> Signer {
        Signer {
            alg,
            kid,
            key,
            rng: SystemRandom::new(),
        }
    }

    /// The private key, PKCS#8 DER.
    pub fn pkcs8(&self) -> Result<Vec<u8>> {
        Ok(match &self.key {
            Key::Rs(k) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(k)
                .map_err(|_| "RSA PKCS#8 export")?
                .as_ref()
                .to_vec(),
            Key::Es(k) => k
                .to_pkcs8v1()
                .map_err(|_| "P-256 PKCS#8 export")?
                .as_ref()
                .to_vec(),
            Key::Ed(k) => k
                .to_pkcs8v1()
                .map_err(|_| "Ed25519 PKCS#8 export")?
                .as_ref()
                .to_vec(),
        })
    }

    /// The public key as a PEM SubjectPublicKeyInfo (what HAProxy's `jwt_verify` loads).
    pub fn public_pem(&self) -> Result<String> {
        let der: PublicKeyX509Der = match &self.key {
            Key::Rs(k) => k.public_key().as_der().map_err(|_| "RSA SPKI export")?,
            Key::Es(k) => k.public_key().as_der().map_err(|_| "P-256 SPKI export")?,
            Key::Ed(k) => k.public_key().as_der().map_err(|_| "Ed25519 SPKI export")?,
        };
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk)?);
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        Ok(pem)
    }

    /// The public key as a JWK (RFC 7517) with `kid`, `alg` and `use`.
    pub fn jwk(&self) -> Value {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match &self.key {
            Key::Rs(k) => {
                let p = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                       "n": b(p.modulus().big_endian_without_leading_zero()),
                       "e": b(p.exponent().big_endian_without_leading_zero())})
            }
            Key::Es(k) => {
                // Uncompressed point: 0x04 || x || y.
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": self.alg,
                       "use": "sig", "x": b(&p[1..33]), "y": b(&p[33..65])})
            }
            Key::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": self.alg,
                       "use": "sig", "x": b(k.public_key().as_ref())})
            }
        }
    }

    /// The public key as the bare JWK a DPoP proof carries in its header (RFC 9449 §4.2):
    /// no `kid`, `alg` or `use`. Only for EC keys.
    pub fn bare_jwk(&self) -> Result<Value> {
        let Key::Es(k) = &self.key else {
            return Err("bare_jwk: only EC keys".into());
        };
        let p = k.public_key().as_ref();
        Ok(json!({"kty": "EC", "crv": "P-256",
                  "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}))
    }

    /// RFC 7638 thumbprint of the public key (SHA-256, base64url): a DPoP-bound token's
    /// `cnf.jkt`.
    pub fn thumbprint(&self) -> Result<String> {
        let jwk = self.bare_jwk()?;
        let s = |k: &str| jwk[k].as_str().unwrap_or_default().to_string();
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("x"),
            s("y")
        );
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(d.as_ref()))
    }

    /// A DPoP proof (RFC 9449 §4.2) for one request: a fresh `jti`, `htm`, `htu`, `iat`,
    /// and `ath` = base64url(SHA-256(access token)).
    pub fn dpop_proof(
        &self,
        jti: &str,
        htm: &str,
        htu: &str,
        iat: i64,
        token: &str,
    ) -> Result<String> {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.bare_jwk()?});
        let ath = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat,
                            "ath": URL_SAFE_NO_PAD.encode(ath.as_ref())});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        let sig = self.sign(&input)?;
        Ok(format!("{input}.{sig}"))
    }

    /// The encoded JOSE header and payload, joined by a dot (the JWS signing input).
    pub fn signing_input(&self, claims: &Value) -> Result<String> {
        let header = json!({"alg": self.alg, "typ": "at+jwt", "kid": self.kid});
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        ))
    }

    /// The base64url signature of a signing input.
    pub fn sign(&self, input: &str) -> Result<String> {
        let sig = match &self.key {
            Key::Rs(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
                    .map_err(|_| "RSA signing")?;
                sig
            }
            Key::Es(k) => k
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| "ECDSA signing")?
                .as_ref()
                .to_vec(),
            Key::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(URL_SAFE_NO_PAD.encode(sig))
    }

    /// A signed compact JWS.
    pub fn mint(&self, claims: &Value) -> Result<String> {
        let input = self.signing_input(claims)?;
        let sig = self.sign(&input)?;
        Ok(format!("{input}.{sig}"))
    }
}

/// The claims of benchmark token number `n`: a distinct `sub` and `jti` per token, the
/// scopes the benchmark routes require, `exp` two hours after `now`.
pub fn claims(iss: &str, aud: &str, alg: &str, n: u64, now: i64) -> Value {
    json!({
        "iss": iss,
        "sub": format!("user-{n:08}"),
        "aud": aud,
        "exp": now + 7200,
        "iat": now,
        "jti": format!("{}-{n:08}", alg.to_ascii_lowercase()),
        "client_id": "bench-client",
        "scope": "mcp:tools mcp:read",
    })
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
