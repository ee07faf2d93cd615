//! `mcpgate dev` and the command line, black-box: a busy port is one line and exit 1 (for
//! `dev` and `run`), the dev issuer serves before the gateway's first key fetch, every
//! command the banner prints works, and the dev issuer's interactive login (registration,
//! authorization code + PKCE S256, consent page, refresh rotation) holds its rules.
//! `completions` and `--version` too.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// How long a refused start may take: it must not wait on anything.
const FAIL_FAST: Duration = Duration::from_secs(10);

/// A loopback port held busy by the test.
fn busy() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Runs the binary to its end, bounded by [`FAIL_FAST`]: (exit code, stdout, stderr).
async fn fails_fast(args: &[&str]) -> (i32, String, String) {
    let start = Instant::now();
    let out = run_cli_within(args, FAIL_FAST).await.unwrap_or_else(|| {
        panic!(
            "`mcpgate {}` still running after {FAIL_FAST:?}",
            args.join(" ")
        )
    });
    assert!(start.elapsed() < FAIL_FAST);
    out
}

#[tokio::test]
async fn dev_busy_port_is_one_line_and_exit_1() {
    for (flag, what) in [
        ("--port", "the gateway"),
        ("--admin-port", "the admin listener"),
        ("--issuer-port", "the dev issuer"),
        ("--demo-port", "the demo MCP server"),
    ] {
        let (_held, port) = busy();
        let p = port.to_string();
        let mut args = vec!["dev"];
        for f in ["--port", "--admin-port", "--issuer-port", "--demo-port"] {
            args.extend([f, if f == flag { p.as_str() } else { "0" }]);
        }
        let (code, out, err) = fails_fast(&args).await;
        assert_eq!(code, 1, "{flag}: {err}");
        assert_eq!(out, "", "{flag}: nothing may claim to be running");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{flag}: one line, got:\n{err}"
        );
        assert_eq!(
            err.trim_end(),
            format!("mcpgate dev: 127.0.0.1:{port} is in use ({what}; choose another port with {flag} PORT)")
        );
    }
}

/// `config/dev.yaml` for `mcpgate run` on the given gateway and admin ports.
fn run_config(public: u16, admin: u16) -> String {
    include_str!("../../config/dev.yaml")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
}

#[tokio::test]
async fn run_busy_port_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let path_s = path.to_str().unwrap();
    let (_held, port) = busy();
    let free = free_port();
    for (text, setting) in [
        (run_config(port, free), "listen.address"),
        (run_config(free, port), "admin.address"),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = fails_fast(&["run", "--config", path_s]).await;
        assert_eq!(code, 1, "{setting}: {err}");
        assert_eq!(out, "");
        assert_eq!(
            err.trim_end(),
            format!("mcpgate: 127.0.0.1:{port} is in use ({setting})"),
            "{setting}"
        );
    }
}

