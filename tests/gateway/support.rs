//! Helpers for the MCP-aware authorization tests (`mcp.rs`, issue 6) and the operations tests
//! (`ops.rs`, issue 5), on top of [`crate::harness`]:
//!
//! - [`Up`]: a programmable recording upstream. It counts TCP connections (so a refusal can be
//!   shown to open none), records every request with its body as received, and answers with a
//!   handler chosen by the test: a full response or a chunked `text/event-stream` whose events
//!   are written one per chunk, `interval` apart, with their send times recorded.
//! - [`Proc`]: the `mcpgate` binary under the test's full control: config layout on disk (plain
//!   file, Kubernetes ConfigMap `..data` symlinks, or a symlink into an unwatched directory),
//!   the ways an operator rewrites it, signals, exit status and captured stderr.
//! - [`Exposition`]: a strict parser of the Prometheus text exposition format (0.0.4).
//! - [`Stream`]: reads a response body incrementally (chunked decoding), with arrival times.
//! - [`mint`] / [`assert_no_tokens`]: every token a test builds is remembered, and a log can be
//!   checked for any of them.

#![allow(dead_code)] // shared by two modules; not every helper is used by both

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{bg, gateway_bin, send_to, settled_log, Req, Request, Resp, Tok, IO_TIMEOUT};

// ---------------------------------------------------------------------------------------------
// Tokens: every token built through `mint` is remembered for the log checks
// ---------------------------------------------------------------------------------------------

static MINTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Builds `t` and remembers the token so that [`assert_no_tokens`] can look for it.
pub fn mint(t: Tok) -> String {
    let s = t.build();
    MINTED.lock().unwrap().push(s.clone());
    s
}

/// Remembers a token built some other way (e.g. a tampered copy).
pub fn remember(token: &str) {
    MINTED.lock().unwrap().push(token.to_string());
}

/// Lower-case hex SHA-256 of the token, first 12 digits: what the audit log may carry.
pub fn token_hash_prefix(token: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(token.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Panics if `logs` contains any token minted in this test binary, or its signature or payload
/// segment alone (a token split or re-encoded in a log line is still a leak).
pub fn assert_no_tokens(logs: &str) {
    let tokens = MINTED.lock().unwrap().clone();
    for t in tokens {
        let mut needles = vec![t.clone()];
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() == 3 {
            needles.push(parts[1].to_string());
            needles.push(parts[2].to_string());
        }
        for n in needles {
            assert!(
                n.len() < 16 || !logs.contains(&n),
                "a token (or a segment of one) appears in the gateway's logs: {n:.40}…"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 framing shared by the upstream and the stream reader
// ---------------------------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<(String, Vec<(String, String)>), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok((first, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut tmp = [0u8; 16 * 1024];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n > 0)
}

/// Reads a head (up to the blank line) from `buf`/`stream`. `None` on a clean EOF before any byte.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, Vec<(String, String)>)>> {
    loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..p + 4).collect();
            return parse_head(&head[..p])
                .map(Some)
                .map_err(std::io::Error::other);
        }
        if !read_more(stream, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other("eof in head"))
            };
        }
    }
}

/// Incremental chunked decoding: returns the next chunk's data, `Ok(None)` at the last chunk.
async fn read_chunk(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let line_end = loop {
        if let Some(p) = find(buf, b"\r\n") {
            break p;
        }
        if !read_more(stream, buf).await? {
            return Err(std::io::Error::other("eof in chunk size"));
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
    let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    buf.drain(..line_end + 2);
    if size == 0 {
        // trailers, then the blank line
        loop {
            if let Some(p) = find(buf, b"\r\n") {
                let empty = p == 0;
                buf.drain(..p + 2);
                if empty {
                    return Ok(None);
                }
                continue;
            }
            if !read_more(stream, buf).await? {
                return Err(std::io::Error::other("eof in trailers"));
            }
        }
    }
    while buf.len() < size + 2 {
        if !read_more(stream, buf).await? {
            return Err(std::io::Error::other("eof in chunk"));
        }
    }
    let data: Vec<u8> = buf.drain(..size).collect();
    buf.drain(..2);
    Ok(Some(data))
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
) -> std::io::Result<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        while let Some(c) = read_chunk(stream, buf).await? {
            body.extend_from_slice(&c);
        }
        return Ok(body);
    }
    let n = match header(headers, "content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| std::io::Error::other("bad content-length"))?,
        None => 0,
    };
    while buf.len() < n {
        if !read_more(stream, buf).await? {
            return Err(std::io::Error::other("eof in body"));
        }
    }
    Ok(buf.drain(..n).collect())
}

