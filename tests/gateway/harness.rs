//! Shared helpers for the gateway integration tests.
//!
//! Everything here runs on loopback and is owned by one test:
//! - [`Gateway`]: the real `mcpgate` binary started with `run --config <tempfile>` on free ports,
//!   killed on drop; its stderr is captured to a file (see [`Gateway::logs`]).
//! - [`MockIdp`]: JWKS + RFC 8414 / OIDC metadata, per-path request counts, swappable key set and
//!   failure modes.
//! - [`Upstream`]: a recording echo server (method, target as received, headers, body); paths
//!   ending in `/sse` get a slow chunked event stream gated by the test.
//! - [`Tok`] / [`jws`]: hand-built JWS so tests can produce malformed and odd tokens.
//! - [`Req`] / [`send`]: a raw HTTP/1.1 client over `TcpStream` (no normalisation of the target,
//!   duplicate headers allowed) and [`Resp`] with RFC 6750 challenge parsing.
//!
//! Mock servers run on one background runtime shared by the whole test binary, so they keep
//! serving while a test blocks, and each is stopped when its handle is dropped.

#![allow(dead_code)] // helpers are shared by many test modules; not all use every one

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256,
};
use base64::engine::general_purpose::{STANDARD as B64_STD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// Upper bound for any single request/response exchange in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Canonical public base URL of the standard fixture (TLS terminated in front of the gateway).
pub const PUBLIC: &str = "https://mcp.example.com";
/// Resource identifier of the `/mcp` route in the standard fixture.
pub const R: &str = "https://mcp.example.com/mcp";
/// Its protected resource metadata URL.
pub const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
/// Resource identifier of the `/admin/mcp` route.
pub const R_ADMIN: &str = "https://mcp.example.com/admin/mcp";
/// Its protected resource metadata URL.
pub const PRM_ADMIN: &str =
    "https://mcp.example.com/.well-known/oauth-protected-resource/admin/mcp";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes `%XX` escapes once (invalid escapes are kept verbatim).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The runtime that hosts every mock server of this test binary.
pub fn bg() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-servers")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A loopback port nobody listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Tiny HTTP/1.1 server used by the mocks
// ---------------------------------------------------------------------------------------------

/// A request as received by a mock server.
#[derive(Clone)]
pub struct Request {
    pub method: String,
    /// Request target exactly as it appeared on the request line.
    pub target: String,
    /// Header fields in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.method, self.target)?;
        for (n, v) in &self.headers {
            writeln!(f, "  {n}: {v}")?;
        }
        write!(f, "  body: {:?}", String::from_utf8_lossy(&self.body))
    }
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Header names compared after lower-casing and mapping `_` to `-` (how many servers read them).
    pub fn header_all_loose(&self, name: &str) -> Vec<&str> {
        let want = name.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .filter(|(n, _)| n.trim().to_ascii_lowercase().replace('_', "-") == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a mock server answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked `text/event-stream`: `first` is sent at once, `rest` after `gate` is notified.
    Stream {
        first: Vec<u8>,
        gate: Arc<Notify>,
        rest: Vec<u8>,
    },
    /// Close the connection without answering.
    Hangup,
}

impl Reply {
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap(),
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running mock server; stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Serves `handler` on `listener` from the background runtime until dropped.
    pub fn start(listener: StdListener, handler: Handler) -> Server {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let task = bg().spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(stream, handler).await;
                });
            }
        });
        Server { addr, task }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, need: usize) -> std::io::Result<bool> {
    let mut tmp = [0u8; 16 * 1024];
    while buf.len() < need {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Ok(true)
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(p) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..p]).to_string();
            buf.drain(..p + 2);
            return Ok(Some(line));
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn parse_head(head: &[u8]) -> std::io::Result<(String, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().ok_or_else(|| bad("empty head"))?.to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (n, v) = line.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok((first, headers))
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or `Content-Length`.
/// `until_eof` reads to end of stream when neither is present.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
    until_eof: bool,
) -> std::io::Result<Vec<u8>> {
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        let mut body = Vec::new();
        loop {
            let line = read_line(stream, buf)
                .await?
                .ok_or_else(|| bad("eof in chunk size"))?;
            let size_txt = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_txt, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // trailers
                loop {
                    let l = read_line(stream, buf)
                        .await?
                        .ok_or_else(|| bad("eof in trailers"))?;
                    if l.is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            if !fill(stream, buf, size + 2).await? {
                return Err(bad("eof in chunk"));
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    let cl = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| bad("bad content-length"))?;
    match cl {
        Some(n) => {
            if !fill(stream, buf, n).await? {
                return Err(bad("eof in body"));
            }
            Ok(buf.drain(..n).collect())
        }
        None if until_eof => {
            let mut rest = std::mem::take(buf);
            stream.read_to_end(&mut rest).await?;
            Ok(rest)
        }
        None => Ok(Vec::new()),
    }
}

async fn serve_conn(mut stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut tmp = [0u8; 16 * 1024];
        let end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if buf.len() > 1 << 20 {
                return Err(bad("head too large"));
            }
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let (line, headers) = parse_head(&head[..end])?;
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let body = read_body(&mut stream, &mut buf, &headers, false).await?;
        let close = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let req = Request {
            method: method.clone(),
            target,
            headers,
            body,
        };
        match handler(&req) {
            Reply::Hangup => return Ok(()),
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                let body = if method == "HEAD" { Vec::new() } else { body };
                out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                stream.write_all(&bytes).await?;
            }
            Reply::Stream { first, gate, rest } => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
                stream.write_all(head.as_bytes()).await?;
                stream
                    .write_all(format!("{:x}\r\n", first.len()).as_bytes())
                    .await?;
                stream.write_all(&first).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
                let _ = tokio::time::timeout(Duration::from_secs(15), gate.notified()).await;
                stream
                    .write_all(format!("{:x}\r\n", rest.len()).as_bytes())
                    .await?;
                stream.write_all(&rest).await?;
                stream.write_all(b"\r\n0\r\n\r\n").await?;
                stream.flush().await?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------------
// Recording upstream
// ---------------------------------------------------------------------------------------------

/// A recording echo upstream. Answers 200 JSON
/// `{"ok":true,"method","target","sub"}` (sub = the `X-Auth-Subject` it received) with
/// `Cache-Control: public, max-age=600` (to catch a caching gateway). Paths ending in `/sse`
/// get a chunked event stream: `data: one` at once, `data: two` after [`Upstream::release`].
pub struct Upstream {
    server: Server,
    log: Arc<Mutex<Vec<Request>>>,
    gate: Arc<Notify>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let gate = Arc::new(Notify::new());
        let (log2, gate2) = (log.clone(), gate.clone());
        let handler: Handler = Arc::new(move |req: &Request| {
            log2.lock().unwrap().push(req.clone());
            if req.path().ends_with("/sse") {
                return Reply::Stream {
                    first: b"event: message\ndata: one\n\n".to_vec(),
                    gate: gate2.clone(),
                    rest: b"event: message\ndata: two\n\n".to_vec(),
                };
            }
            let body = json!({
                "ok": true,
                "method": req.method,
                "target": req.target,
                "sub": req.header("x-auth-subject"),
            });
            Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Cache-Control".into(), "public, max-age=600".into()),
                    ("X-Upstream".into(), "recorder".into()),
                ],
                body: serde_json::to_vec(&body).unwrap(),
            }
        });
        Upstream {
            server: Server::start(listener, handler),
            log,
            gate,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
    /// The only request received; panics unless exactly one arrived.
    pub fn only(&self) -> Request {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "upstream expected exactly one request, got {reqs:#?}"
        );
        reqs.into_iter().next().unwrap()
    }
    pub fn last(&self) -> Request {
        self.requests().pop().expect("upstream received no request")
    }
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
    /// Lets a pending `/sse` stream send its second event and finish.
    pub fn release(&self) {
        self.gate.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// Mock identity provider
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdpMode {
    Ok,
    /// Every request gets a 500.
    Fail500,
    /// Every connection is closed without an answer.
    Hangup,
    /// Every request gets a 302 to this URL.
    Redirect(String),
}

struct IdpState {
    issuer: String,
    jwks: Mutex<Value>,
    mode: Mutex<IdpMode>,
    counts: Mutex<HashMap<String, usize>>,
    rfc8414: Mutex<bool>,
    oidc: Mutex<bool>,
    cache_control: Mutex<Option<String>>,
}

/// Mock authorization server: `<issuer path>/jwks`, RFC 8414 metadata at
/// `/.well-known/oauth-authorization-server<issuer path>` and OIDC discovery at
/// `<issuer>/.well-known/openid-configuration`.
pub struct MockIdp {
    server: Server,
    state: Arc<IdpState>,
}

impl MockIdp {
    /// An IdP whose issuer is `http://127.0.0.1:<port>` serving [`default_jwks`].
    pub fn start() -> MockIdp {
        MockIdp::start_at("")
    }

    /// Same with an issuer path (e.g. `/tenant`).
    pub fn start_at(issuer_path: &str) -> MockIdp {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}{issuer_path}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            jwks: Mutex::new(default_jwks()),
            mode: Mutex::new(IdpMode::Ok),
            counts: Mutex::default(),
            rfc8414: Mutex::new(true),
            oidc: Mutex::new(true),
            cache_control: Mutex::new(None),
        });
        let st = state.clone();
        let ipath = issuer_path.to_string();
        let handler: Handler = Arc::new(move |req: &Request| {
            *st.counts
                .lock()
                .unwrap()
                .entry(req.path().to_string())
                .or_default() += 1;
            let mode = st.mode.lock().unwrap().clone();
            match mode {
                IdpMode::Ok => {}
                IdpMode::Fail500 => {
                    return Reply::json(500, &json!({"error": "server_error"}));
                }
                IdpMode::Hangup => return Reply::Hangup,
                IdpMode::Redirect(to) => {
                    return Reply::Full {
                        status: 302,
                        headers: vec![("Location".into(), to)],
                        body: Vec::new(),
                    };
                }
            }
            let path = req.path();
            let metadata = || {
                json!({
                    "issuer": st.issuer,
                    "jwks_uri": format!("{}/jwks", st.issuer),
                    "authorization_endpoint": format!("{}/authorize", st.issuer),
                    "token_endpoint": format!("{}/token", st.issuer),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256", "RS256"],
                })
            };
            if path == format!("{ipath}/jwks") {
                let mut headers =
                    vec![("Content-Type".to_string(), "application/json".to_string())];
                if let Some(cc) = st.cache_control.lock().unwrap().clone() {
                    headers.push(("Cache-Control".into(), cc));
                }
                return Reply::Full {
                    status: 200,
                    headers,
                    body: serde_json::to_vec(&*st.jwks.lock().unwrap()).unwrap(),
                };
            }
            if path == format!("/.well-known/oauth-authorization-server{ipath}")
                && *st.rfc8414.lock().unwrap()
            {
                return Reply::json(200, &metadata());
            }
            if path == format!("{ipath}/.well-known/openid-configuration")
                && *st.oidc.lock().unwrap()
            {
                return Reply::json(200, &metadata());
            }
            Reply::json(404, &json!({"error": "not_found"}))
        });
        MockIdp {
            server: Server::start(listener, handler),
            state,
        }
    }

    /// The issuer identifier (`iss`).
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }
    pub fn set_mode(&self, mode: IdpMode) {
        *self.state.mode.lock().unwrap() = mode;
    }
    pub fn set_discovery(&self, rfc8414: bool, oidc: bool) {
        *self.state.rfc8414.lock().unwrap() = rfc8414;
        *self.state.oidc.lock().unwrap() = oidc;
    }
    pub fn set_cache_control(&self, v: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = v.map(str::to_string);
    }
    /// Requests received on a path (exact, without query).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
    /// Requests received on `<issuer path>/jwks`.
    pub fn jwks_fetches(&self) -> usize {
        let p = url::Url::parse(&self.jwks_uri())
            .unwrap()
            .path()
            .to_string();
        self.count(&p)
    }
    pub fn total_requests(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }
}

