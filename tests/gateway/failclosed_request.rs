//! Issue 13, request side: on a route with an MCP policy a request is forwarded only if the
//! gateway has judged everything the upstream could act on. One test per item of the issue
//! (`item<N>_...`), each over HTTP/1.1 and HTTP/2 (TLS, ALPN), each refusal checked for its
//! status, its JSON body and that nothing reached the upstream (no request, no connection).
//! Plus a real framework upstream (Flask, which runs `post` as `POST`) and a black-box sample
//! of the property test of `src/shape.rs`.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const API_KEY: &str = "k-failclosed-0123456789abcdef";

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Answers every request with a small JSON-RPC result; with `X-Test-Session`, issues that
/// session id (as an MCP server does on `initialize`).
fn upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(s) = req.header("x-test-session") {
            headers.push(("Mcp-Session-Id".into(), s.to_string()));
        }
        Reply::Full {
            status: 200,
            headers,
            body: br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
        }
    })
}

/// The [`FAILCLOSED_REQUEST`] fixture on TLS, with the requests and checks of these tests.
struct Env(crate::harness::Env);

impl Deref for Env {
    type Target = crate::harness::Env;
    fn deref(&self) -> &crate::harness::Env {
        &self.0
    }
}

/// How a test request travels.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    H1,
    H2,
}

const WIRES: [Wire; 2] = [Wire::H1, Wire::H2];

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    version: reqwest::Version,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {:?} {}",
            self.status,
            self.version,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

/// What a refusal's body must be.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// `{"error": code, "error_description": "..."}`
    OAuth(&'static str),
    /// A JSON-RPC error with this code.
    JsonRpc(i64),
    /// None at all (a HEAD response).
    Empty,
}

impl Env {
    async fn start() -> Env {
        let keys = format!(
            "keys:\n  - id: key-alice\n    sha256: {}\n    subject: alice\n    scopes: [mcp:tools]\n",
            sha256_hex(API_KEY)
        );
        let env = crate::harness::Env::builder(FAILCLOSED_REQUEST)
            .tls()
            .upstream(upstream())
            .file("KEYS", "keys.yaml", keys)
            .start()
            .await;
        Env(env)
    }

    fn tok(&self, sub: Option<&str>, scope: &str) -> String {
        let aud = ["/mcp", "/allow", "/other", "/keys", "/open"].map(|p| format!("{PUBLIC}{p}"));
        let t = Tok::new(&self.idp.issuer(), R)
            .c("aud", json!(aud))
            .scope(scope);
        match sub {
            Some(s) => t.c("sub", json!(s)),
            None => t.no_c("sub"),
        }
        .build()
    }