#[tokio::test]
async fn dev_issuer_serves_before_the_first_key_fetch() {
    let dev = Dev::start(&[]).await;
    // Log lines reach stderr up to 50 ms after their event.
    eventually(START_LIMIT, "the JWKS fetch logged", || async {
        dev.logs().contains("JWKS fetched")
    })
    .await;
    let logs = dev.logs();
    assert!(!logs.contains("JWKS fetch failed"), "{logs}");
    assert!(!logs.contains(" WARN "), "no warning at start:\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    // The banner names what Inspector 2 needs.
    assert!(dev.banner.contains("Node >= 22.19"), "{}", dev.banner);
}

/// Runs one command line of the banner with bash, the banner's tokens exported.
fn shell(dev: &Dev, line: &str) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "bash", "-c", line])
        .env("READER_TOKEN", dev.token("READER_TOKEN"))
        .env("ADMIN_TOKEN", dev.token("ADMIN_TOKEN"))
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The JSON body of `curl -s` output, or of `curl -si` output after its head.
fn body_json(out: &str) -> Value {
    let body = out.split_once("\r\n\r\n").map_or(out, |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn dev_banner_commands_work() {
    let dev = Dev::start(&[]).await;
    let curls: Vec<&str> = dev
        .banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 6, "{}", dev.banner);
    // No token: 401 with the discovery challenge.
    let out = shell(&dev, curls[0]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.contains("resource_metadata="), "{out}");
    // tools/list with the reader token: reset_demo filtered out.
    let tools = body_json(&shell(&dev, curls[1]));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"whoami") && !names.contains(&"reset_demo"),
        "{names:?}"
    );
    // whoami: the reader's identity.
    let who = body_json(&shell(&dev, curls[2]));
    assert_eq!(who["result"]["isError"], false, "{who}");
    assert!(who.to_string().contains("reader"), "{who}");
    // reset_demo: 403 insufficient_scope for the reader, allowed for the admin.
    let out = shell(&dev, curls[3]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("insufficient_scope"), "{out}");
    let reset = body_json(&shell(&dev, curls[4]));
    assert_eq!(reset["result"]["isError"], false, "{reset}");
    // A fresh token from the issuer, accepted by the gateway.
    let t = body_json(&shell(&dev, curls[5]));
    let fresh = t["access_token"].as_str().unwrap_or_else(|| panic!("{t}"));
    remember(fresh);
    let r = send(dev.gateway_addr(), &mcp_call(&dev, fresh, "whoami")).await;
    assert_eq!(r.status, 200, "{r}");
    // The other URLs of the banner answer.
    let metadata = dev
        .banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("metadata"))
        .unwrap()
        .trim();
    let out = shell(&dev, &format!("curl -sf {metadata}"));
    assert_eq!(body_json(&out)["resource"], dev.mcp.as_str());
    for path in ["/metrics", "/healthz", "/readyz"] {
        shell(&dev, &format!("curl -sf {}{path}", dev.admin));
    }
}

// ------------------------------------------------------------------------------------------
// The dev issuer's interactive login
// ------------------------------------------------------------------------------------------

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-dev-test";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn mcp_call(dev: &Dev, token: &str, tool: &str) -> Req {
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{}}});
    Req::new("POST", "/mcp")
        .host(dev.gateway.trim_start_matches("http://"))
        .bearer(token)
        .h("Content-Type", "application/json")
        .h("Accept", "application/json, text/event-stream")
        .body(body.to_string().into_bytes())
}

/// The claims of a compact JWS (not verified: the gateway does that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A client of the dev issuer, registered through `/register`.
struct Login<'a> {
    dev: &'a Dev,
    client_id: String,
    redirect: String,
}

impl<'a> Login<'a> {
    async fn register(dev: &'a Dev, redirect: &str) -> Login<'a> {
        let meta = json!({
            "client_name": "dev test <client>",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        let r = issuer_post(dev, "/register", "application/json", meta.to_string()).await;
        assert_eq!(r.status, 201, "{r}");
        Login {
            dev,
            client_id: r.json()["client_id"].as_str().unwrap().to_string(),
            redirect: redirect.to_string(),
        }
    }

    /// `GET /authorize` with the usual parameters, `extra` replacing or (empty) removing them.
    async fn authorize(&self, extra: &[(&str, &str)]) -> Resp {
        let ch = challenge(VERIFIER);
        let mut p = vec![
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect.as_str()),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "st-1"),
            ("scope", "mcp:tools"),
            ("resource", self.dev.mcp.as_str()),
        ];
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        issuer_get(self.dev, &format!("/authorize?{}", form(&p))).await
    }

    /// The consent page's approval, followed: the redirect's query.
    async fn approve(&self, page: &Resp) -> HashMap<String, String> {
        assert_eq!(page.status, 200, "{page}");
        let html = page.text();
        let href = html
            .split("id=\"approve\" href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no approval link: {html}"));
        let r = issuer_get(self.dev, href).await;
        assert_eq!(r.status, 302, "{r}");
        let location = r.header("location").unwrap();
        assert!(location.starts_with(&self.redirect), "{location}");
        query_of(location)
    }