/// A host that must never be contacted (for `jku`/`x5u` tests); counts every request.
pub struct Canary {
    server: Server,
    hits: Arc<Mutex<usize>>,
}

impl Canary {
    pub fn start() -> Canary {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let hits: Arc<Mutex<usize>> = Arc::default();
        let h2 = hits.clone();
        let jwks = attacker_jwks();
        let handler: Handler = Arc::new(move |_req: &Request| {
            *h2.lock().unwrap() += 1;
            Reply::json(200, &jwks)
        });
        Canary {
            server: Server::start(listener, handler),
            hits,
        }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
    pub fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and JWS minting
// ---------------------------------------------------------------------------------------------

/// Every key the tests sign with, generated once per test binary.
pub struct Keys {
    /// ES256 / P-256, kid `k1`.
    pub k1: EcdsaKeyPair,
    /// Same private key as `k1`, producing DER (ASN.1) signatures.
    pub k1_der: EcdsaKeyPair,
    /// RS256 / RSA-2048, kid `k2`.
    pub k2: RsaKeyPair,
    /// EdDSA / Ed25519, kid `ed1`.
    pub ed: Ed25519KeyPair,
    /// ES384 / P-384, kid `p384`.
    pub p384: EcdsaKeyPair,
    /// ES256 key used for rotation (kid `k3`), not in the default JWKS.
    pub k3: EcdsaKeyPair,
    /// An attacker's ES256 key, never in a trusted JWKS.
    pub evil: EcdsaKeyPair,
    /// A second issuer's ES256 key (kid `o1`).
    pub other: EcdsaKeyPair,
}

pub fn keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> = LazyLock::new(|| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Keys {
            k1: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, p256.as_ref()).unwrap(),
            k1_der: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, p256.as_ref())
                .unwrap(),
            k2: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
            p384: EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
            k3: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            evil: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            other: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    });
    &KEYS
}

