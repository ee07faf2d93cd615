//! How the gateway authenticates itself at an authorization server's token endpoint (RFC
//! 6749 §2.3): `client_secret_basic` (the default), `client_secret_post`, or
//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): a JWT signed with the gateway's key,
//! fresh for every request.
//!
//! The secret and the key come from files the config names (read when the config compiles,
//! watched for reloads like every referenced file). Neither is ever printed: the types here
//! have `Debug` impls that say `****`.

use std::path::PathBuf;

use serde::Deserialize;

/// A client secret read from a file: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// A secret from a file's bytes (one trailing newline stripped): 1 to 4096 bytes of
    /// visible ASCII or spaces (it is form-encoded, so any such byte is safe).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<SecretText, String> {
        let b = crate::compile::strip_one_newline(bytes);
        if b.is_empty() {
            return Err("is empty".into());
        }
        if b.len() > 4096 {
            return Err("is longer than 4096 bytes".into());
        }
        if !b.iter().all(|&c| (0x20..=0x7e).contains(&c)) {
            return Err("holds a control or non-ASCII byte".into());
        }
        Ok(SecretText(String::from_utf8_lossy(b).into_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(****)")
    }
}

/// How a client secret is presented.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecretMethod {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// `private_key_jwt` as the file gives it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilePrivateKeyJwt {
    /// PEM private key (PKCS#8; PKCS#1 for RSA), relative to the config file.
    pub key_file: PathBuf,
    /// `RS256`, `PS256`, `ES256` or `EdDSA`.
    pub alg: String,
    /// `kid` of the assertion's header (the key's id at the AS), when the AS needs it.
    pub kid: Option<String>,
    /// The assertion's `aud`. Default: the issuer identifier (rfc7523bis), or the token
    /// endpoint URL when the AS is given by `token_endpoint` alone.
    pub audience: Option<String>,
    /// The assertion's `typ` header (default `JWT`; rfc7523bis names
    /// `client-authentication+jwt`, which some servers require).
    pub typ: Option<String>,
}

/// The signing half of `private_key_jwt`.
pub struct Signer {
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::EncodingKey,
    kid: Option<String>,
    audience: Option<String>,
    typ: Option<String>,
    /// SHA-256 of the PEM file (the config fingerprint covers the key without keeping it).
    pub key_digest: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("audience", &self.audience)
            .field("typ", &self.typ)
            .field("key", &"****")
            .finish()
    }
}

/// Lifetime of a client assertion: short, it is used once.
const ASSERTION_LIFETIME: i64 = 60;

impl Signer {
    /// Load the key of `f` from `pem` (the file's bytes) and check, by signing once, that
    /// it fits `alg`.
    pub fn compile(f: &FilePrivateKeyJwt, pem: &[u8]) -> Result<Signer, String> {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let alg = match f.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "PS256" => Algorithm::PS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(format!(
                    "private_key_jwt.alg {other:?} is not one of RS256, PS256, ES256, EdDSA"
                ))
            }
        };
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|e| {
            format!(
                "private_key_jwt.key_file is not a {} private key: {e}",
                f.alg
            )
        })?;
        if let Some(a) = &f.audience {
            if a.is_empty() {
                return Err("private_key_jwt.audience must not be empty".into());
            }
        }
        for (what, v) in [("kid", &f.kid), ("typ", &f.typ)] {
            if v.as_ref().is_some_and(|v| v.is_empty()) {
                return Err(format!("private_key_jwt.{what} must not be empty"));
            }
        }
        use sha2::Digest as _;
        let signer = Signer {
            alg,
            key,
            kid: f.kid.clone(),
            audience: f.audience.clone(),
            typ: f.typ.clone(),
            key_digest: sha2::Sha256::digest(pem).into(),
        };
        signer
            .assertion("check", "https://as.invalid", 0)
            .map_err(|e| format!("private_key_jwt: the key cannot sign {}: {e}", f.alg))?;
        Ok(signer)
    }

    /// A client assertion for `client_id` (RFC 7523 §3): `iss` = `sub` = the client, `aud`
    /// = the configured audience or `default_aud`, a fresh random `jti`, `iat` = `now`, a
    /// short `exp`.
    pub fn assertion(
        &self,
        client_id: &str,
        default_aud: &str,
        now: i64,
    ) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = self.kid.clone();
        if let Some(t) = &self.typ {
            header.typ = Some(t.clone());
        }
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": self.audience.as_deref().unwrap_or(default_aud),
            "jti": random_id()?,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// 128 random bits, hex.
fn random_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "no random bytes".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// How the gateway proves who it is at the token endpoint.
#[derive(Debug)]
pub enum Method {
    Basic(SecretText),
    Post(SecretText),
    PrivateKeyJwt(Signer),
}

/// The gateway's client at an authorization server.
#[derive(Debug)]
pub struct ClientAuth {
    pub client_id: String,
    pub method: Method,
}

