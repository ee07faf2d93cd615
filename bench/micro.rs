//! Criterion micro-benchmarks of the request path's pieces (`cargo bench --bench micro`;
//! bench/run.sh runs them pinned to one core and puts the medians in bench/README.md).
//!
//! - `cache/…`: the verified-token cache hit, as a request pays it: SHA-256 of the token
//!   and `Authenticator::authenticate` on a primed cache (quick_cache get, issuer and time checks),
//!   and the SHA-256 alone.
//! - `jwt/…`: `jwt::parse` (split, base64, JSON) and `jwt::verify_signature` per algorithm,
//!   with keys from `jwt::parse_jwks` (parsed once, as when a JWKS arrives).
//! - `prm/render`: the RFC 9728 document (rendered once per config in the gateway).
//! - `mcp/parse`: a 1 KiB `tools/call` body, as inspected on routes with a tools policy.
//! - `dpop/…`: `dpop::verify` of an ES256 proof (parse, the proof's own key, signature,
//!   claims; the replay check is separate), and `jwt::proof_key` alone (the JWK in the
//!   proof header made into a verification key, on every request).
//! - `limits/…` (issue 19): on the cached-JWT path, the cache hit alone and the cache hit
//!   followed by `Limiter::admit` of one rate limit keyed `[issuer, subject, client_address]`
//!   (64 addresses in turn, so that no bucket runs dry): in this
//!   replica's buckets (no `state.redis`) and through a real `redis-server` on loopback (one
//!   Lua script call, awaited from a current-thread runtime as a pingora worker awaits it),
//!   next to one `PING` through the same store (the loopback round trip the Redis-backed
//!   check is measured against). The Redis benches are skipped when `redis-server` is not
//!   on the PATH.
//! - `scale/…` (issue 15): how per-request costs grow with the configuration, as curves:
//!   `routing::classify` with 1 / 100 / 10,000 routes (each its own host and prefix; the
//!   request is for the last one), a tool's policy lookup (`Policy::tool`) with 1 / 100 /
//!   1,000 rules (literals and `prefix*` globs, the shapes policies use; a name matching
//!   none of them, so first-match order is searched to the end) and 1 / 100 / 1,000 rules
//!   that are infix globs (`*_tN_*`), and `RevocationSet::check` of a token that is not
//!   revoked with 0 / 10,000 / 1,000,000 `jti` revocations (the set's resident memory per
//!   entry is printed while it is built).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use mcpgate::auth::jwt::{self, Algorithm, VerifyKey};

