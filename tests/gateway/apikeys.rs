//! Legacy API keys and `auth: both` (issue 3): the hashed key file, `mcpgate hash-key`,
//! precedence of a Bearer token, identity headers, and the deprecation signals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;

pub const KEY_CI: &str = "legacy-ci-key-0123456789abcdef";
pub const KEY_OLD: &str = "legacy-expired-key-0123456789";
pub const KEY_READONLY: &str = "legacy-no-scope-key-012345678";

/// `mcpgate hash-key` with `key` (plus a newline, as `echo` sends it) on stdin.
pub fn hash_key(key: &str, args: &[&str]) -> (i32, String, String) {
    let all: Vec<&str> = std::iter::once("hash-key")
        .chain(args.iter().copied())
        .collect();
    run_cli(&all, &format!("{key}\n"))
}

/// A key file made with `mcpgate hash-key`, as an operator would.
pub fn key_file(dir: &Path) -> PathBuf {
    let mut text = String::from("# made by mcpgate hash-key\nkeys:\n");
    for (key, args) in [
        (
            KEY_CI,
            vec!["--id", "ci", "--subject", "ci-bot", "--scope", "mcp:read"],
        ),
        (
            KEY_OLD,
            vec![
                "--id",
                "old",
                "--subject",
                "old-bot",
                "--scope",
                "mcp:read",
                "--expires",
                "2020-01-01T00:00:00Z",
            ],
        ),
        (KEY_READONLY, vec!["--id", "ro", "--subject", "reader"]),
    ] {
        let (code, out, err) = hash_key(key, &args);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains(key), "hash-key printed the key");
        text.push_str(&out);
    }
    let path = dir.join("api-keys.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

pub struct KeyEnv {
    pub env: Env,
    pub keys: PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn key_env() -> KeyEnv {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path());
    let env = Env::builder(API_KEYS)
        .var("KEYS", keys.display())
        .start()
        .await;
    KeyEnv {
        env,
        keys,
        _dir: dir,
    }
}

fn key(path: &str, key: &str) -> Req {
    Req::post(path).h("X-API-Key", key)
}

#[tokio::test]
async fn valid_key_gets_identity_and_deprecation_headers() {
    let k = key_env().await;
    let env = &k.env;
    let r = env.send(key("/mcp", KEY_CI)).await;
    assert_eq!(r.status, 200, "{r}");
    // RFC 9745 Deprecation (structured date), RFC 8594 Sunset (HTTP-date), and a link to
    // the route's protected resource metadata so the client can move to OAuth.
    assert_eq!(r.header("deprecation"), Some("@1767225600"), "{r}");
    assert_eq!(
        r.header("sunset"),
        Some("Thu, 31 Dec 2099 00:00:00 GMT"),
        "{r}"
    );
    assert_eq!(
        r.header("link"),
        Some(format!("<{PRM}>; rel=\"deprecation\"").as_str()),
        "{r}"
    );
    let u = env.up.only();
    assert_eq!(u.header("x-auth-subject"), Some("ci-bot"));
    assert_eq!(u.header("x-auth-scopes"), Some("mcp:read"));
    assert_eq!(u.header("x-auth-client-id"), Some("ci"));
    assert_eq!(u.header("x-auth-method"), Some("api_key"));
    assert!(u.header("x-auth-issuer").is_none(), "{u:#?}");
    assert!(
        u.header_all_loose("x-api-key").is_empty(),
        "key forwarded: {u:#?}"
    );
    // The same key as `Authorization: ApiKey <key>`.
    let r = env
        .send(Req::post("/mcp").h("Authorization", &format!("ApiKey {KEY_CI}")))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(env.up.last().header_all_loose("authorization").is_empty());
    // Never logged: only a short hash.
    assert!(!env.gw.logs().contains(KEY_CI));
}

#[tokio::test]
async fn api_key_only_route() {
    let k = key_env().await;
    let env = &k.env;
    let r = env.send(key("/legacy", KEY_CI)).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("deprecation").is_some(), "{r}");
    assert!(
        r.header("link").is_none(),
        "no OAuth metadata to point to: {r}"
    );
    assert!(r.header("sunset").is_none(), "{r}");
    // No key: 401 naming the key header; a Bearer token is not a credential here.
    for req in [
        Req::post("/legacy"),
        Req::post("/legacy").bearer(&env.tok().build()),
    ] {
        let r = env.send(req).await;
        assert_eq!(r.status, 401, "{r}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("ApiKey header=\"x-api-key\""),
            "{r}"
        );
        assert_json_error(&r, Some("unauthorized"));
    }
    assert_eq!(env.up.count(), 1);
    // Not an OAuth resource: no metadata.
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/legacy"))
        .await;
    assert_eq!(r.status, 404, "{r}");
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/mcp"))
        .await;
    assert_eq!(r.status, 200, "`both` routes serve metadata: {r}");
}