    async fn send(
        &self,
        wire: Wire,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> Answer {
        let client = https_client(self.pki.as_ref().unwrap(), self.gw.addr(), wire == Wire::H1);
        let url = format!("https://mcp.example.com:{}{path}", self.gw.addr().port());
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        let mut req = client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .headers(h);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{wire:?} {method} {path}: {e:?}"));
        let (status, headers, version) = (r.status().as_u16(), r.headers().clone(), r.version());
        let body = r.bytes().await.unwrap_or_default().to_vec();
        let want = match wire {
            Wire::H1 => reqwest::Version::HTTP_11,
            Wire::H2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(version, want, "ALPN");
        Answer {
            status,
            headers,
            body,
            version,
        }
    }

    /// Sends and checks the refusal: status, body, and an untouched upstream.
    #[allow(clippy::too_many_arguments)]
    async fn refused(
        &self,
        wire: Wire,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
        status: u16,
        want: Body,
    ) -> Answer {
        let (conns, reqs) = (self.up.connections(), self.up.count());
        let a = self.send(wire, method, path, token, headers, body).await;
        let what = format!(
            "{wire:?} {method} {path} {headers:?} {:?}",
            body.map(String::from_utf8_lossy)
        );
        assert_eq!(a.status, status, "{what}: {a}");
        match want {
            Body::OAuth(code) => {
                assert!(
                    a.headers
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
                    "{what}: {a}"
                );
                let v = a.json();
                assert_eq!(v["error"], code, "{what}: {a}");
                assert!(v["error_description"].is_string(), "{what}: {a}");
            }
            Body::JsonRpc(code) => {
                let v = a.json();
                assert_eq!(v["jsonrpc"], "2.0", "{what}: {a}");
                assert_eq!(v["error"]["code"], code, "{what}: {a}");
                assert!(v["error"]["message"].is_string(), "{what}: {a}");
            }
            Body::Empty => assert!(a.body.is_empty(), "{what}: {a}"),
        }
        assert_eq!(
            self.up.count(),
            reqs,
            "{what}: reached the upstream: {:#?}",
            self.up.requests().last()
        );
        assert_eq!(
            self.up.connections(),
            conns,
            "{what}: opened an upstream connection"
        );
        a
    }

    /// Sends and expects the upstream to have received it.
    async fn forwarded(
        &self,
        wire: Wire,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> (Answer, Request) {
        let before = self.up.count();
        let a = self.send(wire, method, path, token, headers, body).await;
        assert_eq!(a.status, 200, "{wire:?} {method} {path}: {a}");
        assert_eq!(self.up.count(), before + 1, "{wire:?} {method} {path}");
        (a, self.up.last())
    }
}

fn call(name: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#)
        .into_bytes()
}

fn message(method: &str, params: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": params}))
        .unwrap()
}

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

// ---------------------------------------------------------------------------------------------
// Item 1: methods
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item1_methods_other_than_post_are_inspected_or_refused() {
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let denied = call("delete_everything");
    for wire in WIRES {
        // Exact POST: the body is judged (403 by policy), as before.
        env.refused(
            wire,
            "POST",
            "/mcp",
            Some(&t),
            &[JSON],
            Some(&denied),
            403,
            Body::OAuth("insufficient_scope"),
        )
        .await;
        // Methods the transport does not use, and POST in another case: 405 + Allow.
        for m in [
            "PUT",
            "PATCH",
            "PROPFIND",
            "post",
            "Post",
            "pOST",
            "X-TOOLS-CALL",
        ] {
            let a = env
                .refused(
                    wire,
                    m,
                    "/mcp",
                    Some(&t),
                    &[JSON],
                    Some(&denied),
                    405,
                    Body::OAuth("method_not_allowed"),
                )
                .await;
            assert_eq!(
                a.headers.get("allow").map(|v| v.as_bytes()),
                Some(b"GET, POST, DELETE, OPTIONS".as_slice()),
                "{wire:?} {m}: {a}"
            );
        }
        // HEAD is not a transport method either (its answer has no body).
        let a = env
            .refused(wire, "HEAD", "/mcp", Some(&t), &[], None, 405, Body::Empty)
            .await;
        assert!(a.headers.contains_key("allow"), "{a}");
        // Transport methods other than POST carry no body on a policy route.
        for m in ["GET", "DELETE", "OPTIONS"] {
            env.refused(
                wire,
                m,
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&denied),
                400,
                Body::OAuth("invalid_request"),
            )
            .await;
            // An Mcp-Method header describes a body the request does not have.
            env.refused(
                wire,
                m,
                "/mcp",
                Some(&t),
                &[
                    ("mcp-method", b"tools/call"),
                    ("mcp-name", b"delete_everything"),
                ],
                None,
                400,
                Body::JsonRpc(-32020),
            )
            .await;
        }
        // Without a body they pass (the GET stream, session termination).
        for m in ["GET", "DELETE"] {
            env.forwarded(
                wire,
                m,
                "/mcp",
                Some(&t),
                &[("accept", b"text/event-stream")],
                None,
            )
            .await;
        }
        // The mirrored-header rules hold for every method on a route without policy too.
        env.refused(
            wire,
            "PUT",
            "/other",
            Some(&t),
            &[JSON, ("mcp-method", b"tools/list")],
            Some(&denied),
            400,
            Body::JsonRpc(-32020),
        )
        .await;
        // An allowed call still goes through, byte for byte.
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let (_, got) = env
            .forwarded(wire, "POST", "/mcp", Some(&t), &[JSON], Some(list))
            .await;
        assert_eq!(
            (got.method.as_str(), got.body.as_slice()),
            ("POST", list.as_slice())
        );
    }
}

/// A real framework behind the gateway: Flask (Werkzeug) runs a request whose method is
/// `post` as a `POST`. Sent directly, the denied tool runs; through the gateway it never does.
#[tokio::test]
async fn item1_flask_upstream_never_runs_a_denied_tool_sent_as_lowercase_post() {
    let flask = Flask::start();
    let env = flask_env(&flask).await;
    let t = env.tok().scope("mcp:tools").build();
    // The premise: Flask treats `post` as POST and runs the tool.
    let direct = reqwest::Client::builder()
        .no_proxy()
        .timeout(IO_TIMEOUT)
        .build()
        .unwrap()
        .request(
            Method::from_bytes(b"post").unwrap(),
            format!("http://{}/mcp", flask.addr),
        )
        .header("content-type", "application/json")
        .body(call("delete_premise"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(
        flask.ran(),
        vec!["delete_premise"],
        "premise: Flask runs `post`"
    );
    for m in ["post", "Post", "PUT", "PATCH"] {
        let r = send(
            env.gw.addr(),
            &Req::new(m, "/mcp")
                .bearer(&t)
                .h("Content-Type", "application/json")
                .body(call("delete_everything")),
        )
        .await;
        assert_eq!(r.status, 405, "{m}: {r}");
        assert_json_error(&r, Some("method_not_allowed"));
        assert_eq!(r.header("allow"), Some("GET, POST, DELETE, OPTIONS"));
    }
    let r = send(
        env.gw.addr(),
        &Req::post("/mcp").bearer(&t).body(call("delete_everything")),
    )
    .await;
    assert_eq!(r.status, 403, "{r}");
    assert_eq!(flask.ran(), vec!["delete_premise"], "a denied tool ran");
    // An allowed tool, sent properly, runs.
    let r = send(
        env.gw.addr(),
        &Req::post("/mcp").bearer(&t).body(call("echo")),
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(flask.ran(), vec!["delete_premise", "echo"]);
}

const FLASK_APP: &str = r#"
import sys
from flask import Flask, request
from werkzeug.serving import make_server

ran = sys.argv[1]
app = Flask(__name__)

@app.route("/mcp", methods=["POST"])
def mcp():
    msg = request.get_json(force=True)
    name = msg.get("params", {}).get("name", "")
    with open(ran, "a") as f:
        f.write(name + "\n")
    return {"jsonrpc": "2.0", "id": msg.get("id"), "result": {"content": [{"type": "text", "text": name}]}}

server = make_server("127.0.0.1", 0, app)
print(server.port, flush=True)
server.serve_forever()
"#;

struct Flask {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    ran: PathBuf,
    _dir: tempfile::TempDir,
}

impl Flask {
    fn start() -> Flask {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let (app, ran) = (dir.path().join("app.py"), dir.path().join("ran.txt"));
        std::fs::write(&app, FLASK_APP).unwrap();
        std::fs::write(&ran, "").unwrap();
        let py = test_python();
        let mut child = std::process::Command::new(&py)
            .arg(&app)
            .arg(&ran)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run .ci/test, or set MCPGATE_TEST_PYTHON)",
                    py.display()
                )
            });
        // The first line is the port (bounded: the child is killed if it never comes).
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} could not start the Flask app (is Flask installed? run .ci/test, or set MCPGATE_TEST_PYTHON)",
                py.display()
            );
        };
        Flask {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            ran,
            _dir: dir,
        }
    }

    /// The tools the app ran, in order.
    fn ran(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ran)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Flask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The [`FLASK`] fixture in front of `flask`.