impl ClientAuth {
    /// The method's name, as the config writes it.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::Basic(_) => "client_secret_basic",
            Method::Post(_) => "client_secret_post",
            Method::PrivateKeyJwt(_) => "private_key_jwt",
        }
    }

    /// The secret material, for the config's fingerprint (never printed).
    pub fn material(&self) -> Vec<u8> {
        match &self.method {
            Method::Basic(s) | Method::Post(s) => s.expose().as_bytes().to_vec(),
            Method::PrivateKeyJwt(k) => k.key_digest.to_vec(),
        }
    }

    /// Authenticate a token request: add the form parameters the method needs to `form`
    /// and return the `Authorization` header value it needs, if any. `default_aud`: the
    /// assertion's audience when none is configured.
    pub fn apply(
        &self,
        form: &mut url::form_urlencoded::Serializer<'_, String>,
        default_aud: &str,
        now: i64,
    ) -> Result<Option<String>, String> {
        match &self.method {
            Method::Basic(secret) => Ok(Some(crate::background::client_secret_basic(
                &self.client_id,
                secret.expose(),
            ))),
            Method::Post(secret) => {
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", secret.expose());
                Ok(None)
            }
            Method::PrivateKeyJwt(signer) => {
                let assertion = signer.assertion(&self.client_id, default_aud, now)?;
                form.append_pair("client_id", &self.client_id)
                    .append_pair(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .append_pair("client_assertion", &assertion);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
        ECDSA_P256_SHA256_FIXED_SIGNING, ED25519,
    };
    use base64::Engine as _;

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for c in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(c).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    fn file(alg: &str) -> FilePrivateKeyJwt {
        FilePrivateKeyJwt {
            key_file: "k.pem".into(),
            alg: alg.into(),
            kid: Some("gw-1".into()),
            audience: None,
            typ: None,
        }
    }

    fn b64d(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    #[test]
    fn es256_assertion_has_the_rfc7523_claims_and_verifies() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let s = Signer::compile(&file("ES256"), &pem("PRIVATE KEY", pkcs8.as_ref())).unwrap();
        let a = s.assertion("gw", "https://as.example.com", 1000).unwrap();
        let b = s.assertion("gw", "https://as.example.com", 1000).unwrap();
        let parts: Vec<&str> = a.split('.').collect();
        let header: serde_json::Value = serde_json::from_slice(&b64d(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&b64d(parts[1])).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "gw-1");
        assert_eq!(claims["iss"], "gw");
        assert_eq!(claims["sub"], "gw");
        assert_eq!(claims["aud"], "https://as.example.com");
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claims["exp"], 1060);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let other: serde_json::Value =
            serde_json::from_slice(&b64d(b.split('.').nth(1).unwrap())).unwrap();
        assert_ne!(claims["jti"], other["jti"], "a fresh jti every time");
        let msg = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, kp.public_key().as_ref())
            .verify(msg.as_bytes(), &b64d(parts[2]))
            .unwrap();
        assert!(!format!("{s:?}")
            .contains(&String::from_utf8_lossy(&pem("PRIVATE KEY", pkcs8.as_ref())).to_string()));
    }

    #[test]
    fn eddsa_and_configured_audience_and_typ() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut f = file("EdDSA");
        f.audience = Some("https://as.example.com/token".into());
        f.typ = Some("client-authentication+jwt".into());
        let s = Signer::compile(&f, &pem("PRIVATE KEY", pkcs8.as_ref())).unwrap();
        let a = s.assertion("gw", "https://as.example.com", 1000).unwrap();
        let parts: Vec<&str> = a.split('.').collect();
        let header: serde_json::Value = serde_json::from_slice(&b64d(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&b64d(parts[1])).unwrap();
        assert_eq!(header["typ"], "client-authentication+jwt");
        assert_eq!(claims["aud"], "https://as.example.com/token");
        let msg = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ED25519, kp.public_key().as_ref())
            .verify(msg.as_bytes(), &b64d(parts[2]))
            .unwrap();
    }

    #[test]
    fn a_key_that_does_not_fit_its_alg_is_refused() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = pem("PRIVATE KEY", ec.as_ref());
        for alg in ["RS256", "PS256", "EdDSA"] {
            assert!(Signer::compile(&file(alg), &ec).is_err(), "{alg}");
        }
        for alg in ["HS256", "none", "ES384", "es256"] {
            let e = Signer::compile(&file(alg), &ec).unwrap_err();
            assert!(e.contains("is not one of"), "{alg}: {e}");
        }
        assert!(Signer::compile(&file("ES256"), b"not a key").is_err());
    }

    #[test]
    fn basic_and_post_credentials() {
        let secret = SecretText::from_file_bytes(b"s3cret:+/ x\n").unwrap();
        let c = ClientAuth {
            client_id: "gw id".into(),
            method: Method::Basic(secret.clone()),
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        let h = c.apply(&mut form, "x", 0).unwrap().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"gw+id:s3cret%3A%2B%2F+x");
        assert_eq!(form.finish(), "");
        let c = ClientAuth {
            client_id: "gw".into(),
            method: Method::Post(secret),
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        assert_eq!(c.apply(&mut form, "x", 0).unwrap(), None);
        assert_eq!(
            form.finish(),
            "client_id=gw&client_secret=s3cret%3A%2B%2F+x"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn secret_files_are_checked() {
        assert!(SecretText::from_file_bytes(b"\n").is_err());
        assert!(SecretText::from_file_bytes(b"a\tb").is_err());
        assert!(SecretText::from_file_bytes("é".as_bytes()).is_err());
        assert_eq!(
            SecretText::from_file_bytes(b"abc\r\n").unwrap().expose(),
            "abc"
        );
    }
}