/// A 1024-bit RSA key (too weak; must be refused). Test fixture generated with
/// `openssl genrsa 1024`; signing is done with plain modular exponentiation.
pub mod weak_rsa {
    pub const N: &str = "b5a6022c2087e9d6e0cb7b20f1135a033dce6659c795941507310fecccc60ad221337243a948c0aa0243724d82a574d7abd875299c5de48768b0d860a6ee215a0f41f76bf3e366ca5c19e4d80b9f48d850d7f1097364d22693cf1790d9968144675ffae3ba4e884331e8bce5efe215ab4088d4e305d4b07375e99fc651cccbd9";
    pub const D: &str = "5f1a3338f72f317696eaf1e425538464fe0ef9f7374f50e0518b9652dc433397205ad71025a93975c90996e68de8226c684443d32d52db3b29ccacfcad692f7c1d131d22bc71d2408537f7928eb61ffd4271d41b7642e43b86bfc5ae13b4d5fa8761dc9566613158a47b74ba989532b124afb108b01b08a996ba3a3685446da1";

    pub fn n_bytes() -> Vec<u8> {
        num_bigint::BigUint::parse_bytes(N.as_bytes(), 16)
            .unwrap()
            .to_bytes_be()
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub fn sign_rs256(msg: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        let n = num_bigint::BigUint::parse_bytes(N.as_bytes(), 16).unwrap();
        let d = num_bigint::BigUint::parse_bytes(D.as_bytes(), 16).unwrap();
        let k = 128usize;
        let digest_info_prefix: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let hash = sha2::Sha256::digest(msg);
        let t_len = digest_info_prefix.len() + hash.len();
        let mut em = vec![0x00u8, 0x01];
        em.extend(std::iter::repeat_n(0xffu8, k - t_len - 3));
        em.push(0x00);
        em.extend_from_slice(&digest_info_prefix);
        em.extend_from_slice(&hash);
        let s = num_bigint::BigUint::from_bytes_be(&em).modpow(&d, &n);
        let mut out = s.to_bytes_be();
        while out.len() < k {
            out.insert(0, 0);
        }
        out
    }
}

fn ec_xy(kp: &EcdsaKeyPair) -> (String, String) {
    let pt = kp.public_key().as_ref();
    assert_eq!(pt[0], 4, "uncompressed point");
    let half = (pt.len() - 1) / 2;
    (b64u(&pt[1..1 + half]), b64u(&pt[1 + half..]))
}

pub fn ec_jwk(kp: &EcdsaKeyPair, kid: &str, crv: &str, alg: &str) -> Value {
    let (x, y) = ec_xy(kp);
    json!({"kty": "EC", "crv": crv, "x": x, "y": y, "kid": kid, "alg": alg, "use": "sig"})
}

pub fn rsa_n_e(kp: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    let pk = kp.public_key();
    (
        pk.modulus().big_endian_without_leading_zero().to_vec(),
        pk.exponent().big_endian_without_leading_zero().to_vec(),
    )
}

pub fn rsa_jwk(kp: &RsaKeyPair, kid: &str, alg: &str) -> Value {
    let (n, e) = rsa_n_e(kp);
    json!({"kty": "RSA", "n": b64u(&n), "e": b64u(&e), "kid": kid, "alg": alg, "use": "sig"})
}

pub fn ed_jwk(kp: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(kp.public_key().as_ref()), "kid": kid, "alg": "EdDSA", "use": "sig"})
}

