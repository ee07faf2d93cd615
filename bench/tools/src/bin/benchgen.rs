//! Generate the benchmark's keys and tokens.
//!
//! ```text
//! benchgen --out DIR --iss ISSUER --aud AUDIENCE --htu URL [--distinct N]
//! benchgen dpop-proofs --dir DIR --htu URL --count N --out FILE
//! ```
//! writes into DIR: `rs256.pk8`, `es256.pk8`, `eddsa.pk8` (private keys, PKCS#8 DER, for
//! `memfill`), `rs256.pub.pem`, `es256.pub.pem`, `eddsa.pub.pem` (public keys, PEM; HAProxy's
//! `jwt_verify` loads the first two), `jwks.json` (the three public keys, served to mcpgate
//! by the upstream nginx), and under `tokens/`, for each of `rs256`, `es256` and `eddsa`:
//! `-valid`, `-expired` (exp an hour ago), `-tampered` (payload changed after signing),
//! `-wrongaud` (signed, but for another audience) and
//! `-distinct.txt` (N valid tokens, one per line, all different). For DPoP (RFC 9449):
//! `dpop.pk8` (the client's proof key), `tokens/dpop-token.txt` (an RS256 access token
//! bound to it by `cnf.jkt`) and proofs for the correctness checks (`dpop-proof-valid`,
//! `-wronghtu`, `-otherkey` (a key the token is not bound to), `-tampered`).
//!
//! `dpop-proofs` writes N fresh proofs (distinct `jti`, `iat` now) for that token, one
//! per line: each may be used once (the gateway refuses replays), so the harness makes a
//! new file just before each timed run.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mcpgate_bench::{claims, now_unix, Result, Signer};
use serde_json::json;

fn main() -> Result<()> {
    let mut out = None;
    let mut iss = None;
    let mut aud = None;
    let mut htu = None;
    let mut dir = None;
    let mut count = 0u64;
    let mut distinct = 20_000u64;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let proofs_mode = args.first().is_some_and(|a| a == "dpop-proofs");
    if proofs_mode {
        args.remove(0);
    }
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(val()?)),
            "--iss" => iss = Some(val()?),
            "--aud" => aud = Some(val()?),
            "--htu" => htu = Some(val()?),
            "--dir" => dir = Some(PathBuf::from(val()?)),
            "--count" => count = val()?.parse()?,
            "--distinct" => distinct = val()?.parse()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    if proofs_mode {
        let (Some(dir), Some(htu), Some(out)) = (dir, htu, out) else {
            return Err(
                "usage: benchgen dpop-proofs --dir DIR --htu URL --count N --out FILE".into(),
            );
        };
        return write_proofs(&dir, &htu, count, &out);
    }
    let (Some(out), Some(iss), Some(aud), Some(htu)) = (out, iss, aud, htu) else {
        return Err(
            "usage: benchgen --out DIR --iss ISSUER --aud AUDIENCE --htu URL [--distinct N]".into(),
        );
    };
    fs::create_dir_all(out.join("tokens"))?;
    let now = now_unix();
    let rs = Signer::generate_rs256()?;
    let es = Signer::generate_es256()?;
    let ed = Signer::generate_eddsa()?;
    let jwks = json!({"keys": [rs.jwk(), es.jwk(), ed.jwk()]});
    fs::write(out.join("jwks.json"), serde_json::to_vec_pretty(&jwks)?)?;
    for s in [&rs, &es, &ed] {
        let name = s.alg.to_ascii_lowercase();
        fs::write(out.join(format!("{name}.pk8")), s.pkcs8()?)?;
        fs::write(out.join(format!("{name}.pub.pem")), s.public_pem()?)?;
        write_fixed(s, &out, &name, &iss, &aud, now)?;
        let started = std::time::Instant::now();
        write_distinct(
            s,
            &out.join(format!("tokens/{name}-distinct.txt")),
            &iss,
            &aud,
            distinct,
            now,
        )?;
        eprintln!(
            "benchgen: {distinct} distinct {} tokens in {:.1} s",
            s.alg,
            started.elapsed().as_secs_f64()
        );
    }
    write_dpop(&rs, &out, &iss, &aud, &htu, now)
}