// ---------------------------------------------------------------------------------------------
// Programmable recording upstream
// ---------------------------------------------------------------------------------------------

/// What [`Up`] answers.
pub enum UpReply {
    /// A complete response with `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `200` chunked; each event is one chunk, written `interval` apart (the first at once),
    /// then the last chunk. Stops early if the gateway goes away.
    Events {
        headers: Vec<(String, String)>,
        events: Vec<Vec<u8>>,
        interval: Duration,
    },
}

impl UpReply {
    pub fn json(body: &[u8]) -> UpReply {
        UpReply::Full {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_vec(),
        }
    }
    /// `text/event-stream` events, `interval` apart.
    pub fn sse(events: Vec<Vec<u8>>, interval: Duration) -> UpReply {
        UpReply::Events {
            headers: vec![
                ("Content-Type".into(), "text/event-stream".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            events,
            interval,
        }
    }
}

pub type UpHandler = Arc<dyn Fn(&Request) -> UpReply + Send + Sync>;

/// A recording upstream with a test-chosen handler; stops when dropped.
pub struct Up {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    conns: Arc<AtomicUsize>,
    /// (event index, time written) of every event of every [`UpReply::Events`] answer.
    sent: Arc<Mutex<Vec<(usize, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Up {
    pub fn start(handler: impl Fn(&Request) -> UpReply + Send + Sync + 'static) -> Up {
        let handler: UpHandler = Arc::new(handler);
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let sent: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
        let (log2, conns2, sent2) = (log.clone(), conns.clone(), sent.clone());
        let task = bg().spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns2.fetch_add(1, Ordering::SeqCst);
                let (h, l, s) = (handler.clone(), log2.clone(), sent2.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, h, l, s).await;
                });
            }
        });
        Up {
            addr,
            log,
            conns,
            sent,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    pub fn last(&self) -> Request {
        self.requests().pop().expect("upstream received no request")
    }
    pub fn sent_events(&self) -> Vec<(usize, Instant)> {
        self.sent.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: UpHandler,
    log: Arc<Mutex<Vec<Request>>>,
    sent: Arc<Mutex<Vec<(usize, Instant)>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((line, headers)) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = read_body(&mut stream, &mut buf, &headers).await?;
        let req = Request {
            method,
            target,
            headers,
            body,
        };
        log.lock().unwrap().push(req.clone());
        match handler(&req) {
            UpReply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\n");
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                stream.write_all(&bytes).await?;
            }
            UpReply::Events {
                headers,
                events,
                interval,
            } => {
                let mut out = String::from("HTTP/1.1 200 OK\r\n");
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("Transfer-Encoding: chunked\r\n\r\n");
                stream.write_all(out.as_bytes()).await?;
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    let mut chunk = format!("{:x}\r\n", e.len()).into_bytes();
                    chunk.extend_from_slice(e);
                    chunk.extend_from_slice(b"\r\n");
                    stream.write_all(&chunk).await?;
                    stream.flush().await?;
                    sent.lock().unwrap().push((i, Instant::now()));
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw client helpers
// ---------------------------------------------------------------------------------------------

/// A response whose body is read piece by piece, with arrival times.
pub struct Stream {
    stream: TcpStream,
    buf: Vec<u8>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    /// `Some(true)` after the last chunk, `Some(false)` when the connection ended otherwise.
    pub clean_end: Option<bool>,
}

impl Stream {
    /// Sends `req` on a new connection and reads the response head (bounded by [`IO_TIMEOUT`]).
    pub async fn open(addr: SocketAddr, req: &Req) -> Result<Stream, String> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream
                .write_all(&req.to_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            loop {
                let (line, headers) = read_head(&mut stream, &mut buf)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("connection closed before a response")?;
                let status: u16 = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line {line:?}"))?;
                if (100..200).contains(&status) {
                    continue;
                }
                let chunked = header(&headers, "transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                return Ok(Stream {
                    stream,
                    buf,
                    status,
                    headers,
                    chunked,
                    clean_end: None,
                });
            }
        })
        .await
        .map_err(|_| "timeout waiting for the response head".to_string())?
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next piece of body, or `None` once the body ended (see [`Stream::clean_end`]).
    /// Waits at most `limit`; a timeout is reported as `Err`.
    pub async fn next(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, String> {
        if self.clean_end.is_some() {
            return Ok(None);
        }
        let fut = async {
            if self.chunked {
                match read_chunk(&mut self.stream, &mut self.buf).await {
                    Ok(Some(d)) => Some(d),
                    Ok(None) => {
                        self.clean_end = Some(true);
                        None
                    }
                    Err(_) => {
                        self.clean_end = Some(false);
                        None
                    }
                }
            } else {
                if !self.buf.is_empty() {
                    return Some(std::mem::take(&mut self.buf));
                }
                let mut tmp = vec![0u8; 16 * 1024];
                match self.stream.read(&mut tmp).await {
                    Ok(n) if n > 0 => Some(tmp[..n].to_vec()),
                    _ => {
                        self.clean_end = Some(true);
                        None
                    }
                }
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| format!("no body data within {limit:?}"))
    }

    /// Reads the rest of the body (each piece with its arrival time), bounded by `limit` overall.
    pub async fn collect(&mut self, limit: Duration) -> Result<Vec<(Instant, Vec<u8>)>, String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Some(d) => out.push((Instant::now(), d)),
                None => return Ok(out),
            }
        }
    }
}

/// Sends the head of `req` with `Expect: 100-continue` and waits for the gateway's answer. On
/// `100 Continue` the body is sent and the final response read: `(true, final)`. A final answer
/// before the body (a refusal) is returned as `(false, answer)` and the body is never sent.
pub async fn send_expect_continue(addr: SocketAddr, req: &Req) -> Result<(bool, Resp), String> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let bytes = req.clone().h("Expect", "100-continue").to_bytes();
        let split = find(&bytes, b"\r\n\r\n").ok_or("no head")? + 4;
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(&bytes[..split])
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let (line, headers) = read_head(&mut stream, &mut buf)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("connection closed before any answer")?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        if status != 100 {
            let body = read_body(&mut stream, &mut buf, &headers)
                .await
                .map_err(|e| e.to_string())?;
            return Ok((
                false,
                Resp {
                    status,
                    headers,
                    body,
                },
            ));
        }
        stream
            .write_all(&bytes[split..])
            .await
            .map_err(|e| e.to_string())?;
        let resp = crate::harness::read_response(&mut stream, &mut buf, false).await?;
        Ok((true, resp))
    })
    .await
    .map_err(|_| "timeout in an Expect: 100-continue exchange".to_string())?
}