pub fn weak_rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "n": b64u(&weak_rsa::n_bytes()), "e": "AQAB", "kid": kid, "alg": "RS256", "use": "sig"})
}

/// SubjectPublicKeyInfo DER of `k2`.
pub fn k2_spki_der() -> Vec<u8> {
    let der = keys().k2.public_key().as_der().unwrap();
    der.as_ref().to_vec()
}

/// PEM text of `k2`'s public key.
pub fn k2_pem() -> String {
    let b64 = B64_STD.encode(k2_spki_der());
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The default trusted key set: `k1` (ES256), `k2` (RS256), `ed1` (EdDSA), `p384` (ES384).
pub fn default_jwks() -> Value {
    let k = keys();
    json!({"keys": [
        ec_jwk(&k.k1, "k1", "P-256", "ES256"),
        rsa_jwk(&k.k2, "k2", "RS256"),
        ed_jwk(&k.ed, "ed1"),
        ec_jwk(&k.p384, "p384", "P-384", "ES384"),
    ]})
}

/// The attacker's key set (served by [`Canary`]).
pub fn attacker_jwks() -> Value {
    json!({"keys": [ec_jwk(&keys().evil, "k1", "P-256", "ES256")]})
}

/// How a JWS signature is produced.
#[derive(Clone, Debug)]
pub enum Signer {
    /// ES256 with `k1` (raw r||s).
    K1,
    /// ES256 with `k1`, DER-encoded signature.
    K1Der,
    /// RS256 with `k2`.
    K2,
    /// PS256 with `k2`.
    K2Pss,
    /// EdDSA with the Ed25519 key.
    Ed,
    /// ES384 with the P-384 key.
    P384,
    /// ES256 with the rotation key `k3`.
    K3,
    /// ES256 with the attacker key.
    Evil,
    /// ES256 with the second issuer's key.
    Other,
    /// RS256 with the 1024-bit key.
    Weak,
    /// HMAC-SHA256 with the given secret.
    Hmac(Vec<u8>),
    /// A fixed signature (e.g. empty, zeros).
    Fixed(Vec<u8>),
}

impl Signer {
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let k = keys();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::K1 => k.k1.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::K1Der => k.k1_der.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::K3 => k.k3.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Evil => k.evil.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Other => k.other.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::P384 => k.p384.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ed => k.ed.sign(input).as_ref().to_vec(),
            Signer::K2 | Signer::K2Pss => {
                let mut sig = vec![0u8; k.k2.public_modulus_len()];
                let enc = if matches!(self, Signer::K2) {
                    &RSA_PKCS1_SHA256
                } else {
                    &RSA_PSS_SHA256
                };
                k.k2.sign(enc, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::Weak => weak_rsa::sign_rs256(input),
            Signer::Hmac(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
            }
            Signer::Fixed(sig) => sig.clone(),
        }
    }
}

/// `b64u(header).b64u(payload).b64u(sig)` over raw header/payload bytes.
pub fn jws_bytes(header: &[u8], payload: &[u8], signer: &Signer) -> String {
    let input = format!("{}.{}", b64u(header), b64u(payload));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64u(&sig))
}

