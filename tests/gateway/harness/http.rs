//! HTTP/1.1 on the wire, written and read byte for byte: the one raw client of the suite
//! ([`Req`], [`send_to`], [`read_response`], [`Stream`], `Expect: 100-continue`, chunked
//! uploads) and the framing the mock servers read requests with ([`read_head`],
//! [`read_body`]). Nothing is normalised: the target, header names and duplicates go out as
//! the test wrote them. Every reader works over any byte stream (TCP or TLS).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::assert::{parse_challenge, Challenge};
use super::tokens::remember;

/// Upper bound for any single request/response exchange in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// First value of a header in a field list (case-insensitive name).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Splits a head (without its blank line) into its first line and its fields.
pub fn parse_head(head: &[u8]) -> std::io::Result<(String, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok((first, headers))
}

/// Reads more bytes into `buf`; `false` at end of stream. `counted` sees every byte read.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    counted: &mut (dyn FnMut(usize) + Send),
) -> std::io::Result<bool> {
    let mut tmp = [0u8; 16 * 1024];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    counted(n);
    Ok(n > 0)
}

/// Reads a head (up to the blank line) from `buf`/`stream`. `None` on a clean end of stream
/// before any byte of it.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    counted: &mut (dyn FnMut(usize) + Send),
) -> std::io::Result<Option<(String, Vec<(String, String)>)>> {
    loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..p + 4).collect();
            return parse_head(&head[..p]).map(Some);
        }
        if buf.len() > 1 << 20 {
            return Err(bad("head too large"));
        }
        if !read_more(stream, buf, counted).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("end of stream in a head"))
            };
        }
    }
}

/// Incremental chunked decoding: the next chunk's data, `Ok(None)` after the last chunk (and
/// its trailers).
pub async fn read_chunk<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    counted: &mut (dyn FnMut(usize) + Send),
) -> std::io::Result<Option<Vec<u8>>> {
    let line_end = loop {
        if let Some(p) = find(buf, b"\r\n") {
            break p;
        }
        if !read_more(stream, buf, counted).await? {
            return Err(bad("end of stream in a chunk size"));
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
    let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
    buf.drain(..line_end + 2);
    if size == 0 {
        // Trailers, then the blank line.
        loop {
            if let Some(p) = find(buf, b"\r\n") {
                let empty = p == 0;
                buf.drain(..p + 2);
                if empty {
                    return Ok(None);
                }
                continue;
            }
            if !read_more(stream, buf, counted).await? {
                return Err(bad("end of stream in trailers"));
            }
        }
    }
    while buf.len() < size + 2 {
        if !read_more(stream, buf, counted).await? {
            return Err(bad("end of stream in a chunk"));
        }
    }
    let data: Vec<u8> = buf.drain(..size).collect();
    buf.drain(..2);
    Ok(Some(data))
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or `Content-Length`; with
/// neither, to the end of the stream when `until_eof` (a response), else empty (a request).
pub async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
    until_eof: bool,
    counted: &mut (dyn FnMut(usize) + Send),
) -> std::io::Result<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        while let Some(c) = read_chunk(stream, buf, counted).await? {
            body.extend_from_slice(&c);
        }
        return Ok(body);
    }
    let n = header(headers, "content-length")
        .map(|v| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| bad("bad content-length"))?;
    match n {
        Some(n) => {
            while buf.len() < n {
                if !read_more(stream, buf, counted).await? {
                    return Err(bad("end of stream in a body"));
                }
            }
            Ok(buf.drain(..n).collect())
        }
        None if until_eof => {
            while read_more(stream, buf, counted).await? {}
            Ok(std::mem::take(buf))
        }
        None => Ok(Vec::new()),
    }
}

