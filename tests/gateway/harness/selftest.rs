//! The harness checks itself: a check that cannot fail proves nothing.

use std::time::Duration;

use serde_json::json;

use super::*;

/// The log check finds a remembered token, its payload or signature segment alone, and the
/// credential of an `Authorization`, `DPoP` or `X-API-Key` header the raw client sent, and
/// ignores strings too short to be secrets.
#[test]
fn leak_check_finds_tokens_segments_and_sent_credentials() {
    let t = Tok::new("http://127.0.0.1:1", R).build();
    let (_, payload_sig) = t.split_once('.').unwrap();
    let (payload, sig) = payload_sig.split_once('.').unwrap();
    for line in [
        format!("INFO request authorization=\"Bearer {t}\""),
        format!("DEBUG claims={payload} end"),
        format!("sig:{sig}"),
    ] {
        assert!(leaked_secret(&line).is_some(), "not found in {line:?}");
    }
    let key = format!("api-key-{}", random_hex(12));
    let _ = Req::get("/").h("X-API-Key", &key);
    assert!(leaked_secret(&format!("x {key} y")).is_some());
    let proof = Proof::new(&t).build();
    assert!(leaked_secret(&format!("dpop={proof}")).is_some());
    let _ = Req::get("/").h("Authorization", "Bearer a b");
    assert_eq!(leaked_secret("route=mcp a b decision=deny"), None);
    assert_eq!(
        leaked_secret(&t[..t.len() / 2]),
        None,
        "half a header segment"
    );
}

/// The log check finds a credential in a logged query string, remembered or not, and
/// ignores a redacted one and the word in prose.
#[test]
fn leak_check_finds_query_tokens() {
    for line in [
        "ERROR pingora_proxy: GET /x?access_token=abc HTTP/1.1",
        "target=/x?a=1&api_key=k1",
        r#"{"message":"GET /a?Token=zz"}"#,
    ] {
        assert!(query_token(line).is_some(), "not found in {line:?}");
    }
    for line in [
        "GET /x?<redacted> HTTP/1.1",
        "the access_token= parameter",
        "GET /x?access_token=<redacted>",
        "GET /x?access_token=&b=1",
    ] {
        assert_eq!(query_token(line), None, "{line:?}");
    }
}

/// A gateway whose log holds a remembered secret fails the test when it is dropped (here the
/// subject of a token, which the audit line carries, plays the secret).
#[tokio::test]
async fn a_gateway_log_holding_a_secret_fails_the_test_on_drop() {
    let env = Env::standard().await;
    let subject = format!("subject-{}", random_hex(16));
    let t = env.tok().c("sub", json!(subject)).build();
    assert_eq!(env.post_mcp(&t).await.status, 200);
    env.gw.wait_log(&subject, 1).await;
    remember(&subject);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(env)));
    assert!(dropped.is_err(), "the leak went unnoticed");
}

/// A fixture placeholder left unfilled is an error, not a half-rendered config; `${VAR}` is
/// the gateway's environment expansion and stays.
#[test]
fn render_refuses_unfilled_placeholders() {
    assert_eq!(
        render("a: {X}\nb: ${Y}\n", &[("X", "1")]),
        "a: 1\nb: ${Y}\n"
    );
    let left = std::panic::catch_unwind(|| render("a: {X}\nb: {TYPO}\n", &[("X", "1")]));
    assert!(left.is_err());
}

/// A bounded wait gives up at its bound, and `never` fails the moment its condition holds.
#[tokio::test]
async fn polls_are_bounded() {
    let waited = within(Duration::from_millis(100), || async { false }).await;
    assert!(waited.is_err_and(|t| t < Duration::from_secs(1)));
    let flag = std::sync::atomic::AtomicBool::new(false);
    let caught = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(never(
        Duration::from_secs(5),
        "flag set",
        || {
            let was = flag.swap(true, std::sync::atomic::Ordering::SeqCst);
            async move { was }
        },
    )))
    .await;
    assert!(caught.is_err());
}