/// Compact JWS from raw JSON text (so tests can write duplicate members etc.).
pub fn jws(header: &str, payload: &str, signer: &Signer) -> String {
    jws_bytes(header.as_bytes(), payload.as_bytes(), signer)
}

/// A token under construction: header and claims as JSON objects plus a signer.
#[derive(Clone, Debug)]
pub struct Tok {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signer: Signer,
}

impl Tok {
    /// A good RFC 9068 access token: ES256/k1, `typ=at+jwt`, sub alice, scope `mcp:read`.
    pub fn new(iss: &str, aud: &str) -> Tok {
        let t = now();
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
        let claims = json!({
            "iss": iss,
            "aud": aud,
            "sub": "alice",
            "client_id": "client-1",
            "jti": random_hex(8),
            "iat": t,
            "exp": t + 300,
            "scope": "mcp:read",
        });
        Tok {
            header: header.as_object().unwrap().clone(),
            claims: claims.as_object().unwrap().clone(),
            signer: Signer::K1,
        }
    }
    pub fn h(mut self, k: &str, v: Value) -> Tok {
        self.header.insert(k.into(), v);
        self
    }
    pub fn no_h(mut self, k: &str) -> Tok {
        self.header.remove(k);
        self
    }
    pub fn c(mut self, k: &str, v: Value) -> Tok {
        self.claims.insert(k.into(), v);
        self
    }
    pub fn no_c(mut self, k: &str) -> Tok {
        self.claims.remove(k);
        self
    }
    pub fn scope(self, s: &str) -> Tok {
        self.c("scope", json!(s))
    }
    pub fn signer(mut self, s: Signer) -> Tok {
        self.signer = s;
        self
    }
    /// Sets `alg`, `kid` and the signer together.
    pub fn key(self, alg: &str, kid: &str, s: Signer) -> Tok {
        self.h("alg", json!(alg)).h("kid", json!(kid)).signer(s)
    }
    pub fn header_text(&self) -> String {
        serde_json::to_string(&self.header).unwrap()
    }
    pub fn claims_text(&self) -> String {
        serde_json::to_string(&self.claims).unwrap()
    }
    pub fn build(&self) -> String {
        jws(&self.header_text(), &self.claims_text(), &self.signer)
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------------

pub fn gateway_bin() -> PathBuf {
    std::env::var_os("MCPGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mcpgate")))
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `mcpgate run`; killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- mcpgate stderr ({}) ----\n{}",
                self.log_path.display(),
                tail(&self.logs(), 8000)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl Gateway {
    /// Starts the gateway with the config produced by `config(port, admin_port)` and waits until
    /// the public port accepts TCP and `/healthz` answers 200. Retries with fresh ports when the
    /// chosen ones were taken in the meantime.
    pub async fn start(config: impl Fn(u16, u16) -> String) -> Gateway {
        Gateway::start_with_env(config, &[]).await
    }

    /// Same as [`Gateway::start`] with extra environment variables for the process.
    pub async fn start_with_env(
        config: impl Fn(u16, u16) -> String,
        envs: &[(&str, &str)],
    ) -> Gateway {
        let mut last_err = String::new();
        for _attempt in 0..4 {
            let (port, admin_port) = (free_port(), free_port());
            if port == admin_port {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let config_path = dir.path().join("mcpgate.yaml");
            std::fs::write(&config_path, config(port, admin_port)).unwrap();
            let log_path = dir.path().join("stderr.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let log2 = log.try_clone().unwrap();
            let child = Command::new(gateway_bin())
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .env(
                    "RUST_LOG",
                    std::env::var("MCPGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY")
                .env_remove("ALL_PROXY")
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .env_remove("all_proxy")
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log2))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", gateway_bin().display()));
            let mut gw = Gateway {
                child,
                port,
                admin_port,
                config_path,
                log_path,
                _dir: dir,
            };
            match gw.wait_healthy(Duration::from_secs(20)).await {
                Ok(()) => return gw,
                Err(e) => {
                    let logs = gw.logs();
                    last_err = format!("{e}\n---- stderr ----\n{}", tail(&logs, 8000));
                    let lower = logs.to_ascii_lowercase();
                    if !(lower.contains("in use") || lower.contains("addrinuse")) {
                        break;
                    }
                }
            }
        }
        panic!("mcpgate did not become healthy: {last_err}");
    }

    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("mcpgate exited early with {status}"));
            }
            let public_ok = TcpStream::connect(self.addr()).await.is_ok();
            if public_ok {
                if let Ok(r) =
                    send_to(self.admin_addr(), &Req::get("/healthz").host("localhost")).await
                {
                    if r.status == 200 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not healthy within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `/readyz` answers 200 (keys loaded), bounded.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = send_to(self.admin_addr(), &Req::get("/readyz").host("localhost")).await
            {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("/readyz not 200 within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }
    /// The gateway's log so far, once settled (see [`settled_log`]).
    pub fn logs(&self) -> String {
        settled_log(&self.log_path)
    }
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A request written byte-for-byte as specified (the target is never normalised).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.into(),
            target: target.into(),
            host: Some("mcp.example.com".into()),
            headers: Vec::new(),
            body: None,
        }
    }
    pub fn get(target: &str) -> Req {
        Req::new("GET", target)
    }
    /// A POST with a small MCP JSON-RPC body.
    pub fn post(target: &str) -> Req {
        Req::new("POST", target)
            .h("Content-Type", "application/json")
            .body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec())
    }
    pub fn host(mut self, h: &str) -> Req {
        self.host = Some(h.into());
        self
    }
    pub fn no_host(mut self) -> Req {
        self.host = None;
        self
    }
    /// Appends a header (duplicates allowed, written verbatim).
    pub fn h(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn bearer(self, token: &str) -> Req {
        self.h("Authorization", &format!("Bearer {token}"))
    }
    pub fn body(mut self, body: Vec<u8>) -> Req {
        self.body = Some(body);
        self
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if let Some(h) = &self.host {
            s.push_str(&format!("Host: {h}\r\n"));
        }
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        let has_cl = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if let Some(b) = &self.body {
            if !has_cl {
                s.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        }
        s.push_str("\r\n");
        let mut bytes = s.into_bytes();
        if let Some(b) = &self.body {
            bytes.extend_from_slice(b);
        }
        bytes
    }
}

/// A response read off the wire.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
    /// The single `WWW-Authenticate` challenge, strictly parsed.
    /// The Bearer challenge: exactly one is expected. Routes that also accept DPoP
    /// (RFC 9449 §7.1) send a second, `DPoP` challenge in its own header.
    pub fn challenge(&self) -> Challenge {
        let all = self.header_all("www-authenticate");
        let bearer: Vec<&str> = all
            .iter()
            .copied()
            .filter(|v| {
                v.get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
            })
            .collect();
        assert_eq!(
            bearer.len(),
            1,
            "expected exactly one Bearer challenge, got {all:?} (status {})",
            self.status
        );
        assert!(
            all.iter().all(|v| v
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
                || v.starts_with("DPoP ")),
            "unexpected challenge in {all:?}"
        );
        parse_challenge(bearer[0]).unwrap_or_else(|e| panic!("bad challenge {:?}: {e}", bearer[0]))
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}

/// Sends one request on a fresh connection and reads one response (bounded by [`IO_TIMEOUT`]).
pub async fn send_to(addr: SocketAddr, req: &Req) -> Result<Resp, String> {
    send_raw(addr, &req.to_bytes(), req.method == "HEAD").await
}

/// Writes `bytes` verbatim and reads one response.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8], head: bool) -> Result<Resp, String> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(bytes).await.map_err(|e| e.to_string())?;
        read_response(&mut stream, &mut Vec::new(), head).await
    })
    .await
    .map_err(|_| "timeout waiting for response".to_string())?
}

