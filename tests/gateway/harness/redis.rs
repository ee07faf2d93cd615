//! A real `redis-server` for the scale-out tests: on a free loopback port, no persistence
//! (`--save '' --appendonly no`), killed on drop; it can be killed, paused (SIGSTOP: it
//! accepts connections but never answers) and restarted on the same port, and spoken to over
//! RESP. `redis-server` comes from the test command's setup (`.ci/setup test`); without it the
//! tests that need it fail and say so.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::poll::within;
use super::ports::{address_in_use, free_port, ATTEMPTS};

/// How long `redis-server` may take to answer its first `PING`.
const START_LIMIT: Duration = Duration::from_secs(10);

/// `redis-server` on a free loopback port, no persistence; killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Further arguments (TLS, password).
    extra: Vec<String>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

fn redis_server_bin() -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    found.unwrap_or_else(|| {
        panic!("redis-server is not installed: run .ci/setup test (apt package redis-server)")
    })
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_with(Vec::new()).await
    }

    /// With further arguments (TLS, password). Retries on fresh ports when the chosen one
    /// was taken in the meantime.
    pub async fn start_with(extra: Vec<String>) -> Redis {
        let mut r = Redis {
            child: None,
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            extra,
        };
        for _ in 0..ATTEMPTS {
            r.port = free_port();
            if r.spawn().await.is_ok() {
                return r;
            }
            r.kill();
            if !address_in_use(&r.log()) {
                break;
            }
        }
        panic!("redis-server did not start:\n{}", r.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Starts the server on `self.port` and waits (bounded) for its first answer.
    async fn spawn(&mut self) -> Result<(), ()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let child = Command::new(redis_server_bin())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut child = child;
        let port = self.port;
        // Up when it answers (with a password, NOAUTH is an answer too), or gone.
        let up = within(START_LIMIT, || {
            let exited = !matches!(child.try_wait(), Ok(None));
            async move {
                exited
                    || cmd_on(port, &["PING"])
                        .await
                        .is_ok_and(|l| l == "+PONG" || l.starts_with("-NOAUTH"))
            }
        })
        .await;
        let running = matches!(child.try_wait(), Ok(None));
        self.child = Some(child);
        if up.is_ok() && running {
            Ok(())
        } else {
            Err(())
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        if self.spawn().await.is_err() {
            panic!(
                "redis-server did not restart on {}:\n{}",
                self.port,
                self.log()
            );
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-s", sig, &c.id().to_string()])
                .status();
        }
    }

    /// SIGSTOP: connections are accepted by the kernel but nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Commands sent together on one connection (a `MULTI` ... `EXEC` block, say); the
    /// whole answer once it holds at least `lines` lines.
    pub async fn pipeline(&self, cmds: &[&[&str]], lines: usize) -> Result<String, String> {
        let mut req = String::new();
        for args in cmds {
            req.push_str(&format!("*{}\r\n", args.len()));
            for a in *args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        tokio::time::timeout(Duration::from_secs(2), async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while got.windows(2).filter(|w| w == b"\r\n").count() < lines {
                let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&got).to_string())
        })
        .await
        .map_err(|_| "timeout".to_string())?
    }

    /// A bulk-string answer (`GET`, `HGET`; the value holds no CRLF): `None` for nil.
    pub async fn get(&self, args: &[&str]) -> Option<String> {
        let text = self.pipeline(&[args], 1).await.unwrap();
        if text.starts_with("$-1") {
            return None;
        }
        let text = self.pipeline(&[args], 2).await.unwrap();
        let (first, rest) = text.split_once("\r\n").unwrap();
        let len: usize = first.trim_start_matches('$').parse().unwrap();
        Some(rest[..len].to_string())
    }

    /// One command over RESP; the first line of the answer.
    pub async fn cmd(&self, args: &[&str]) -> Result<String, String> {
        cmd_on(self.port, args).await
    }
}

/// One command over RESP to the server on `port`; the first line of the answer.
async fn cmd_on(port: u16, args: &[&str]) -> Result<String, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        Ok(text.lines().next().unwrap_or("").to_string())
    })
    .await
    .map_err(|_| "timeout".to_string())?
}