    /// A fresh authorization code (consent approved).
    async fn code(&self) -> String {
        let page = self.authorize(&[]).await;
        let q = self.approve(&page).await;
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], self.dev.issuer);
        q["code"].clone()
    }

    async fn redeem(&self, code: &str, extra: &[(&str, &str)]) -> Resp {
        let mut p = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", self.redirect.as_str()),
            ("client_id", self.client_id.as_str()),
            ("resource", self.dev.mcp.as_str()),
        ];
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        token(self.dev, &p).await
    }

    async fn refresh(&self, refresh_token: &str) -> Resp {
        token(
            self.dev,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", self.client_id.as_str()),
            ],
        )
        .await
    }
}

async fn issuer_get(dev: &Dev, target: &str) -> Resp {
    let host = dev.issuer.trim_start_matches("http://").to_string();
    send(dev.issuer_addr(), &Req::get(target).host(&host)).await
}

async fn issuer_post(dev: &Dev, path: &str, content_type: &str, body: String) -> Resp {
    let host = dev.issuer.trim_start_matches("http://").to_string();
    let req = Req::new("POST", path)
        .host(&host)
        .h("Content-Type", content_type)
        .body(body.into_bytes());
    send(dev.issuer_addr(), &req).await
}

/// `POST /token`; the tokens of a 200 answer are remembered for the log checks.
async fn token(dev: &Dev, pairs: &[(&str, &str)]) -> Resp {
    let r = issuer_post(
        dev,
        "/token",
        "application/x-www-form-urlencoded",
        form(pairs),
    )
    .await;
    if r.status == 200 {
        let j = r.json();
        for k in ["access_token", "refresh_token"] {
            if let Some(t) = j[k].as_str() {
                remember(t);
            }
        }
    }
    r
}

fn assert_oauth_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r}");
    assert_eq!(r.json()["error"], code, "{r}");
    assert!(r.json()["error_description"].is_string(), "{r}");
}

#[tokio::test]
async fn dev_issuer_login_reaches_a_tool() {
    let dev = Dev::start(&[]).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let m = issuer_get(&dev, path).await.json();
        assert_eq!(m["issuer"], dev.issuer);
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        for g in ["authorization_code", "refresh_token"] {
            assert!(
                m["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(g)),
                "{m}"
            );
        }
        assert_eq!(
            m["registration_endpoint"],
            format!("{}/register", dev.issuer)
        );
    }
    let login = Login::register(&dev, "http://127.0.0.1:1/callback").await;
    // The consent page shows the client, the scopes, the resource, and escapes the name.
    let page = login.authorize(&[]).await;
    let html = page.text();
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for shown in [
        "dev test &lt;client&gt;",
        &login.client_id,
        "mcp:tools",
        &dev.mcp,
        "dev-user",
    ] {
        assert!(html.contains(shown), "{shown} not on the page:\n{html}");
    }
    assert!(!html.contains("<client>"));
    let q = login.approve(&page).await;
    let r = login.redeem(&q["code"], &[]).await;
    assert_eq!(r.status, 200, "{r}");
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].is_string());
    let access = t["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["aud"], dev.mcp.as_str(), "aud is the requested resource");
    assert_eq!(c["sub"], "dev-user");
    assert_eq!(c["client_id"], login.client_id.as_str());
    // Through the gateway to a tool.
    let r = send(dev.gateway_addr(), &mcp_call(&dev, access, "whoami")).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.text().contains("dev-user"), "{r}");
    // The scope it was granted does not reach the admin tool.
    let r = send(dev.gateway_addr(), &mcp_call(&dev, access, "reset_demo")).await;
    assert_eq!(r.status, 403, "{r}");
}