/// Sends `req` (head and body in one write) on a fresh connection.
pub async fn send(addr: SocketAddr, req: &Req) -> Resp {
    send_to(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.target))
}

/// Sends a request whose body is written with `Transfer-Encoding: chunked`, in `parts`.
pub async fn send_chunked(addr: SocketAddr, req: &Req, parts: &[&[u8]]) -> Result<Resp, String> {
    let mut r = req.clone();
    r.body = None;
    let mut bytes = r.h("Transfer-Encoding", "chunked").to_bytes();
    for p in parts {
        bytes.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        bytes.extend_from_slice(p);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    crate::harness::send_raw(addr, &bytes, false).await
}

/// Polls `check` every 20 ms until it returns true or `limit` passes; returns the time taken.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process, fully controlled
// ---------------------------------------------------------------------------------------------

/// How the config file sits on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `<dir>/config.yaml`, a regular file.
    Plain,
    /// A Kubernetes ConfigMap volume: `config.yaml -> ..data/config.yaml`, `..data -> ..gen0`.
    Kube,
    /// `<dir>/config.yaml -> <dir>/real/config.yaml` (the target's directory is not watched).
    Linked,
}

/// A running `mcpgate run` that the test owns; killed on drop.
pub struct Proc {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    /// The directory holding the config (watched by the gateway).
    pub dir: PathBuf,
    /// The path given to `--config`.
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    layout: Layout,
    generation: usize,
    _tmp: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            assert_no_tokens(&self.logs());
        } else {
            let logs = self.logs();
            let start = logs.len().saturating_sub(8000);
            let start = (start..logs.len())
                .find(|&i| logs.is_char_boundary(i))
                .unwrap_or(0);
            eprintln!("---- mcpgate stderr ----\n{}", &logs[start..]);
        }
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Renders a template's `{PORT}` and `{ADMIN}`.
pub fn ports(template: &str, port: u16, admin: u16) -> String {
    template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string())
}

impl Proc {
    /// Starts `mcpgate <args> run --config <path>` with the config `config(port, admin_port)` laid
    /// out as `layout`, and waits for `/healthz` and `/readyz`.
    pub async fn start(
        layout: Layout,
        args: &[&str],
        envs: &[(&str, &str)],
        config: impl Fn(u16, u16) -> String,
    ) -> Proc {
        Proc::start_prepared(layout, args, envs, |_| {}, config).await
    }

