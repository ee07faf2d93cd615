//! Loopback ports a test can prove are its own.
//!
//! - A mock server binds `127.0.0.1:0` and keeps the listener for its whole life: the port is
//!   the kernel's choice and nobody else's ([`super::server::Server`]).
//! - A port nobody listens on ([`ClosedPort`]): a socket bound without `listen` and kept.
//!   Connections to it are refused, and no other socket can bind it while the guard lives,
//!   so "nothing answers there" holds for the whole test. [`SilentPort`]: one that accepts
//!   connections and never answers.
//! - A process that binds by number from its own configuration or command line (mcpgate,
//!   `redis-server`, `openssl s_server`) cannot be handed a listening socket, so a window
//!   remains between choosing the port and the process binding it. [`free_ports`] takes
//!   ports the kernel just handed out; the launcher then retries with fresh ports when the
//!   process reports the address in use ([`ATTEMPTS`], [`address_in_use`]).

use std::net::{SocketAddr, TcpListener};

/// Start attempts of a process on fresh ports before giving up.
pub const ATTEMPTS: usize = 4;

/// `n` distinct loopback ports the kernel just handed out (bound at once, then released
/// together, so they differ from each other).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One such port.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Whether a process's output says its address was taken.
pub fn address_in_use(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    lower.contains("in use") || lower.contains("addrinuse")
}

/// A loopback port where connections are refused for as long as this lives.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A loopback port that accepts TCP connections (into the kernel's backlog) and never
/// answers anything, for as long as this lives: an upstream that hangs.
pub struct SilentPort {
    _listener: TcpListener,
    port: u16,
}

impl SilentPort {
    pub fn new() -> SilentPort {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        SilentPort {
            _listener: listener,
            port,
        }
    }
    pub fn port(&self) -> u16 {
        self.port
    }
}