async fn flask_env(flask: &Flask) -> crate::harness::Env {
    crate::harness::Env::builder(FLASK)
        .var("UP", format!("http://{}", flask.addr))
        .start()
        .await
}

// ---------------------------------------------------------------------------------------------
// Item 3: sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item3_sessions_are_bound_to_the_upstream_and_the_identity() {
    let env = Env::start().await;
    let alice = env.tok(Some("alice"), "mcp:tools");
    let bob = env.tok(Some("bob"), "mcp:tools");
    let init = message(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    for wire in WIRES {
        let sid = format!("sess-{}", random_hex(8));
        let (a, _) = env
            .forwarded(
                wire,
                "POST",
                "/mcp",
                Some(&alice),
                &[JSON, ("x-test-session", sid.as_bytes())],
                Some(&init),
            )
            .await;
        assert_eq!(
            a.headers.get("mcp-session-id").map(|v| v.as_bytes()),
            Some(sid.as_bytes())
        );
        let s: (&str, &[u8]) = ("mcp-session-id", sid.as_bytes());
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.as_slice();
        // Bob, on the route it was opened on and on another route to the same upstream.
        for path in ["/mcp", "/other"] {
            env.refused(
                wire,
                "POST",
                path,
                Some(&bob),
                &[JSON, s],
                Some(list),
                404,
                Body::OAuth("not_found"),
            )
            .await;
            env.refused(
                wire,
                "GET",
                path,
                Some(&bob),
                &[s],
                None,
                404,
                Body::OAuth("not_found"),
            )
            .await;
        }
        // An API-key client whose key names the same subject, and an anonymous client.
        env.refused(
            wire,
            "POST",
            "/keys",
            None,
            &[JSON, s, ("x-api-key", API_KEY.as_bytes())],
            Some(list),
            404,
            Body::OAuth("not_found"),
        )
        .await;
        env.refused(
            wire,
            "POST",
            "/open",
            None,
            &[JSON, s],
            Some(list),
            404,
            Body::OAuth("not_found"),
        )
        .await;
        env.refused(
            wire,
            "DELETE",
            "/open",
            None,
            &[s],
            None,
            404,
            Body::OAuth("not_found"),
        )
        .await;
        // Alice, on any route to that upstream.
        for path in ["/mcp", "/other"] {
            let (_, got) = env
                .forwarded(wire, "POST", path, Some(&alice), &[JSON, s], Some(list))
                .await;
            assert_eq!(got.header("mcp-session-id"), Some(sid.as_str()));
        }
        // A session opened anonymously is not alice's either.
        let anon = format!("anon-{}", random_hex(8));
        env.forwarded(
            wire,
            "POST",
            "/open",
            None,
            &[JSON, ("x-test-session", anon.as_bytes())],
            Some(&init),
        )
        .await;
        env.refused(
            wire,
            "POST",
            "/other",
            Some(&alice),
            &[JSON, ("mcp-session-id", anon.as_bytes())],
            Some(list),
            404,
            Body::OAuth("not_found"),
        )
        .await;
        // Ambiguous headers: 400 on every route, before anything is forwarded.
        let dup: [(&str, &[u8]); 2] = [
            ("mcp-session-id", sid.as_bytes()),
            ("mcp-session-id", b"other"),
        ];
        let comma = format!("{sid},other");
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            dup.to_vec(),
            vec![("mcp-session-id", comma.as_bytes())],
            vec![("mcp-session-id", b"sess\xc3\xa9")],
            vec![("mcp-session-id", b"a b")],
            vec![("mcp_session_id", sid.as_bytes())],
            vec![("MCP_SESSION_ID", b"whatever")],
            vec![("Mcp-Session_Id", sid.as_bytes())],
        ];
        for c in &cases {
            for (path, tok) in [
                ("/mcp", Some(alice.as_str())),
                ("/other", Some(alice.as_str())),
                ("/open", None),
            ] {
                let mut h = c.clone();
                h.push(JSON);
                env.refused(
                    wire,
                    "POST",
                    path,
                    tok,
                    &h,
                    Some(list),
                    400,
                    Body::OAuth("invalid_request"),
                )
                .await;
            }
        }
    }
}