/// Reads one response (skipping 1xx) from `stream`.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Result<Resp, String> {
    loop {
        let mut tmp = [0u8; 16 * 1024];
        let end = loop {
            if let Some(p) = find(buf, b"\r\n\r\n") {
                break p;
            }
            let n = stream.read(&mut tmp).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "connection closed before a response (got {:?})",
                    String::from_utf8_lossy(buf)
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let (line, headers) = parse_head(&head[..end]).map_err(|e| e.to_string())?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if head_only || status == 204 || status == 304 {
            Vec::new()
        } else {
            read_body(stream, buf, &headers, true)
                .await
                .map_err(|e| e.to_string())?
        };
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6750 challenge parsing
// ---------------------------------------------------------------------------------------------

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Strict parser: `scheme 1*SP name="value" *( OWS "," OWS name="value" )`; quoted values may only
/// contain `%x20-21 / %x23-5B / %x5D-7E` (RFC 6750 §3), so no escapes; duplicate names rejected.
pub fn parse_challenge(v: &str) -> Result<Challenge, String> {
    if !v.chars().all(|c| (' '..='~').contains(&c)) {
        return Err("non visible-ASCII character".into());
    }
    let (scheme, rest) = match v.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (v, ""),
    };
    if scheme.is_empty() || !scheme.chars().all(is_tchar) {
        return Err(format!("bad scheme {scheme:?}"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i] == ' ' {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    while i < chars.len() {
        let start = i;
        while i < chars.len() && is_tchar(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if name.is_empty() {
            return Err(format!("expected a parameter name at {i}"));
        }
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(format!("expected '=' after {name}"));
        }
        i += 1;
        skip_ws(&mut i);
        let value: String = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let vs = i;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    return Err(format!("backslash in value of {name}"));
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(format!("unterminated value of {name}"));
            }
            let val = chars[vs..i].iter().collect();
            i += 1;
            val
        } else {
            let vs = i;
            while i < chars.len() && is_tchar(chars[i]) {
                i += 1;
            }
            chars[vs..i].iter().collect()
        };
        if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(format!("duplicate parameter {name}"));
        }
        params.push((name, value));
        skip_ws(&mut i);
        if i < chars.len() {
            if chars[i] != ',' {
                return Err(format!("expected ',' at {i}"));
            }
            i += 1;
            skip_ws(&mut i);
        }
    }
    Ok(Challenge {
        scheme: scheme.to_string(),
        params,
    })
}

// ---------------------------------------------------------------------------------------------
// Assertions on refusals
// ---------------------------------------------------------------------------------------------

/// JSON body `{"error": code, "error_description": "..."}` with `application/json`.
pub fn assert_json_error(r: &Resp, code: Option<&str>) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "refusal content-type should be application/json: {r}"
    );
    let v = r.json();
    let err = v.get("error").and_then(Value::as_str);
    assert!(err.is_some(), "refusal body lacks string `error`: {r}");
    if let Some(code) = code {
        assert_eq!(err, Some(code), "error code: {r}");
    }
    assert!(
        v.get("error_description").is_some_and(Value::is_string),
        "refusal body lacks string `error_description`: {r}"
    );
}