#[tokio::test]
async fn unknown_expired_and_unscoped_keys_are_refused() {
    let k = key_env().await;
    let env = &k.env;
    for (what, k) in [
        ("unknown", "not-a-known-key-0123456789"),
        ("expired", KEY_OLD),
        (
            "a known key minus its last character",
            "legacy-ci-key-0123456789abcde",
        ),
    ] {
        let r = env.send(key("/mcp", k)).await;
        assert_eq!(r.status, 401, "{what}: {r}");
        assert_json_error(&r, Some("invalid_api_key"));
        // On `both`, the challenge steers the client to OAuth (no error: Bearer wasn't used).
        let c = r.challenge();
        assert_eq!(c.param("resource_metadata"), Some(PRM), "{what}: {r}");
        assert_eq!(c.param("scope"), Some("mcp:read"), "{what}: {r}");
        assert_eq!(c.param("error"), None, "{what}: {r}");
        assert!(r.header("deprecation").is_none());
        let r = env.send(key("/legacy", k)).await;
        assert_eq!(r.status, 401, "{what}: {r}");
        assert_json_error(&r, Some("invalid_api_key"));
    }
    let r = env.send(key("/mcp", KEY_OLD)).await;
    assert!(r.text().contains("expired"), "{r}");
    // A known key without the route's scope: 403.
    let r = env.send(key("/mcp", KEY_READONLY)).await;
    assert_insufficient_scope(&r, "mcp:read", PRM);
    // Two keys at once, or an empty one: 400.
    for req in [
        key("/mcp", KEY_CI).h("Authorization", &format!("ApiKey {KEY_CI}")),
        key("/mcp", KEY_CI).h("X-API-Key", KEY_CI),
        key("/mcp", ""),
    ] {
        let r = env.send(req).await;
        assert_eq!(r.status, 400, "{r}");
        assert_json_error(&r, Some("invalid_request"));
    }
    // A route past its sunset refuses keys.
    let r = env.send(key("/gone", KEY_CI)).await;
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("sunset"), "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn both_mode_a_bearer_token_is_judged_as_oauth_only() {
    let k = key_env().await;
    let env = &k.env;
    // A bad token is not rescued by a good key sent alongside.
    let bad = env.tok().signer(Signer::Evil).build();
    let r = env.send(key("/mcp", KEY_CI).bearer(&bad)).await;
    assert_invalid_token(&r, PRM);
    let expired = env.tok().c("exp", serde_json::json!(now() - 3600)).build();
    let r = env.send(key("/mcp", KEY_CI).bearer(&expired)).await;
    assert_invalid_token(&r, PRM);
    env.assert_nothing_forwarded();
    // A good token with a key: OAuth, no deprecation headers, the key not forwarded.
    let r = env
        .send(key("/mcp", KEY_CI).bearer(&env.tok().build()))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("deprecation").is_none(), "{r}");
    let u = env.up.only();
    assert_eq!(u.header("x-auth-method"), Some("oauth"));
    assert_eq!(u.header("x-auth-subject"), Some("alice"));
    assert!(u.header_all_loose("x-api-key").is_empty(), "{u:#?}");
    // On an OAuth-only route a key is no credential, and it is never forwarded.
    let r = env.send(key("/oauth", KEY_CI)).await;
    assert_eq!(r.status, 401, "{r}");
    assert_json_error(&r, Some("unauthorized"));
    let r = env
        .send(
            key("/oauth", KEY_CI)
                .bearer(&Tok::new(&env.idp.issuer(), &format!("{PUBLIC}/oauth")).build()),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(env.up.last().header_all_loose("x-api-key").is_empty());
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped() {
    let k = key_env().await;
    let env = &k.env;
    let r = env
        .send(
            key("/mcp", KEY_CI)
                .h("X-Auth-Subject", "admin")
                .h("X-Auth-Scopes", "admin")
                .h("X-Auth-Issuer", "https://evil.example.com")
                .h("X-Auth-Method", "oauth")
                .h("X_Auth_Method", "oauth")
                .h("x-auth-client-id", "root"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(u.header_all_loose("x-auth-subject"), vec!["ci-bot"]);
    assert_eq!(u.header_all_loose("x-auth-scopes"), vec!["mcp:read"]);
    assert_eq!(u.header_all_loose("x-auth-method"), vec!["api_key"]);
    assert_eq!(u.header_all_loose("x-auth-client-id"), vec!["ci"]);
    assert!(u.header_all_loose("x-auth-issuer").is_empty(), "{u:#?}");
    // On a JWT request too, a client-sent X-Auth-Method never survives.
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&env.tok().build())
                .h("X-Auth-Method", "api_key"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        env.up.last().header_all_loose("x-auth-method"),
        vec!["oauth"]
    );
}

/// Red team, second pass (F2, F3): the API key header and `X-Request-Id` spelled with `_`
/// (`X_Api_Key`, which a WSGI/CGI upstream reads as `HTTP_X_API_KEY`) never reach the
/// upstream: the key is the credential in any spelling, and the request id is the gateway's.
#[tokio::test]
async fn underscore_spellings_of_the_key_and_the_request_id_never_reach_the_upstream() {
    let k = key_env().await;
    let env = &k.env;
    for req in [
        key("/mcp", KEY_CI),
        Req::post("/mcp").bearer(&env.tok().build()),
    ] {
        let before = env.up.count();
        let r = env
            .send(
                req.h("X_Api_Key", "forged-key-0123456789")
                    .h("X_Request_Id", "evil-under"),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(env.up.count(), before + 1);
        let u = env.up.last();
        assert!(u.header_all_loose("x-api-key").is_empty(), "{u:#?}");
        let ids = u.header_all_loose("x-request-id");
        assert_eq!(ids.len(), 1, "{u:#?}");
        assert_ne!(ids[0], "evil-under");
        assert_eq!(r.header("x-request-id"), Some(ids[0]), "{r}");
    }
}

#[tokio::test]
async fn key_file_is_reloaded_and_a_bad_one_keeps_the_old_keys() {
    let k = key_env().await;
    let env = &k.env;
    assert_eq!(env.send(key("/mcp", KEY_CI)).await.status, 200);
    let good = std::fs::read_to_string(&k.keys).unwrap();

    // A broken key file is a rejected config: the old keys keep working.
    std::fs::write(&k.keys, good.replace("sha256:", "sha512:")).unwrap();
    env.gw.wait_log("configuration rejected", 1).await;
    assert!(env.gw.logs().contains("api-keys.yaml"), "{}", env.gw.logs());
    assert_eq!(env.send(key("/mcp", KEY_CI)).await.status, 200);

    // Revoking a key = removing its entry; written the way editors do (temp + rename).
    let without_ci: String = {
        let (head, rest) = good.split_once("  - id: \"ci\"").unwrap();
        let next = rest.find("  - id:").unwrap();
        format!("{head}{}", &rest[next..])
    };
    let tmp = k.keys.with_extension("tmp");
    std::fs::write(&tmp, without_ci).unwrap();
    std::fs::rename(&tmp, &k.keys).unwrap();
    eventually(Duration::from_secs(10), "the key to be revoked", || async {
        env.send(key("/legacy", KEY_CI)).await.status == 401
    })
    .await;
    let r = env.send(key("/mcp", KEY_CI)).await;
    assert_eq!(r.status, 401, "{r}");
}

#[test]
fn hash_key_strips_one_newline_and_refuses_bad_keys() {
    let (code, out, _) = hash_key(KEY_CI, &["--id", "ci"]);
    assert_eq!(code, 0);
    // SHA-256 of the key without the newline `echo` added.
    assert!(
        out.contains("sha256: 17df184a0d82eebdc170377b36d86f7c2b21bdd9525ce6b8d34b80d2c398ffb3"),
        "not the SHA-256 of the key without its newline:\n{out}"
    );
    let (code, _, err) = hash_key("", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = hash_key("two words", &[]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = hash_key("short", &[]);
    assert_eq!(code, 0);
    assert!(err.contains("warning"), "{err}");
    let (code, _, err) = hash_key(KEY_CI, &["--expires", "next tuesday"]);
    assert_ne!(code, 0, "{err}");
}

#[test]
fn check_reports_key_file_errors_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.yaml"),
        "keys:\n  - id: a\n    sha256: 00\n    subject: s\n    scopez: []\n",
    )
    .unwrap();
    let config = render(
        API_KEYS,
        &[
            ("PORT", "18080"),
            ("ADMIN", "19090"),
            ("IDP", "http://127.0.0.1:4000"),
            ("JWKS", "http://127.0.0.1:4000/jwks"),
            ("UP", "http://127.0.0.1:3001"),
            ("KEYS", "keys.yaml"),
        ],
    );
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config).unwrap();
    let (code, _, err) = run_cli(&["check", "--config", path.to_str().unwrap()], "");
    assert_eq!(code, 1, "{err}");
    let want = format!("{}:5:5: ", dir.path().join("keys.yaml").display());
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("unknown field `scopez`"), "{err}");
}