/// Red-team finding 6 (after issues 13 and 21): a resource URI gets the request-path rules:
/// characters that fold to ASCII under NFKC or case mapping (fullwidth and one/two-dot
/// leaders, raw or percent-encoded), escapes that are not UTF-8 (overlong `.`, `%FF`), and
/// `..` in the query or fragment are refused as unjudgeable (JSON-RPC -32602, nothing
/// forwarded), over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn finding6_resource_uris_follow_the_path_rules() {
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let read = |uri: &str| message("resources/read", json!({ "uri": uri }));
    for wire in WIRES {
        for bad in [
            "file:///public/\u{ff0e}\u{ff0e}/secret",
            "file:///public/\u{2025}/secret",
            "file:///public/\u{2024}\u{2024}/secret",
            "file:///public/%EF%BC%8E%EF%BC%8E/secret",
            "file:///public/%C0%AE%C0%AE/secret",
            "file:///public/%E0%80%AE%E0%80%AE/secret",
            "file:///public/%FF",
            "file:///public/x?/../../secret",
            "file:///public/x#/../../secret",
        ] {
            env.refused(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&read(bad)),
                400,
                Body::JsonRpc(-32602),
            )
            .await;
        }
        let ok = "file:///public/caf\u{e9}.txt?v=1";
        let (_, got) = env
            .forwarded(wire, "POST", "/mcp", Some(&t), &[JSON], Some(&read(ok)))
            .await;
        assert_eq!(got.body, read(ok));
    }
}