/// 401 with a Bearer challenge carrying `resource_metadata` and no `error`.
pub fn assert_401_no_error(r: &Resp, prm: &str, scope: Option<&str>) {
    assert_eq!(r.status, 401, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert_eq!(c.param("scope"), scope, "{r}");
    assert_eq!(c.param("error"), None, "no error= expected: {r}");
    assert_json_error(r, None);
}

/// 401 `error="invalid_token"` with `resource_metadata`.
pub fn assert_invalid_token(r: &Resp, prm: &str) {
    assert_eq!(r.status, 401, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("invalid_token"), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert!(
        c.param("error_description").is_some_and(|d| !d.is_empty()),
        "error_description expected: {r}"
    );
    assert_json_error(r, Some("invalid_token"));
}

/// 400 `error="invalid_request"` Bearer challenge.
pub fn assert_invalid_request(r: &Resp) {
    assert_eq!(r.status, 400, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("invalid_request"), "{r}");
    assert_json_error(r, Some("invalid_request"));
}

/// 403 `error="insufficient_scope"` naming `scope`.
pub fn assert_insufficient_scope(r: &Resp, scope: &str, prm: &str) {
    assert_eq!(r.status, 403, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("insufficient_scope"), "{r}");
    assert_eq!(c.param("scope"), Some(scope), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert_json_error(r, Some("insufficient_scope"));
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The standard fixture (SPEC-CHECKLIST): `/mcp` needs `mcp:read`, `/admin/mcp` needs `admin`,
/// `/open` has `auth: none`; public URL `https://mcp.example.com` (TLS terminated in front).
/// Placeholders: `{PORT}`, `{ADMIN}`, `{IDP}` (issuer), `{JWKS}`, `{UP}` (upstream base URL).
pub const STANDARD: &str = r#"
listen:
  address: 127.0.0.1:{PORT}
  public_url: https://mcp.example.com
  threads: 1
admin:
  address: 127.0.0.1:{ADMIN}
issuers:
  - name: as
    issuer: {IDP}
    jwks_uri: {JWKS}
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {UP}
    scopes: [mcp:read]
  - name: admin
    path_prefix: /admin/mcp
    upstream: {UP}
    scopes: [admin]
  - name: open
    path_prefix: /open
    upstream: {UP}
    auth: none
"#;

/// One test's world: IdP, upstream and gateway.
pub struct Env {
    pub gw: Gateway,
    pub idp: MockIdp,
    pub up: Upstream,
}

impl Env {
    pub async fn standard() -> Env {
        Env::start(STANDARD).await
    }

    /// Starts with a config template and a fresh default IdP; waits for `/readyz`.
    pub async fn start(template: &str) -> Env {
        Env::start_with(template, MockIdp::start(), true).await
    }

    /// Starts with a given IdP; `ready` waits for `/readyz` 200 (keys loaded) as well.
    pub async fn start_with(template: &str, idp: MockIdp, ready: bool) -> Env {
        let up = Upstream::start();
        let (issuer, jwks, upurl) = (idp.issuer(), idp.jwks_uri(), up.url());
        let template = template.to_string();
        let gw = Gateway::start(move |port, admin| {
            template
                .replace("{PORT}", &port.to_string())
                .replace("{ADMIN}", &admin.to_string())
                .replace("{IDP}", &issuer)
                .replace("{JWKS}", &jwks)
                .replace("{UP}", &upurl)
        })
        .await;
        if ready {
            if let Err(e) = gw.wait_ready(Duration::from_secs(10)).await {
                panic!("{e}\n---- stderr ----\n{}", tail(&gw.logs(), 8000));
            }
        }
        Env { gw, idp, up }
    }

    /// A good token for `/mcp` (scope `mcp:read`).
    pub fn tok(&self) -> Tok {
        Tok::new(&self.idp.issuer(), R)
    }

    pub async fn send(&self, req: Req) -> Resp {
        send_to(self.gw.addr(), &req)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.target))
    }

    /// Sends and returns an error instead of panicking when no response arrives.
    pub async fn try_send(&self, req: Req) -> Result<Resp, String> {
        send_to(self.gw.addr(), &req).await
    }

    pub async fn admin(&self, path: &str) -> Resp {
        send_to(self.gw.admin_addr(), &Req::get(path).host("localhost"))
            .await
            .unwrap()
    }

    /// POST /mcp with the token; returns the response.
    pub async fn post_mcp(&self, token: &str) -> Resp {
        self.send(Req::post("/mcp").bearer(token)).await
    }

    /// Asserts the upstream saw nothing (used after every refusal).
    pub fn assert_nothing_forwarded(&self) {
        let reqs = self.up.requests();
        assert!(
            reqs.is_empty(),
            "upstream must not receive anything, got {reqs:#?}"
        );
    }

    /// Asserts `token` is refused on POST /mcp with `invalid_token` and nothing is forwarded.
    pub async fn assert_rejected(&self, token: &str, what: &str) {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        assert_eq!(r.status, 401, "{what}: expected 401, got {r}");
        assert_invalid_token(&r, PRM);
        assert_eq!(
            self.up.count(),
            before,
            "{what}: refused request reached the upstream"
        );
    }

    /// Like [`Env::assert_rejected`] but returns the failure instead of panicking, so a test can
    /// report every failing case at once.
    pub async fn check_rejected(&self, token: &str, what: &str) -> Option<String> {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        let err = r
            .header("www-authenticate")
            .and_then(|v| parse_challenge(v).ok())
            .and_then(|c| c.param("error").map(str::to_string));
        if r.status != 401 || err.as_deref() != Some("invalid_token") || self.up.count() != before {
            return Some(format!(
                "{what}: want 401 invalid_token, nothing forwarded; got {} {} (forwarded: {})",
                r.status,
                r.text(),
                self.up.count() - before
            ));
        }
        None
    }

    /// Asserts `token` is accepted on POST /mcp and reaches the upstream.
    pub async fn assert_accepted(&self, token: &str, what: &str) {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        assert_eq!(r.status, 200, "{what}: expected 200, got {r}");
        assert_eq!(self.up.count(), before + 1, "{what}: upstream count");
    }
}

/// A gateway's log file once it has stopped growing: lines are written by a background
/// thread every 50 ms, so this waits (at most 1.5 s) until the file has been still for 120 ms.
pub fn settled_log(path: &std::path::Path) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let mut last = read();
    let mut still = 0;
    for _ in 0..38 {
        std::thread::sleep(Duration::from_millis(40));
        let now = read();
        if now.len() == last.len() {
            still += 1;
            if still == 3 {
                return now;
            }
        } else {
            still = 0;
        }
        last = now;
    }
    last
}