const ISS: &str = "http://127.0.0.1:1/issuer";
const AUD: &str = "https://mcp.bench.example/mcp";

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One signing key per algorithm, with its public JWK.
enum Signer {
    Rsa(RsaKeyPair, &'static dyn aws_lc_rs::signature::RsaEncoding),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct Key {
    alg: &'static str,
    signer: Signer,
}

impl Key {
    fn new(alg: &'static str) -> Key {
        let signer = match alg {
            "RS256" => Signer::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
                &RSA_PKCS1_SHA256,
            ),
            "PS256" => Signer::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
                &RSA_PSS_SHA256,
            ),
            "ES256" => {
                Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
            }
            "ES384" => {
                Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap())
            }
            "EdDSA" => Signer::Ed(Ed25519KeyPair::generate().unwrap()),
            _ => unreachable!(),
        };
        Key { alg, signer }
    }

    fn jwk(&self) -> Value {
        let kid = format!("k-{}", self.alg);
        match &self.signer {
            Signer::Rsa(k, _) => {
                let p = k.public_key();
                json!({"kty": "RSA", "kid": kid, "alg": self.alg, "use": "sig",
                       "n": b64(p.modulus().big_endian_without_leading_zero()),
                       "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                let crv = if n == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "crv": crv, "kid": kid, "alg": self.alg, "use": "sig",
                       "x": b64(&p[1..1 + n]), "y": b64(&p[1 + n..])})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": self.alg,
                       "use": "sig", "x": b64(k.public_key().as_ref())})
            }
        }
    }

    /// A token shaped like the load benchmarks' (RFC 9068, ~440-700 bytes).
    fn token(&self, n: u64) -> String {
        let header = json!({"alg": self.alg, "typ": "at+jwt", "kid": format!("k-{}", self.alg)});
        let t = now();
        let claims = json!({"iss": ISS, "sub": format!("user-{n:08}"), "aud": AUD,
            "exp": t + 7200, "iat": t, "jti": format!("jti-{n:08}"),
            "client_id": "bench-client", "scope": "mcp:tools mcp:read"});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Rsa(k, enc) => {
                let mut s = vec![0; k.public_modulus_len()];
                k.sign(*enc, &rng, input.as_bytes(), &mut s).unwrap();
                s
            }
            Signer::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn jwks(keys: &[Key]) -> Vec<u8> {
    serde_json::to_vec(&json!({"keys": keys.iter().map(Key::jwk).collect::<Vec<_>>()})).unwrap()
}

fn bench_jwt(c: &mut Criterion) {
    let keys: Vec<Key> = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
        .into_iter()
        .map(Key::new)
        .collect();
    let (verify_keys, skipped): (Vec<VerifyKey>, _) =
        jwt::parse_jwks(&jwks(&keys), &Algorithm::ALL).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    let mut g = c.benchmark_group("jwt");
    let rs = keys[0].token(1);
    g.bench_function("parse/RS256", |b| {
        b.iter(|| jwt::parse(black_box(&rs)).unwrap())
    });
    for k in &keys {
        let token = k.token(1);
        let parsed = jwt::parse(&token).unwrap();
        assert!(jwt::verify_signature(&parsed, &verify_keys).is_ok());
        g.bench_function(format!("verify_signature/{}", k.alg), |b| {
            b.iter(|| jwt::verify_signature(black_box(&parsed), &verify_keys).unwrap())
        });
        g.bench_function(format!("parse+verify/{}", k.alg), |b| {
            b.iter(|| {
                let p = jwt::parse(black_box(&token)).unwrap();
                jwt::verify_signature(&p, &verify_keys).unwrap()
            })
        });
    }
    g.finish();
}

/// Serve a JWKS over plain HTTP on loopback (what the gateway fetches at start).
fn serve_jwks(body: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    port
}

/// Poll a future that must complete without waiting (a cache hit awaits nothing).
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit should not wait"),
    }
}