/// The DPoP client key, a token bound to it, and the proofs the correctness checks send.
fn write_dpop(
    as_key: &Signer,
    out: &Path,
    iss: &str,
    aud: &str,
    htu: &str,
    now: i64,
) -> Result<()> {
    let client = Signer::generate_dpop()?;
    fs::write(out.join("dpop.pk8"), client.pkcs8()?)?;
    let mut c = claims(iss, aud, "dpop", 0, now);
    c["cnf"] = json!({"jkt": client.thumbprint()?});
    let token = as_key.mint(&c)?;
    fs::write(out.join("tokens/dpop-token.txt"), &token)?;
    let tok = |kind: &str| out.join(format!("tokens/dpop-proof-{kind}.txt"));
    let jti = |k: &str| format!("check-{k}-{now}");
    fs::write(
        tok("valid"),
        client.dpop_proof(&jti("valid"), "GET", htu, now, &token)?,
    )?;
    let other_htu = format!("{}/other", htu.trim_end_matches('/'));
    fs::write(
        tok("wronghtu"),
        client.dpop_proof(&jti("wronghtu"), "GET", &other_htu, now, &token)?,
    )?;
    let stranger = Signer::generate_dpop()?;
    fs::write(
        tok("otherkey"),
        stranger.dpop_proof(&jti("otherkey"), "GET", htu, now, &token)?,
    )?;
    // A proof for POST whose payload is then edited to say GET: only the signature is wrong.
    let post = client.dpop_proof(&jti("tampered"), "POST", htu, now, &token)?;
    let parts: Vec<&str> = post.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    payload["htm"] = json!("GET");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload)?);
    fs::write(
        tok("tampered"),
        format!("{}.{payload}.{}", parts[0], parts[2]),
    )?;
    Ok(())
}

/// `count` fresh proofs for the DPoP token (GET `htu`), one per line.
fn write_proofs(dir: &Path, htu: &str, count: u64, out: &Path) -> Result<()> {
    let client = Signer::from_pkcs8("DPOP-ES256", &fs::read(dir.join("dpop.pk8"))?)?;
    let token = fs::read_to_string(dir.join("tokens/dpop-token.txt"))?;
    let token = token.trim();
    let now = now_unix();
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random")?;
    let run = URL_SAFE_NO_PAD.encode(nonce);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per = count.div_ceil(threads);
    let chunks: Vec<Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (client, run) = (&client, &run);
                scope.spawn(move || -> Result<String> {
                    let mut text = String::new();
                    for i in (t * per)..((t + 1) * per).min(count) {
                        text.push_str(&client.dpop_proof(
                            &format!("{run}-{i}"),
                            "GET",
                            htu,
                            now,
                            token,
                        )?);
                        text.push('\n');
                    }
                    Ok(text)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("signing thread panicked".into()))
            })
            .collect()
    });
    let mut all = String::new();
    for c in chunks {
        all.push_str(&c?);
    }
    fs::write(out, all)?;
    Ok(())
}

/// One token of each kind the correctness checks use.
fn write_fixed(s: &Signer, out: &Path, name: &str, iss: &str, aud: &str, now: i64) -> Result<()> {
    let tok = |kind: &str| out.join(format!("tokens/{name}-{kind}.txt"));
    let valid = claims(iss, aud, s.alg, 0, now);
    fs::write(tok("valid"), s.mint(&valid)?)?;

    let mut expired = claims(iss, aud, s.alg, 1, now - 7200);
    expired["exp"] = json!(now - 3600);
    fs::write(tok("expired"), s.mint(&expired)?)?;

    let mut wrong = claims(iss, aud, s.alg, 2, now);
    wrong["aud"] = json!("https://other.example/mcp");
    fs::write(tok("wrongaud"), s.mint(&wrong)?)?;

    // A valid token whose payload is swapped for another one after signing (a privilege
    // escalation attempt): every field decodes fine, only the signature is wrong.
    let signed = s.mint(&valid)?;
    let mut forged = valid.clone();
    forged["sub"] = json!("admin");
    forged["scope"] = json!("mcp:tools mcp:read mcp:admin");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged)?);
    let parts: Vec<&str> = signed.split('.').collect();
    fs::write(
        tok("tampered"),
        format!("{}.{payload}.{}", parts[0], parts[2]),
    )?;
    Ok(())
}

/// `n` valid tokens, each different (`sub` and `jti` carry the index); signed on every core.
fn write_distinct(s: &Signer, path: &Path, iss: &str, aud: &str, n: u64, now: i64) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per = n.div_ceil(threads);
    let chunks: Vec<Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<String> {
                    let mut text = String::new();
                    for i in (t * per)..((t + 1) * per).min(n) {
                        text.push_str(&s.mint(&claims(iss, aud, s.alg, 1000 + i, now))?);
                        text.push('\n');
                    }
                    Ok(text)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("signing thread panicked".into()))
            })
            .collect()
    });
    let mut all = String::new();
    for c in chunks {
        all.push_str(&c?);
    }
    fs::write(path, all)?;
    Ok(())
}
