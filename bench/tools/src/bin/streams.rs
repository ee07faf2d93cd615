//! Idle SSE streams held through a proxy, for the `streams` scale scenario (`bench/streams.py`).
//!
//! ```text
//! streams upstream --listen 127.0.0.1:PORT
//! streams clients --target 127.0.0.1:PORT --path /sse --bearer TOKEN --count N
//!                 [--host mcp.bench.example] [--concurrency 200] [--open-timeout 15]
//! ```
//!
//! `upstream`: an HTTP/1.1 server that answers every request with `200`,
//! `content-type: text/event-stream`, `cache-control: no-cache`, chunked, one SSE comment
//! (`: open`) and then nothing more, holding the response open until the peer closes (an
//! idle MCP stream). One thread and one small task per connection: 10,000 of them cost a
//! few MiB.
//!
//! `clients`: opens N HTTP/1.1 connections to the proxy, each `GET PATH` with
//! `Accept: text/event-stream` and `Authorization: Bearer TOKEN`, at most `--concurrency` of
//! them opening at a time (so that neither the proxy's accept queue nor a connection burst is
//! what is measured); each must answer `200` and deliver its first event within
//! `--open-timeout` seconds. Prints `ready N` once all N are open, or
//! `error K of N streams failed to open: REASON × COUNT, ...` and exits 1. Then holds them
//! until stdin is closed, SIGTERM or SIGINT, and prints
//! `done open=O lost=L extra_bytes=B`: `lost` streams ended while held (the proxy or the
//! upstream closed them), `extra_bytes` arrived on idle streams after their first event.
//! Loopback only, nothing else is sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpgate_bench::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

/// The upstream's answer: its head, then one chunk holding one SSE comment, then silence.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
transfer-encoding: chunked\r\n\
\r\n\
8\r\n: open\n\n\r\n";
/// The largest request or response head either side reads.
const MAX_HEAD: usize = 64 * 1024;