fn bench_cache(c: &mut Criterion) {
    let key = Key::new("RS256");
    let port = serve_jwks(jwks(std::slice::from_ref(&key)));
    let yaml = format!(
        r#"
listen: {{address: "127.0.0.1:1", public_url: "https://mcp.bench.example", threads: 1}}
admin: {{address: "127.0.0.1:2"}}
issuers:
  - name: bench
    issuer: "{ISS}"
    jwks_uri: "http://127.0.0.1:{port}/jwks.json"
    require_at_jwt: true
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: "http://127.0.0.1:3"
    scopes: [mcp:tools]
"#
    );
    let config = mcpgate::config::Config::from_yaml("bench.yaml", &yaml).unwrap();
    mcpgate::install_crypto_provider();
    let state = mcpgate::state::GatewayState::new(config).unwrap();
    let snapshot = state.snapshot.load_full();
    let route: Arc<mcpgate::config::Route> = snapshot.config.routes[0].clone();
    let token = key.token(7);
    // Prime the cache: the first call fetches the keys and verifies the token.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = mcpgate::principal::token_hash(&token);
    rt.block_on(
        state
            .auth
            .authenticate(&snapshot.issuers, &route.auth.issuers, &token, &h),
    )
    .unwrap();

    let mut g = c.benchmark_group("cache");
    g.bench_function("token_hash (SHA-256 of a 694-byte RS256 token)", |b| {
        b.iter(|| mcpgate::principal::token_hash(black_box(&token)))
    });
    g.bench_function("hit: token_hash + Authenticator::authenticate", |b| {
        b.iter(|| {
            let h = mcpgate::principal::token_hash(black_box(&token));
            ready(
                state
                    .auth
                    .authenticate(&snapshot.issuers, &route.auth.issuers, &token, &h),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn bench_prm(c: &mut Criterion) {
    let scopes = vec!["mcp:tools".to_string(), "mcp:admin".to_string()];
    let dpop_algs: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    c.bench_function("prm/render", |b| {
        b.iter(|| {
            mcpgate::metadata::render(
                black_box("https://mcp.example.com/mcp"),
                &["https://auth.example.com/realms/mcp"],
                &scopes,
                &dpop_algs,
                false,
            )
        })
    });
}

fn bench_mcp(c: &mut Criterion) {
    let mut args =
        json!({"path": "/srv/data/reports/2026/q3/summary.md", "encoding": "utf-8", "note": ""});
    let mut body = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "read_file", "arguments": args.clone()}});
    let pad = 1024 - serde_json::to_vec(&body).unwrap().len();
    args["note"] = json!("x".repeat(pad));
    body["params"]["arguments"] = args;
    let body = serde_json::to_vec(&body).unwrap();
    assert_eq!(body.len(), 1024);
    c.bench_function("mcp/parse (tools/call, 1 KiB)", |b| {
        b.iter(|| mcpgate::mcp::body::parse(black_box(&body)).unwrap())
    });
}

fn bench_dpop(c: &mut Criterion) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let p = key.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
    let token = Key::new("RS256").token(1);
    let htu = "https://mcp.bench.example/mcp";
    let t = now();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let claims = json!({"jti": "bench-proof-1", "htm": "GET", "htu": htu, "iat": t,
                        "ath": mcpgate::auth::dpop::ath(&token)});
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    let proof = format!("{input}.{}", b64(sig.as_ref()));
    let want_htu = mcpgate::auth::dpop::normalize_htu(htu).unwrap();
    let want = mcpgate::auth::dpop::Expect {
        method: "GET",
        htu: &want_htu,
        access_token: &token,
        algs: &Algorithm::ALL,
        now: t,
        past: 300,
        future: 300,
        nonce: None,
    };
    assert!(mcpgate::auth::dpop::verify(&proof, &want).is_ok());
    let mut g = c.benchmark_group("dpop");
    g.bench_function("verify (ES256 proof)", |b| {
        b.iter(|| mcpgate::auth::dpop::verify(black_box(&proof), &want).unwrap())
    });
    g.bench_function("proof_key (P-256 JWK from the proof header)", |b| {
        b.iter(|| jwt::proof_key(black_box(&jwk), Algorithm::ES256).unwrap())
    });
    g.finish();
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway state with one JWT route limited by `per-user` (`[issuer, subject,
/// client_address]`, never refusing at bench rates), `state` its `state:` block; the token cache primed.
fn limited_state(
    jwks_port: u16,
    state: &str,
    token: &str,
) -> (
    mcpgate::state::GatewayState,
    Arc<mcpgate::state::Snapshot>,
    Arc<mcpgate::config::Route>,
) {
    let yaml = format!(
        r#"
listen: {{address: "127.0.0.1:1", public_url: "https://mcp.bench.example", threads: 1}}
admin: {{address: "127.0.0.1:2"}}
{state}
limits:
  rate:
    # client_address too, so that the bench can spread its calls over 64 buckets: one bucket
    # holds at most 1000000/second, fewer than a tight loop sends.
    - {{name: per-user, key: [issuer, subject, client_address], rate: 1000000/second, burst: 1000000}}
issuers:
  - name: bench
    issuer: "{ISS}"
    jwks_uri: "http://127.0.0.1:{jwks_port}/jwks.json"
    require_at_jwt: true
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: "http://127.0.0.1:3"
    scopes: [mcp:tools]
"#
    );
    let config = mcpgate::config::Config::from_yaml("bench.yaml", &yaml).unwrap();
    let gw = mcpgate::state::GatewayState::new(config).unwrap();
    let snapshot = gw.snapshot.load_full();
    let route = snapshot.config.routes[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = mcpgate::principal::token_hash(token);
    rt.block_on(
        gw.auth
            .authenticate(&snapshot.issuers, &route.auth.issuers, token, &h),
    )
    .unwrap();
    (gw, snapshot, route)
}

fn bench_limits(c: &mut Criterion) {
    mcpgate::install_crypto_provider();
    let key = Key::new("RS256");
    let port = serve_jwks(jwks(std::slice::from_ref(&key)));
    let token = key.token(11);
    let n = std::cell::Cell::new(0u8);
    let peer = || {
        n.set(n.get().wrapping_add(1));
        Some(std::net::IpAddr::from([127, 0, 0, n.get() % 64]))
    };

    let (gw, snap, route) = limited_state(port, "", &token);
    let hit = || {
        let h = mcpgate::principal::token_hash(black_box(&token));
        ready(
            gw.auth
                .authenticate(&snap.issuers, &route.auth.issuers, &token, &h),
        )
        .unwrap()
    };
    let mut g = c.benchmark_group("limits");
    g.bench_function("cached JWT: token_hash + authenticate (no limit)", |b| {
        b.iter(hit)
    });
    g.bench_function("cached JWT + local limit check (Limiter::admit)", |b| {
        b.iter(|| {
            let p = hit();
            let r = mcpgate::quota::Request {
                who: mcpgate::quota::Who {
                    principal: Some(&p),
                    route: &route.name,
                    address: peer(),
                },
                calls: None,
            };
            ready(gw.limiter.admit(&route.quotas, &r)).unwrap()
        })
    });
    {
        let p = hit();
        g.bench_function("local limit check alone (Limiter::admit)", |b| {
            b.iter(|| {
                let r = mcpgate::quota::Request {
                    who: mcpgate::quota::Who {
                        principal: Some(&p),
                        route: &route.name,
                        address: peer(),
                    },
                    calls: None,
                };
                ready(gw.limiter.admit(black_box(&route.quotas), &r)).unwrap()
            })
        });
    }

    let Some(redis) = RedisServer::start() else {
        eprintln!("limits: redis-server not available, Redis-backed benches skipped");
        g.finish();
        return;
    };
    let state = format!(
        "state:\n  redis: {{url: \"redis://127.0.0.1:{}/0\", timeout_ms: 1000}}",
        redis.port
    );
    let (rgw, rsnap, rroute) = limited_state(port, &state, &token);
    let store = rgw.store.clone().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let op = mcpgate::metrics::RedisOp::new("bench_ping");
    let ping = || {
        rt.block_on(
            store.call(&op, std::time::Duration::from_secs(1), |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            }),
        )
        .unwrap()
    };
    // Connect, and load the script into Redis's cache, before timing.
    ping();
    let rhit = || {
        let h = mcpgate::principal::token_hash(black_box(&token));
        ready(
            rgw.auth
                .authenticate(&rsnap.issuers, &rroute.auth.issuers, &token, &h),
        )
        .unwrap()
    };
    let admit = |p: &mcpgate::principal::Principal| {
        let r = mcpgate::quota::Request {
            who: mcpgate::quota::Who {
                principal: Some(p),
                route: &rroute.name,
                address: peer(),
            },
            calls: None,
        };
        rt.block_on(rgw.limiter.admit(&rroute.quotas, &r)).unwrap()
    };
    admit(&rhit());
    g.bench_function("one PING through the store (loopback round trip)", |b| {
        b.iter(ping)
    });
    g.bench_function(
        "cached JWT + Redis-backed limit check (Limiter::admit)",
        |b| b.iter(|| admit(&rhit())),
    );
    g.finish();
    drop(redis);
}

// ---------------------------------------------------------------------------------------
// Scale curves (issue 15)
// ---------------------------------------------------------------------------------------

/// Rule shapes of the `scale/tool-rules` curves: literals and `prefix*` globs, then infix
/// globs.
fn literal_or_prefix(i: usize) -> String {
    if i % 2 == 0 {
        format!("tool_{i}")
    } else {
        format!("ns{i}_*")
    }
}

fn infix_glob(i: usize) -> String {
    format!("*_t{i}_*")
}

fn bench_scale(c: &mut Criterion) {
    use mcpgate::mcp::policy::{Policy, Rule};
    use mcpgate::routing::{self, RouteMatch, Table};

    let mut g = c.benchmark_group("scale");
    let limits = mcpgate::connections::RequestLimits {
        max_header_bytes: 64 * 1024,
        max_body_bytes: 1 << 20,
        max_inspected_body_bytes: 1 << 20,
    };
    for n in [1usize, 100, 10_000] {
        let mut table = Table::default();
        for i in 0..n {
            let host = format!("h{i}.bench.example");
            let m = RouteMatch::compile(Some(&host), &format!("/r{i}/mcp"), false).unwrap();
            table.add(&format!("r{i}"), m).unwrap();
        }
        let last = n - 1;
        let mut req =
            pingora_http::RequestHeader::build("POST", format!("/r{last}/mcp/x").as_bytes(), None)
                .unwrap();
        req.insert_header("host", format!("h{last}.bench.example"))
            .unwrap();
        assert!(matches!(
            routing::classify(&table, &limits, &req),
            Ok(routing::Target::Route { index, .. }) if index == last
        ));
        g.bench_function(format!("routes/{n}"), |b| {
            b.iter(|| routing::classify(black_box(&table), &limits, black_box(&req)))
        });
    }

    type Shape = fn(usize) -> String;
    let shapes: [(&str, Shape); 2] = [
        ("tool-rules", literal_or_prefix),
        ("tool-rules-infix-globs", infix_glob),
    ];
    for (what, shape) in shapes {
        for n in [1usize, 100, 1_000] {
            let p = Policy {
                tools: (0..n)
                    .map(|i| Rule::new(&shape(i), Vec::new()))
                    .collect::<Vec<_>>()
                    .into(),
                ..Policy::default()
            };
            g.bench_function(format!("{what}/{n}"), |b| {
                b.iter(|| p.tool(black_box("read_file")))
            });
        }
    }

    for n in [0usize, 10_000, 1_000_000] {
        let t = now();
        let rss0 = rss_bytes();
        let entries: Vec<_> = (0..n)
            .map(|i| mcpgate::auth::revocation::Revocation {
                id: format!("{i:032x}"),
                kind: mcpgate::auth::revocation::Kind::Jti,
                value: format!("jti-{i:016x}"),
                issuer: None,
                revoked_at: t,
                expires_at: t + 3600,
                reason: None,
            })
            .collect();
        let set = mcpgate::auth::revocation::RevocationSet::build(entries, t);
        if n > 0 {
            eprintln!(
                "scale/revocations/{n}: resident memory {} B per entry (entries and index)",
                rss_bytes().saturating_sub(rss0) / n as u64
            );
        }
        let p = revocation_principal();
        assert!(set.check(&p, t).is_none());
        g.bench_function(format!("revocations/{n}"), |b| {
            b.iter(|| set.check(black_box(&p), t))
        });
    }
    g.finish();
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn revocation_principal() -> mcpgate::principal::Principal {
    mcpgate::principal::Principal {
        method: mcpgate::principal::AuthMethod::Jwt,
        iss: Arc::from(ISS),
        issuer_name: Arc::from("bench"),
        subject: Some(Box::from("user-1")),
        client_id: Some(Arc::from("client-1")),
        scopes: mcpgate::scope::ScopeSet::parse("mcp:tools"),
        audiences: Arc::from(vec![Box::<str>::from(AUD)]),
        any_audience: false,
        exp: now() + 3600,
        nbf: None,
        skew: 30,
        cnf_jkt: None,
        jti: Some(Box::from("jti-not-revoked")),
        iat: Some(now()),
        azp: None,
    }
}

criterion_group!(
    benches,
    bench_cache,
    bench_jwt,
    bench_dpop,
    bench_prm,
    bench_mcp,
    bench_limits,
    bench_scale
);
criterion_main!(benches);