    /// Same, with `prepare(dir)` run before the gateway starts (to put files the config
    /// references next to it).
    pub async fn start_prepared(
        layout: Layout,
        args: &[&str],
        envs: &[(&str, &str)],
        prepare: impl Fn(&std::path::Path),
        config: impl Fn(u16, u16) -> String,
    ) -> Proc {
        let mut last = String::new();
        for _ in 0..4 {
            let (port, admin_port) = (free_port(), free_port());
            if port == admin_port {
                continue;
            }
            let tmp = tempfile::tempdir().unwrap();
            // The config directory is watched: keep the log out of it.
            let dir = tmp.path().join("conf");
            std::fs::create_dir(&dir).unwrap();
            let config_path = dir.join("config.yaml");
            let text = config(port, admin_port);
            match layout {
                Layout::Plain => std::fs::write(&config_path, &text).unwrap(),
                Layout::Kube => {
                    std::fs::create_dir(dir.join("..gen0")).unwrap();
                    std::fs::write(dir.join("..gen0/config.yaml"), &text).unwrap();
                    std::os::unix::fs::symlink("..gen0", dir.join("..data")).unwrap();
                    std::os::unix::fs::symlink("..data/config.yaml", &config_path).unwrap();
                }
                Layout::Linked => {
                    std::fs::create_dir(dir.join("real")).unwrap();
                    std::fs::write(dir.join("real/config.yaml"), &text).unwrap();
                    std::os::unix::fs::symlink(dir.join("real/config.yaml"), &config_path).unwrap();
                }
            }
            prepare(&dir);
            let log_path = tmp.path().join("stderr.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let log2 = log.try_clone().unwrap();
            let child = Command::new(gateway_bin())
                .args(args)
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", "info")
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY")
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log2))
                .spawn()
                .unwrap();
            let mut p = Proc {
                child,
                port,
                admin_port,
                dir,
                config_path,
                log_path,
                layout,
                generation: 0,
                _tmp: tmp,
            };
            match p.wait_up(Duration::from_secs(20)).await {
                Ok(()) => return p,
                Err(e) => {
                    last = format!("{e}\n---- stderr ----\n{}", p.logs());
                    if !last.to_ascii_lowercase().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("mcpgate did not start: {last}");
    }

    async fn wait_up(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("mcpgate exited early with {st}"));
            }
            if let Ok(r) = send_to(self.admin_addr(), &Req::get("/readyz").host("localhost")).await
            {
                if r.status == 200 && TcpStream::connect(self.addr()).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {limit:?}"));
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
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The gateway's log so far, once settled (see [`settled_log`]).
    pub fn logs(&self) -> String {
        settled_log(&self.log_path)
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -s {sig} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn admin(&self, path: &str) -> Resp {
        send(self.admin_addr(), &Req::get(path).host("localhost")).await
    }

    pub async fn metrics(&self) -> Exposition {
        let r = self.admin("/metrics").await;
        assert_eq!(r.status, 200, "{r}");
        parse_exposition(&r.text()).unwrap_or_else(|e| panic!("bad /metrics: {e}\n{}", r.text()))
    }

    /// The file the gateway eventually reads.
    fn real_file(&self) -> PathBuf {
        match self.layout {
            Layout::Linked => self.dir.join("real/config.yaml"),
            _ => self.config_path.clone(),
        }
    }

    /// `truncate + write` on the file itself (what `echo > file` does). With [`Layout::Linked`]
    /// this writes the symlink's target, in a directory the gateway does not watch.
    pub fn write_in_place(&self, text: &str) {
        std::fs::write(self.real_file(), text).unwrap();
    }

    /// What editors do: write a temporary file next to it, then rename it over the config.
    /// (On a Kubernetes layout this replaces the `config.yaml` symlink with a regular file.)
    pub fn write_rename(&self, text: &str) {
        let tmp = self.dir.join(".config.yaml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// What the kubelet does for a ConfigMap: a new timestamped directory, a `..data_tmp`
    /// symlink to it renamed over `..data`, the old directory removed. `config.yaml` is (made)
    /// a symlink to `..data/config.yaml`, atomically.
    pub fn kube_swap(&mut self, text: &str) {
        self.generation += 1;
        let gen = format!("..gen{}", self.generation);
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::create_dir(self.dir.join(&gen)).unwrap();
        std::fs::write(self.dir.join(&gen).join("config.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&gen, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let is_link = std::fs::symlink_metadata(&self.config_path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            let l = self.dir.join("config.yaml.lnk");
            std::os::unix::fs::symlink("..data/config.yaml", &l).unwrap();
            std::fs::rename(&l, &self.config_path).unwrap();
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition format (version 0.0.4), strictly
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// family name → type
    pub types: HashMap<String, String>,
    /// family name → help text
    pub help: HashMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` whose labels are exactly `labels` (any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`] but 0 when the series is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Sum over the series of `name` that carry at least `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses `name{a="b",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let chars: Vec<char> = r.chars().collect();
        let mut i = 0;
        loop {
            if i < chars.len() && chars[i] == '}' {
                i += 1;
                break;
            }
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let lname: String = chars[start..i].iter().collect();
            if !valid_label_name(&lname) {
                return Err(format!("bad label name {lname:?} in {line:?}"));
            }
            if i + 1 >= chars.len() || chars[i + 1] != '"' {
                return Err(format!("label value not quoted in {line:?}"));
            }
            i += 2;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            if labels.iter().any(|(n, _): &(String, String)| *n == lname) {
                return Err(format!("duplicate label {lname} in {line:?}"));
            }
            labels.push((lname, value));
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {}
                _ => return Err(format!("expected , or }} in {line:?}")),
            }
        }
        let consumed: String = chars[..i].iter().collect();
        rest = &r[consumed.len()..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("expected a space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or(""))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the declared types.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Parses and validates a whole exposition: line syntax, `# HELP`/`# TYPE` placement and
/// uniqueness, contiguous families, no duplicate series, non-negative counters, and for
/// histograms ascending `le` buckets with non-decreasing counts, `+Inf` equal to `_count`, and a
/// `_sum`.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut ex = Exposition::default();
    let mut seen_families: Vec<String> = Vec::new();
    let mut with_samples: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim_start();
            let mut parts = c.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            if kw == "HELP" || kw == "TYPE" {
                let name = parts.next().unwrap_or("");
                if !valid_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                let arg = parts.next().unwrap_or("");
                if with_samples.contains(name) {
                    return Err(format!("{kw} for {name} after its samples"));
                }
                if kw == "HELP" {
                    if ex.help.insert(name.into(), arg.into()).is_some() {
                        return Err(format!("two HELP lines for {name}"));
                    }
                } else {
                    if !matches!(
                        arg,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(format!("bad type in {line:?}"));
                    }
                    if ex.types.insert(name.into(), arg.into()).is_some() {
                        return Err(format!("two TYPE lines for {name}"));
                    }
                }
            }
            continue;
        }
        let s = parse_sample(line)?;
        let fam = family_of(&s.name, &ex.types);
        if seen_families.last() != Some(&fam) {
            if seen_families.contains(&fam) {
                return Err(format!("samples of {fam} are not contiguous"));
            }
            seen_families.push(fam.clone());
        }
        with_samples.insert(fam.clone());
        let mut lbl = s.labels.clone();
        lbl.sort();
        let key = format!("{}{:?}", s.name, lbl);
        if !series.insert(key.clone()) {
            return Err(format!("duplicate series {key}"));
        }
        if ex.types.get(&fam).map(String::as_str) == Some("counter")
            && (s.value.is_nan() || s.value < 0.0)
        {
            return Err(format!("negative counter {line:?}"));
        }
        ex.samples.push(s);
    }
    // Histograms
    for (fam, ty) in &ex.types {
        if ty != "histogram" {
            continue;
        }
        let mut groups: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
        for s in ex
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let le = s
                .labels
                .iter()
                .find(|(n, _)| n == "le")
                .ok_or_else(|| format!("{fam}_bucket without le"))?;
            let le = parse_value(&le.1)?;
            let mut rest: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(n, _)| n != "le")
                .cloned()
                .collect();
            rest.sort();
            groups
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in groups {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!("{fam}{labels}: buckets not ascending/cumulative"));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0.is_infinite())
                .ok_or_else(|| format!("{fam}{labels}: no +Inf bucket"))?
                .1;
            let find = |suffix: &str| {
                ex.samples.iter().find(|s| {
                    let mut l = s.labels.clone();
                    l.sort();
                    s.name == format!("{fam}{suffix}") && format!("{l:?}") == labels
                })
            };
            let count = find("_count").ok_or_else(|| format!("{fam}{labels}: no _count"))?;
            if count.value != inf {
                return Err(format!("{fam}{labels}: +Inf bucket != _count"));
            }
            find("_sum").ok_or_else(|| format!("{fam}{labels}: no _sum"))?;
        }
    }
    Ok(ex)
}