const USAGE: &str = "usage: streams upstream --listen ADDR\n       \
streams clients --target ADDR --path PATH --bearer TOKEN --count N \
[--host HOST] [--concurrency C] [--open-timeout SECONDS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streams: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = match args.first().map(String::as_str) {
        Some("upstream") => rt.block_on(upstream(&args[1..])),
        Some("clients") => rt.block_on(clients(&args[1..])),
        _ => Err(USAGE.into()),
    };
    match run {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streams: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` pairs.
fn options(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let Some(key) = name.strip_prefix("--") else {
            return Err(format!("unexpected argument {name}\n{USAGE}").into());
        };
        let value = it.next().ok_or(format!("{name} needs a value"))?;
        out.insert(key.to_string(), value.clone());
    }
    Ok(out)
}

fn required<'a>(opts: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    opts.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("--{key} is required\n{USAGE}").into())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// upstream
// ---------------------------------------------------------------------------------------------

async fn upstream(args: &[String]) -> Result<ExitCode> {
    let opts = options(args)?;
    let listen: SocketAddr = required(&opts, "listen")?.parse()?;
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    // A deep accept queue: the proxy opens its upstream connections in bursts.
    let listener = socket.listen(4096)?;
    println!("listening {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(serve(sock));
            }
            Err(e) => {
                // Out of descriptors, say: say so, and let some connections end.
                eprintln!("streams upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection: read the request head, answer the stream's head and first event, then
/// hold it, discarding whatever arrives, until the peer closes.
async fn serve(mut sock: TcpStream) {
    let _ = sock.set_nodelay(true);
    if !read_request_head(&mut sock).await {
        return;
    }
    if sock.write_all(ANSWER).await.is_err() {
        return;
    }
    let mut sink = [0u8; 64];
    while let Ok(n) = sock.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn read_request_head(sock: &mut TcpStream) -> bool {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if find(&head, b"\r\n\r\n").is_some() {
            return true;
        }
        if head.len() > MAX_HEAD {
            return false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// clients
// ---------------------------------------------------------------------------------------------

struct Held {
    lost: AtomicUsize,
    extra_bytes: AtomicU64,
}

async fn clients(args: &[String]) -> Result<ExitCode> {
    let opts = options(args)?;
    let target: SocketAddr = required(&opts, "target")?.parse()?;
    let path = required(&opts, "path")?;
    let bearer = required(&opts, "bearer")?;
    let count: usize = required(&opts, "count")?.parse()?;
    let host = opts.get("host").map_or("mcp.bench.example", String::as_str);
    let concurrency: usize = opts.get("concurrency").map_or(Ok(200), |v| v.parse())?;
    let open_timeout =
        Duration::from_secs_f64(opts.get("open-timeout").map_or(Ok(15.0), |v| v.parse())?);
    if count == 0 || concurrency == 0 {
        return Err("--count and --concurrency must be at least 1".into());
    }
    let request: Arc<[u8]> = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {bearer}\r\n\r\n"
    )
    .into_bytes()
    .into();

    let gate = Arc::new(Semaphore::new(concurrency));
    let held = Arc::new(Held {
        lost: AtomicUsize::new(0),
        extra_bytes: AtomicU64::new(0),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::result::Result<(), String>>();
    let started = std::time::Instant::now();
    for _ in 0..count {
        let (gate, held, tx, request) = (gate.clone(), held.clone(), tx.clone(), request.clone());
        tokio::spawn(async move {
            let opened = match gate.acquire_owned().await {
                Ok(_permit) => tokio::time::timeout(open_timeout, open(target, &request))
                    .await
                    .unwrap_or_else(|_| Err("no 200 and first event in time".to_string())),
                Err(_) => Err("closed".to_string()),
            };
            match opened {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    hold(sock, &held).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    }
    drop(tx);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut done = 0;
    while done < count {
        match rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => *failures.entry(e).or_default() += 1,
            None => break,
        }
        done += 1;
    }
    let failed: usize = failures.values().sum::<usize>() + (count - done);
    if failed > 0 {
        let reasons: Vec<String> = failures
            .iter()
            .map(|(why, n)| format!("{why} × {n}"))
            .collect();
        println!(
            "error {failed} of {count} streams failed to open: {}",
            reasons.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "streams clients: {count} open in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    println!("ready {count}");

    // Hold until stdin closes (read on a thread of its own: tokio's stdin would need a
    // feature for just this) or a signal.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = eof_tx.send(());
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = eof_rx => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let lost = held.lost.load(Ordering::Acquire);
    println!(
        "done open={} lost={lost} extra_bytes={}",
        count - lost,
        held.extra_bytes.load(Ordering::Acquire)
    );
    Ok(ExitCode::SUCCESS)
}

/// Open one stream: connect, send the request, read a `200` head and the first event.
async fn open(target: SocketAddr, request: &[u8]) -> std::result::Result<TcpStream, String> {
    let mut sock = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    sock.write_all(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let mut body_at = None;
    loop {
        let n = sock
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(match body_at {
                None if buf.is_empty() => "closed without an answer".to_string(),
                None => "closed in the answer's head".to_string(),
                Some(_) => "closed before the first event".to_string(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if body_at.is_none() {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let status = buf
                    .get(9..12)
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .unwrap_or("???");
                if !buf.starts_with(b"HTTP/1.1 ") || status != "200" {
                    return Err(format!("status {status}"));
                }
                body_at = Some(end + 4);
            } else if buf.len() > MAX_HEAD {
                return Err("answer head too large".to_string());
            }
        }
        // The first event ends with a blank line (chunked: inside the first chunk).
        if let Some(at) = body_at {
            if find(&buf[at..], b"\n\n").is_some() {
                return Ok(sock);
            }
        }
    }
}

/// Hold an open stream: count what still arrives and whether it ends.
async fn hold(mut sock: TcpStream, held: &Held) {
    let mut sink = [0u8; 64];
    loop {
        match sock.read(&mut sink).await {
            Ok(0) | Err(_) => {
                held.lost.fetch_add(1, Ordering::AcqRel);
                return;
            }
            Ok(n) => {
                held.extra_bytes.fetch_add(n as u64, Ordering::AcqRel);
            }
        }
    }
}