#[tokio::test]
async fn dev_issuer_refuses_what_breaks_the_rules() {
    let dev = Dev::start(&[]).await;
    let login = Login::register(&dev, "http://127.0.0.1:1/callback").await;

    // PKCE: plain, a missing method, a missing challenge go back to the client as errors.
    for extra in [
        [("code_challenge_method", "plain")],
        [("code_challenge_method", "")],
        [("code_challenge", "")],
    ] {
        let r = login.authorize(&extra).await;
        assert_eq!(r.status, 302, "{extra:?}: {r}");
        let q = query_of(r.header("location").unwrap());
        assert_eq!(q["error"], "invalid_request", "{extra:?}");
        assert_eq!(q["state"], "st-1");
        assert!(!q.contains_key("code"));
    }

    // A redirect URI not registered: shown, never redirected to.
    for other in [
        "http://127.0.0.1:1/other",
        "http://localhost:1/callback",
        "https://evil.example/cb",
    ] {
        let r = login.authorize(&[("redirect_uri", other)]).await;
        assert_oauth_error(&r, 400, "invalid_request");
        assert!(r.header("location").is_none());
    }
    // Registration takes loopback redirect URIs only.
    for bad in [
        "https://evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "myapp:/cb",
    ] {
        let meta = json!({"redirect_uris": [bad]}).to_string();
        let r = issuer_post(&dev, "/register", "application/json", meta).await;
        assert_oauth_error(&r, 400, "invalid_redirect_uri");
    }

    // PKCE mismatch: refused, and the code is used up.
    let code = login.code().await;
    let wrong = "x".repeat(43);
    assert_oauth_error(
        &login.redeem(&code, &[("code_verifier", &wrong)]).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(&login.redeem(&code, &[]).await, 400, "invalid_grant");

    // A redirect URI at the token endpoint other than the one authorized.
    let code = login.code().await;
    let r = login
        .redeem(&code, &[("redirect_uri", "http://127.0.0.1:1/other")])
        .await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // A code redeemed twice: the second is refused and what the first gave is revoked.
    let code = login.code().await;
    let first = login.redeem(&code, &[]).await;
    assert_eq!(first.status, 200, "{first}");
    assert_oauth_error(&login.redeem(&code, &[]).await, 400, "invalid_grant");
    let r0 = first.json()["refresh_token"].as_str().unwrap().to_string();
    assert_oauth_error(&login.refresh(&r0).await, 400, "invalid_grant");

    // Refresh: rotated on every use; a used one presented again revokes the family.
    let code = login.code().await;
    let r0 = login.redeem(&code, &[]).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let a1 = login.refresh(&r0).await;
    assert_eq!(a1.status, 200, "{a1}");
    let r1 = a1.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0, "rotated");
    let access = a1.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&access)["aud"], dev.mcp.as_str());
    let r = send(dev.gateway_addr(), &mcp_call(&dev, &access, "whoami")).await;
    assert_eq!(r.status, 200, "a refreshed token works: {r}");
    let a2 = login.refresh(&r1).await;
    assert_eq!(a2.status, 200, "{a2}");
    let r2 = a2.json()["refresh_token"].as_str().unwrap().to_string();
    assert_oauth_error(&login.refresh(&r0).await, 400, "invalid_grant");
    assert_oauth_error(&login.refresh(&r2).await, 400, "invalid_grant");

    // A resource the gateway does not serve.
    let r = login
        .authorize(&[("resource", "http://127.0.0.1:1/elsewhere")])
        .await;
    assert_eq!(
        query_of(r.header("location").unwrap())["error"],
        "invalid_target"
    );
}

#[tokio::test]
async fn completions_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_cli(&["completions", shell], "");
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["mcpgate", "hash-key", "completions", "issuer-port"] {
            assert!(out.contains(word), "{shell}: no {word}");
        }
    }
    let (code, _, err) = run_cli(&["completions", "tcsh"], "");
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run_cli(&["--version"], "");
    assert_eq!(code, 0);
    let rev = out
        .trim()
        .strip_prefix("mcpgate ")
        .and_then(|r| r.split_once(" (revision "))
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        rev == "unknown" || (rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{out}"
    );
}
