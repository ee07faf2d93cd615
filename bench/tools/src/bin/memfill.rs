//! Fill mcpgate's verified-token cache: send distinct ES256 tokens, each once.
//!
//! ```text
//! memfill --key es256.pk8 --iss ISSUER --aud AUDIENCE --addr IP:PORT --path /mcp \
//!         --from N --count N [--conns C] [--keep FILE --keep-count K]
//! memfill --replay FILE --addr IP:PORT --path /mcp [--conns C] [--body FILE]
//! ```
//! The first form mints token `from .. from+count` (distinct `sub`/`jti`, signed just
//! before sending) and sends each once over `conns` keep-alive connections; `--keep`
//! saves the first K of them so that a later `--replay` can send exactly those again
//! (ECDSA signatures are randomized: re-minting would make different tokens). Prints one
//! JSON line `{"sent":…,"ok":…,"failed":…,"seconds":…}`; exits 1 if any response is not 200.
//! With `--body`, each request is a POST of that file's content (application/json).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mcpgate_bench::{claims, now_unix, Result, Signer};

struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    body: Option<Vec<u8>>,
}

impl Conn {
    fn new(addr: &str, body: Option<Vec<u8>>) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(4096),
            body,
        }
    }

    /// Send one GET with the token and return the response status.
    fn get(&mut self, path: &str, token: &str) -> Result<u16> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr)?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
            }
            match self.exchange(path, token) {
                Ok((status, close)) => {
                    if close {
                        self.stream = None;
                    }
                    return Ok(status);
                }
                // A keep-alive connection the server closed meanwhile: retry once.
                Err(e) if attempt == 0 => {
                    self.stream = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err("unreachable".into())
    }

    fn exchange(&mut self, path: &str, token: &str) -> Result<(u16, bool)> {
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let mut req = match &self.body {
            None => format!(
                "GET {path} HTTP/1.1\r\nHost: mcp.bench.example\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .into_bytes(),
            Some(b) => format!(
                "POST {path} HTTP/1.1\r\nHost: mcp.bench.example\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
                 Content-Length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes(),
        };
        if let Some(b) = &self.body {
            req.extend_from_slice(b);
        }
        stream.write_all(&req)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?.to_ascii_lowercase();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let length: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .ok_or("response without content-length")?;
        let close = header("connection:").is_some_and(|v| v == "close");
        while self.buf.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed in body".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, close))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Default)]
struct Args {
    key: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    addr: Option<String>,
    path: Option<String>,
    from: u64,
    count: u64,
    conns: u64,
    keep: Option<String>,
    keep_count: usize,
    replay: Option<String>,
    body: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        conns: 4,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--key" => a.key = Some(v()?),
            "--iss" => a.iss = Some(v()?),
            "--aud" => a.aud = Some(v()?),
            "--addr" => a.addr = Some(v()?),
            "--path" => a.path = Some(v()?),
            "--from" => a.from = v()?.parse()?,
            "--count" => a.count = v()?.parse()?,
            "--conns" => a.conns = v()?.parse()?,
            "--keep" => a.keep = Some(v()?),
            "--keep-count" => a.keep_count = v()?.parse()?,
            "--replay" => a.replay = Some(v()?),
            "--body" => a.body = Some(v()?),
            _ => return Err(format!("unknown argument {k}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let addr = a.addr.clone().ok_or("--addr is required")?;
    let path = a.path.clone().unwrap_or_else(|| "/mcp".into());
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let conns = a.conns.max(1);
    let body = match &a.body {
        Some(f) => Some(std::fs::read(f)?),
        None => None,
    };

    if let Some(file) = &a.replay {
        let text = std::fs::read_to_string(file)?;
        let tokens: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let per = tokens.len().div_ceil(conns as usize).max(1);
        std::thread::scope(|s| -> Result<()> {
            let hs: Vec<_> = tokens
                .chunks(per)
                .map(|chunk| {
                    let (addr, path, ok, failed) = (&addr, &path, &ok, &failed);
                    let body = body.clone();
                    s.spawn(move || -> Result<()> {
                        let mut c = Conn::new(addr, body);
                        for t in chunk {
                            tally(c.get(path, t)?, ok, failed);
                        }
                        Ok(())
                    })
                })
                .collect();
            join_all(hs)
        })?;
    } else {
        let der = std::fs::read(a.key.as_deref().ok_or("--key is required")?)?;
        let signer = Signer::from_pkcs8("ES256", &der)?;
        let iss = a.iss.clone().ok_or("--iss is required")?;
        let aud = a.aud.clone().ok_or("--aud is required")?;
        let now = now_unix();
        let kept = std::sync::Mutex::new(Vec::new());
        let per = a.count.div_ceil(conns);
        std::thread::scope(|s| -> Result<()> {
            let hs: Vec<_> = (0..conns)
                .map(|t| {
                    let (addr, path, ok, failed) = (&addr, &path, &ok, &failed);
                    let (signer, iss, aud, kept, a) = (&signer, &iss, &aud, &kept, &a);
                    let body = body.clone();
                    s.spawn(move || -> Result<()> {
                        let mut c = Conn::new(addr, body);
                        let lo = a.from + t * per;
                        let hi = (a.from + (t + 1) * per).min(a.from + a.count);
                        for i in lo..hi {
                            let tok = signer.mint(&claims(iss, aud, "fill", i, now))?;
                            tally(c.get(path, &tok)?, ok, failed);
                            if (i - lo) < (a.keep_count as u64).div_ceil(conns) {
                                if let Ok(mut k) = kept.lock() {
                                    k.push(tok);
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            join_all(hs)
        })?;
        if let Some(file) = &a.keep {
            let mut k = kept.into_inner().map_err(|_| "poisoned")?;
            k.truncate(a.keep_count);
            std::fs::write(file, k.join("\n") + "\n")?;
        }
    }
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    println!(
        "{{\"sent\":{},\"ok\":{ok},\"failed\":{failed},\"seconds\":{:.3}}}",
        ok + failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn tally(status: u16, ok: &AtomicU64, failed: &AtomicU64) {
    if status == 200 {
        ok.fetch_add(1, Ordering::Relaxed);
    } else {
        failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn join_all(hs: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    for h in hs {
        h.join().map_err(|_| "worker thread panicked")??;
    }
    Ok(())
}