/// A request as a mock server received it.
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
        header(&self.headers, name)
    }
    /// Every value of a header (case-insensitive name).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Header names compared after lower-casing and mapping `_` to `-` (how many servers read
    /// them).
    pub fn header_all_loose(&self, name: &str) -> Vec<&str> {
        let want = name.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .filter(|(n, _)| n.trim().to_ascii_lowercase().replace('_', "-") == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A request written byte for byte as specified (the target is never normalised).
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
    /// Appends a header (duplicates allowed, written verbatim). The credential of an
    /// `Authorization`, `DPoP` or `X-API-Key` header is remembered for the log checks.
    pub fn h(mut self, name: &str, value: &str) -> Req {
        if name.eq_ignore_ascii_case("authorization") {
            remember(value.split_once(' ').map_or(value, |(_, v)| v));
        } else if name.eq_ignore_ascii_case("dpop") || name.eq_ignore_ascii_case("x-api-key") {
            remember(value);
        }
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
        header(&self.headers, name)
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
    /// The Bearer challenge, strictly parsed: exactly one is expected. Routes that also accept
    /// DPoP (RFC 9449 §7.1) send a second, `DPoP` challenge in its own header.
    pub fn challenge(&self) -> Challenge {
        let all = self.header_all("www-authenticate");
        let is_bearer = |v: &str| {
            v.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
        };
        let bearer: Vec<&str> = all.iter().copied().filter(|v| is_bearer(v)).collect();
        assert_eq!(
            bearer.len(),
            1,
            "expected exactly one Bearer challenge, got {all:?} (status {})",
            self.status
        );
        assert!(
            all.iter().all(|v| is_bearer(v) || v.starts_with("DPoP ")),
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

/// Sends one request on a fresh connection and reads one response (bounded by
/// [`IO_TIMEOUT`]).
pub async fn send_to(addr: SocketAddr, req: &Req) -> Result<Resp, String> {
    send_raw(addr, &req.to_bytes(), req.method == "HEAD").await
}

/// [`send_to`] that panics when no response arrives.
pub async fn send(addr: SocketAddr, req: &Req) -> Resp {
    send_to(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.target))
}

/// Writes `bytes` verbatim on a fresh connection and reads one response.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8], head: bool) -> Result<Resp, String> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        exchange(&mut stream, bytes, head).await
    })
    .await
    .map_err(|_| "timeout waiting for response".to_string())?
}

/// Writes `bytes` on an open connection (TCP or TLS) and reads one response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    head: bool,
) -> Result<Resp, String> {
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    read_response(stream, &mut Vec::new(), head).await
}

/// Reads one response (skipping 1xx) from `stream`.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Result<Resp, String> {
    let mut none = |_| {};
    loop {
        let Some((line, headers)) = read_head(stream, buf, &mut none)
            .await
            .map_err(|e| format!("{e} (got {:?})", String::from_utf8_lossy(buf)))?
        else {
            return Err("connection closed before a response".to_string());
        };
        let status = status_of(&line)?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if head_only || status == 204 || status == 304 {
            Vec::new()
        } else {
            read_body(stream, buf, &headers, true, &mut none)
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

fn status_of(line: &str) -> Result<u16, String> {
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))
}

/// Sends a request whose body is written with `Transfer-Encoding: chunked`, in `parts`.
pub async fn send_chunked(addr: SocketAddr, req: &Req, parts: &[&[u8]]) -> Result<Resp, String> {
    let mut r = req.clone();
    r.body = None;
    send_raw(addr, &chunked_bytes(&r, parts), false).await
}

/// The bytes of `req` (its body ignored) with `parts` as a chunked body.
pub fn chunked_bytes(req: &Req, parts: &[&[u8]]) -> Vec<u8> {
    let mut r = req.clone();
    r.body = None;
    let mut bytes = r.h("Transfer-Encoding", "chunked").to_bytes();
    for p in parts {
        bytes.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        bytes.extend_from_slice(p);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes
}

/// Sends the head of `req` with `Expect: 100-continue` and waits for the gateway's answer.
/// On `100 Continue` the body is sent and the final response read: `(true, final)`. A final
/// answer before the body (a refusal) is returned as `(false, answer)` and the body is never
/// sent.
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
        let mut none = |_| {};
        let (line, headers) = read_head(&mut stream, &mut buf, &mut none)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("connection closed before any answer")?;
        let status = status_of(&line)?;
        if status != 100 {
            let body = read_body(&mut stream, &mut buf, &headers, false, &mut none)
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
        let resp = read_response(&mut stream, &mut buf, false).await?;
        Ok((true, resp))
    })
    .await
    .map_err(|_| "timeout in an Expect: 100-continue exchange".to_string())?
}

/// Reads from `stream` into `buf` until `needle` appears (bounded by [`IO_TIMEOUT`]); an
/// error if the stream ends first.
pub async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    needle: &[u8],
) -> Result<(), String> {
    let mut none = |_| {};
    tokio::time::timeout(IO_TIMEOUT, async {
        while find(buf, needle).is_none() {
            if !read_more(stream, buf, &mut none)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!(
                    "stream closed before {:?}: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                ));
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| {
        format!(
            "no {:?} within {IO_TIMEOUT:?}",
            String::from_utf8_lossy(needle)
        )
    })?
}

/// Reads until the peer closes the connection (`Ok(elapsed)`), or `Err` once `limit` passes.
pub async fn closed_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {limit:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

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
    /// Sends `req` on a new connection and reads the response head (bounded by
    /// [`IO_TIMEOUT`]).
    pub async fn open(addr: SocketAddr, req: &Req) -> Result<Stream, String> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream
                .write_all(&req.to_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            loop {
                let (line, headers) = read_head(&mut stream, &mut buf, &mut |_| {})
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("connection closed before a response")?;
                let status = status_of(&line)?;
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
                match read_chunk(&mut self.stream, &mut self.buf, &mut |_| {}).await {
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

    /// Reads the rest of the body (each piece with its arrival time), bounded by `limit`
    /// overall.
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
