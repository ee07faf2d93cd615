//! MCP 2026-07-28 in front of older servers (issue 17): the checks a component reading MCP
//! bodies must make because the unmodified servers behind the gateway often predate them.
//! Tests are named `i17_<item>_...` after the items:
//!
//! 1. `MCP-Protocol-Version` against the body's `_meta` (-32020) and a route's
//!    `protocol_versions` (-32022);
//! 2. `Mcp-Param-{Name}` headers against the body, with tool schemas learned from lists;
//! 3. `cacheScope: "private"` (and a bounded `ttlMs`) on filtered lists only;
//! 4. `resources/list`, `resources/templates/list`, `prompts/list` filtered;
//! 5. structured denials (SEP-2643 draft);
//! 6. tool-definition pinning;
//! 7. inspected bodies up to `limits.max_inspected_body_bytes` (1 MiB by default).
//!
//! Every refusal is checked to have opened no upstream connection and sent no request.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::*;
use crate::mcp::padded_call;

/// Status of one exchange over HTTP/1.1 (TLS), or the error that ended it.
async fn h1(env: &Env, bytes: &[u8]) -> Result<Resp, String> {
    let mut tls = tls_h1(env.gw.addr(), env.ca()).await;
    tokio::time::timeout(Duration::from_secs(20), exchange(&mut tls, bytes, false))
        .await
        .map_err(|_| "no answer within 20 s".to_string())?
}

/// One exchange over HTTP/2 (TLS); `length`: send a `content-length`.
async fn h2(env: &Env, token: &str, body: &[u8], length: bool) -> Result<H2Resp, String> {
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    let mut req = h2_req("POST", "/mcp")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if length {
        req = req.header("content-length", body.len().to_string());
    }
    h2_send(&mut send, req.body(()).unwrap(), Some(body)).await
}

/// A token for every route of the fixture with `scope`.
fn tok(env: &Env, scope: &str) -> String {
    let auds: Vec<String> = ROUTES
        .iter()
        .map(|r| format!("https://mcp.example.com/{r}"))
        .collect();
    env.tok()
        .c("aud", serde_json::json!(auds))
        .scope(scope)
        .build()
}

/// The route prefixes of the fixture.
const ROUTES: &[&str] = &["mcp", "plain"];

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Nothing reached the upstream since `(conns, reqs)`.
fn untouched(env: &Env, (conns, reqs): (usize, usize), what: &str) {
    assert_eq!(
        env.up.count(),
        reqs,
        "{what}: a refused request was forwarded"
    );
    assert_eq!(
        env.up.connections(),
        conns,
        "{what}: a refused request opened an upstream connection"
    );
}

fn mark(env: &Env) -> (usize, usize) {
    (env.up.connections(), env.up.count())
}

/// Item 7: a 1 MiB `tools/call` is judged and forwarded byte for byte over HTTP/1.1 and
/// HTTP/2 (the upstream's copy has the same SHA-256); one byte over the limit is refused with
/// 413 and nothing forwarded; a body without a declared length keeps the 64 KiB bound.
#[tokio::test]
async fn i17_7_a_1_mib_call_is_judged_and_forwarded_byte_for_byte() {
    let env = Env::builder(MCP2026).tls().start().await;
    let t = tok(&env, "mcp:read");
    let limit = 1024 * 1024;
    let body = padded_call(limit);
    let req = Req::post("/mcp").bearer(&t);

    // HTTP/1.1 with Content-Length.
    let r = h1(&env, &req.clone().body(body.clone()).to_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(sha256(&env.up.last().body), sha256(&body), "HTTP/1.1");
    // HTTP/2 with content-length.
    let r = h2(&env, &t, &body, true).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(sha256(&env.up.last().body), sha256(&body), "HTTP/2");
    assert_eq!(env.up.count(), 2);

    // A denied call of the same size is judged (the whole body was read) and refused.
    let denied = {
        let mut b = body.clone();
        let at = b.windows(9).position(|w| w == b"read_file").unwrap();
        b[at..at + 9].copy_from_slice(b"delete_ab");
        b
    };
    let m = mark(&env);
    let r = h1(&env, &req.clone().body(denied.clone()).to_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{r}");
    let r = h2(&env, &t, &denied, true).await.unwrap();
    assert_eq!(r.status, 403);
    untouched(&env, m, "a denied 1 MiB call");

    // One byte over: refused from the declared length, over both protocols.
    let over = padded_call(limit + 1);
    let r = h1(&env, &req.clone().body(over.clone()).to_bytes()).await;
    if let Ok(r) = &r {
        assert_eq!(r.status, 413, "{r}");
        assert_json_error(r, Some("invalid_request"));
    }
    match h2(&env, &t, &over, true).await {
        Ok(r) => {
            assert_eq!(r.status, 413);
            assert_eq!(r.json()["error"], "invalid_request");
        }
        Err(e) => panic!("HTTP/2 one byte over: no answer: {e}"),
    }
    untouched(&env, m, "1 MiB + 1");

    // Without a declared length the tail cannot be found before it arrives: 64 KiB.
    let small = padded_call(60 * 1024);
    let r = h1(
        &env,
        &chunked_bytes(&req, &[&small[..30_000], &small[30_000..]]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.last().body, small, "chunked body forwarded intact");
    let r = h2(&env, &t, &small, false).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(env.up.last().body, small, "HTTP/2 without length");
    let m = mark(&env);
    let big = padded_call(70 * 1024);
    let r = h1(
        &env,
        &chunked_bytes(&req, &[&big[..40_000], &big[40_000..]]),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{r}");
    let r = h2(&env, &t, &big, false).await.unwrap();
    assert_eq!(r.status, 413);
    untouched(&env, m, "over 64 KiB without a length");

    // A route without policy streams its bodies, whatever their size.
    let r = h1(
        &env,
        &Req::post("/plain")
            .bearer(&t)
            .body(padded_call(2 * limit))
            .to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r}");
}