// ---------------------------------------------------------------------------------------------
// Item 4: resource URIs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item4_resource_uris_are_normalised_before_matching() {
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let read = |uri: &str| message("resources/read", json!({ "uri": uri }));
    for wire in WIRES {
        for ok in [
            "file:///public/a.txt",
            "file:///public/./a.txt",
            "file:///%70ublic/a.txt",
            "FILE://localhost/public/a.txt",
        ] {
            let (_, got) = env
                .forwarded(wire, "POST", "/mcp", Some(&t), &[JSON], Some(&read(ok)))
                .await;
            assert_eq!(got.body, read(ok), "forwarded byte for byte");
        }
        // What an upstream could resolve outside `file:///public/`: refused as unjudgeable.
        for bad in [
            "file:///public/../etc/passwd",
            "file:///public/%2e%2e/secret",
            "file:///public/.%2E/secret",
            "file:///public/..%2fsecret",
            "file:///public%2f..%2fsecret",
            "file:///public/..%5csecret",
            "file:///public/..\\secret",
            "file:///public/%252e%252e/secret",
            "file:///public/a%00.txt",
            "file:///public/a%zz",
            // Found by fuzz/ (mcp_request): encoded control characters, which an upstream
            // may strip or split on.
            "file:///public/%3e%1e/etc/passwd",
            "file:///public/a%0a",
            "file:///public/a%7F",
            // Found by fuzz/ (resource_uri): `..` as or in the authority.
            "file://../public/a.txt",
            "https://../public/a.txt",
            "/public/a.txt",
        ] {
            env.refused(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&read(bad)),
                400,
                Body::JsonRpc(-32602),
            )
            .await;
        }
        // Outside the allowed prefix after normalisation: denied by the policy.
        for denied in [
            "file:///etc/passwd",
            "file://localhost/etc/passwd",
            "file:///publicx/a",
        ] {
            env.refused(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&read(denied)),
                403,
                Body::OAuth("access_denied"),
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 5: method names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item5_method_names_are_compared_exactly_and_every_naming_method_is_judged() {
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let body = |method: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"delete_everything"}}}}"#)
            .into_bytes()
    };
    for wire in WIRES {
        // Not MCP methods: `default_tool_policy: deny` denies them.
        for m in [
            "tools/call ",
            " tools/call",
            "Tools/Call",
            "TOOLS/CALL",
            "tools/call\\u0000",
            "tools//call",
            "tools/call/",
            "tools\\tcall",
            "vendor/run",
        ] {
            env.refused(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&body(m)),
                403,
                Body::OAuth("access_denied"),
            )
            .await;
        }
        // Under `allow` an unknown method passes, unless what it names needs more.
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"vendor/ping"}"#;
        env.forwarded(wire, "POST", "/allow", Some(&t), &[JSON], Some(plain))
            .await;
        let a = env
            .refused(
                wire,
                "POST",
                "/allow",
                Some(&t),
                &[JSON],
                Some(&body("Tools/Call")),
                403,
                Body::OAuth("insufficient_scope"),
            )
            .await;
        assert!(
            a.headers
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap().contains("mcp:admin")),
            "{a}"
        );
        // Every method that names a resource or prompt is judged by the matching rules.
        for (m, params) in [
            ("resources/subscribe", json!({"uri": "file:///etc/passwd"})),
            (
                "resources/unsubscribe",
                json!({"uri": "file:///etc/passwd"}),
            ),
            ("prompts/get", json!({"name": "admin_prompt"})),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "admin_prompt"}, "argument": {"name": "a", "value": ""}}),
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "file:///etc/{x}"}, "argument": {"name": "x", "value": ""}}),
            ),
            (
                "subscriptions/listen",
                json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["file:///public/a", "file:///etc/passwd"]}}),
            ),
        ] {
            env.refused(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&message(m, params)),
                403,
                Body::OAuth("access_denied"),
            )
            .await;
        }
        // A completion reference the gateway cannot read is refused, not passed.
        env.refused(
            wire,
            "POST",
            "/mcp",
            Some(&t),
            &[JSON],
            Some(&message(
                "completion/complete",
                json!({"ref": {"type": "ref/tool", "name": "x"}}),
            )),
            400,
            Body::JsonRpc(-32602),
        )
        .await;
        // The same methods on allowed names pass; so do known methods that name nothing.
        for (m, params) in [
            ("resources/subscribe", json!({"uri": "file:///public/a"})),
            ("prompts/get", json!({"name": "safe_prompt"})),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "safe_prompt"}, "argument": {"name": "a", "value": ""}}),
            ),
            (
                "subscriptions/listen",
                json!({"notifications": {"resourceSubscriptions": ["file:///public/a"]}}),
            ),
            ("ping", json!({})),
            ("resources/templates/list", json!({})),
        ] {
            env.forwarded(
                wire,
                "POST",
                "/mcp",
                Some(&t),
                &[JSON],
                Some(&message(m, params)),
            )
            .await;
        }
        // A batch: one denied element refuses the whole.
        let batch = format!(
            "[{},{}]",
            String::from_utf8(message("ping", json!({}))).unwrap(),
            String::from_utf8(body("Tools/Call")).unwrap()
        );
        env.refused(
            wire,
            "POST",
            "/mcp",
            Some(&t),
            &[JSON],
            Some(batch.as_bytes()),
            403,
            Body::OAuth("access_denied"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Item 6: mirrored headers on `auth: none`
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item6_auth_none_routes_check_mirrored_headers() {
    let env = Env::start().await;
    let denied = call("delete_everything");
    for wire in WIRES {
        for m in ["POST", "PUT", "post"] {
            env.refused(
                wire,
                m,
                "/open",
                None,
                &[JSON, ("mcp-method", b"tools/list")],
                Some(&denied),
                400,
                Body::JsonRpc(-32020),
            )
            .await;
            env.refused(
                wire,
                m,
                "/open",
                None,
                &[
                    JSON,
                    ("mcp-method", b"tools/call"),
                    ("mcp-name", b"read_file"),
                ],
                Some(&denied),
                400,
                Body::JsonRpc(-32020),
            )
            .await;
        }
        // A 2026-07-28 request must carry them.
        env.refused(
            wire,
            "POST",
            "/open",
            None,
            &[JSON, ("mcp-protocol-version", b"2026-07-28")],
            Some(&denied),
            400,
            Body::JsonRpc(-32020),
        )
        .await;
        // Duplicated or underscore-spelled mirrored headers.
        for h in [
            vec![
                ("mcp-method", b"tools/call".as_slice()),
                ("mcp-method", b"tools/list".as_slice()),
            ],
            vec![("mcp_method", b"tools/list".as_slice())],
        ] {
            let mut h = h;
            h.push(JSON);
            env.refused(
                wire,
                "POST",
                "/open",
                None,
                &h,
                Some(&denied),
                400,
                Body::JsonRpc(-32020),
            )
            .await;
        }
        // Headers that match the body pass.
        env.forwarded(
            wire,
            "POST",
            "/open",
            None,
            &[
                JSON,
                ("mcp-method", b"tools/call"),
                ("mcp-name", b"delete_everything"),
            ],
            Some(&denied),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Item 10 (part): other proxies' identity headers, empty subjects
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn item10_identity_headers_of_other_proxies_are_stripped_and_an_empty_sub_is_refused() {
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let spoofed = [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Groups",
        "X-Forwarded-Access-Token",
        "X-Forwarded-Client-Cert",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Preferred-Username",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Access-Token",
        "X-Remote-User",
        "X-Remote-Group",
        "X-Remote-Extra-Scopes",
        "Remote-User",
        "Remote-Groups",
        "X-User",
        "X-Email",
        "X-Pomerium-Jwt-Assertion",
        "X-Pomerium-Claim-Email",
        "Cf-Access-Jwt-Assertion",
        "Cf-Access-Authenticated-User-Email",
        "X-Amzn-Oidc-Data",
        "X-Amzn-Oidc-Identity",
        "X-Amzn-Oidc-Accesstoken",
        "X-Ms-Client-Principal",
        "X-Ms-Client-Principal-Name",
        "X-Ms-Token-Aad-Access-Token",
        "X-Goog-Authenticated-User-Email",
        "X-Goog-Iap-Jwt-Assertion",
        "X-Authentik-Username",
        "X-Webauth-User",
        "X-Ssl-Client-Cert",
        "Gap-Auth",
    ];
    for wire in WIRES {
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for n in spoofed {
            headers.push((n.to_string(), b"admin".to_vec()));
            headers.push((n.replace('-', "_").to_ascii_uppercase(), b"admin".to_vec()));
        }
        let hs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        for (path, tok) in [("/other", Some(t.as_str())), ("/open", None)] {
            let (_, got) = env.forwarded(wire, "GET", path, tok, &hs, None).await;
            for n in spoofed {
                assert!(
                    got.header_all_loose(n).is_empty(),
                    "{wire:?} {path}: {n} reached the upstream: {got:?}"
                );
            }
            // The gateway's own forwarding headers are still set.
            assert_eq!(got.header("x-forwarded-proto"), Some("https"));
        }
        // An empty `sub` is refused; an absent one is not (client credentials).
        let empty = env.tok(Some(""), "mcp:tools");
        let a = env
            .refused(
                wire,
                "GET",
                "/other",
                Some(&empty),
                &[],
                None,
                401,
                Body::OAuth("invalid_token"),
            )
            .await;
        assert_eq!(a.json()["error_description"], "token has an empty sub");
        let none = env.tok(None, "mcp:tools");
        let (_, got) = env
            .forwarded(
                wire,
                "GET",
                "/other",
                Some(&none),
                &[("x-auth-subject", b"admin")],
                None,
            )
            .await;
        assert!(got.header_all_loose("x-auth-subject").is_empty(), "{got:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The property, black-box: sampled request shapes, none of which may reach the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sampled_request_shapes_never_forward_a_denied_operation() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let env = Env::start().await;
    let t = env.tok(Some("alice"), "mcp:tools");
    let method = prop_oneof![
        Just("POST"),
        Just("post"),
        Just("Post"),
        Just("PUT"),
        Just("PATCH"),
        Just("GET"),
        Just("DELETE"),
        Just("OPTIONS"),
        Just("PROPFIND"),
        Just("QUERY"),
    ];
    let op = prop_oneof![
        Just(r#""method":"tools/call","params":{"name":"delete_everything"}"#),
        Just(r#""method":"Tools/Call","params":{"name":"delete_everything"}"#),
        Just(r#""method":"tools/call ","params":{"name":"x"}"#),
        Just(r#""method":"resources/read","params":{"uri":"file:///public/%2e%2e/secret"}"#),
        Just(r#""method":"resources/subscribe","params":{"uri":"file:///etc/passwd"}"#),
        Just(
            r#""method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"admin"}}"#
        ),
    ];
    let shape = (
        method,
        op,
        any::<bool>(),
        prop_oneof![
            Just("application/json"),
            Just("text/plain"),
            Just("application/json; charset=utf-16")
        ],
        prop_oneof![Just(None), Just(Some("gzip")), Just(Some("identity"))],
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (conns, reqs) = (env.up.connections(), env.up.count());
    for i in 0..24 {
        let (m, op, batch, ct, ce) = shape.new_tree(&mut runner).unwrap().current();
        let one = format!(r#"{{"jsonrpc":"2.0","id":{i},{op}}}"#);
        let body = if batch {
            format!(r#"[{{"jsonrpc":"2.0","id":0,"method":"ping"}},{one}]"#)
        } else {
            one
        };
        let mut h: Vec<(&str, &[u8])> = vec![("content-type", ct.as_bytes())];
        if let Some(ce) = ce {
            h.push(("content-encoding", ce.as_bytes()));
        }
        let wire = WIRES[i % 2];
        let a = env
            .send(wire, m, "/mcp", Some(&t), &h, Some(body.as_bytes()))
            .await;
        // The README's answer for this shape: the method first, then a body where none may
        // be, then an encoding or charset the gateway cannot judge, then the operation.
        let (status, want) = if !["POST", "GET", "DELETE", "OPTIONS"].contains(&m) {
            (405, Body::OAuth("method_not_allowed"))
        } else if m != "POST" || ce.is_some() || ct.contains("utf-16") {
            (400, Body::OAuth("invalid_request"))
        } else if op.contains("%2e%2e") {
            (400, Body::JsonRpc(-32602))
        } else if op.contains(r#""tools/call","params":{"name":"delete_everything"}"#) {
            (403, Body::OAuth("insufficient_scope"))
        } else {
            (403, Body::OAuth("access_denied"))
        };
        let what = format!("{wire:?} {m} {h:?} {body}");
        assert_eq!(a.status, status, "{what}: {a}");
        match want {
            Body::OAuth(code) => assert_eq!(a.json()["error"], code, "{what}: {a}"),
            Body::JsonRpc(code) => assert_eq!(a.json()["error"]["code"], code, "{what}: {a}"),
            Body::Empty => unreachable!(),
        }
    }
    assert_eq!(
        (env.up.connections(), env.up.count()),
        (conns, reqs),
        "a sampled shape reached the upstream"
    );
}
