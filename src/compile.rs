//! The vocabulary of compile steps: how a domain reports a bad setting, and the checks
//! several domains make on what the file gives them.
//!
//! Bottom layer: it imports nothing of ours. Each domain module owns its section of the
//! configuration (a strict serde type and a compile step into what it uses at run time);
//! a compile step that refuses a value returns a [`CompileError`]: the reason as the user
//! reads it, and the YAML path of the section or field it is about, so that the config
//! module can attach the file (and, later, the line) to every error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A refused setting: why, and where in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The YAML path of the section or field (`routes[2].tools`, `state.redis.url`); empty
    /// for the file as a whole.
    pub at: String,
    /// What the user reads after `FILE:`.
    pub reason: String,
    /// Set when the error is in another file the config names (the API key file): that
    /// file, and the line and column in it where known.
    pub elsewhere: Option<Elsewhere>,
}

/// A location in a file other than the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl CompileError {
    /// A refusal of the setting at YAML path `at`.
    pub fn new(at: impl Into<String>, reason: impl Into<String>) -> CompileError {
        CompileError {
            at: at.into(),
            reason: reason.into(),
            elsewhere: None,
        }
    }

    /// A refusal located in another file.
    pub fn in_file(
        file: &str,
        line: Option<usize>,
        column: Option<usize>,
        reason: impl Into<String>,
    ) -> CompileError {
        CompileError {
            at: String::new(),
            reason: reason.into(),
            elsewhere: Some(Elsewhere {
                file: file.to_string(),
                line,
                column,
            }),
        }
    }

    /// The same error, seen from the section `prefix` it was compiled within
    /// (`routes[2]` + `tools` = `routes[2].tools`).
    pub fn within(mut self, prefix: &str) -> CompileError {
        self.at = match (prefix.is_empty(), self.at.is_empty()) {
            (true, _) => self.at,
            (false, true) => prefix.to_string(),
            (false, false) if self.at.starts_with('[') => format!("{prefix}{}", self.at),
            (false, false) => format!("{prefix}.{}", self.at),
        };
        self
    }

    /// The same error with `context` before its reason (`route "mcp": `).
    pub fn prefixed(mut self, context: &str) -> CompileError {
        self.reason = format!("{context}{}", self.reason);
        self
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `Result<T, String>` of a check → a [`CompileError`] at `at`.
pub trait At<T> {
    fn at(self, at: &str) -> Result<T, CompileError>;
}

impl<T> At<T> for Result<T, String> {
    fn at(self, at: &str) -> Result<T, CompileError> {
        self.map_err(|reason| CompileError::new(at, reason))
    }
}

/// A serde_yaml error as (line, column, reason without serde's own " at line L column C").
pub fn yaml_error(e: &serde_yaml::Error) -> (Option<usize>, Option<usize>, String) {
    let loc = e.location();
    let msg = e.to_string();
    let reason = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    (
        loc.as_ref().map(|l| l.line()),
        loc.as_ref().map(|l| l.column()),
        reason,
    )
}

/// Resolve a path from the config relative to the config file's directory.
pub fn relative_to(config_file: &str, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        return p;
    }
    match Path::new(config_file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p,
    }
}

/// Strip one trailing newline (`\n` or `\r\n`): secrets and keys read from files and stdin.
pub fn strip_one_newline(input: &[u8]) -> &[u8] {
    if let Some(rest) = input.strip_suffix(b"\r\n") {
        rest
    } else if let Some(rest) = input.strip_suffix(b"\n") {
        rest
    } else {
        input
    }
}

/// `ip:port`, as the listeners take it.
pub fn check_socket_addr(s: &str) -> Result<(), String> {
    s.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not an ip:port socket address"))
}

/// Whether a URL may use plain http: only loopback hosts.
pub fn is_loopback_url(u: &url::Url) -> bool {
    match u.host() {
        // Non-special schemes (`redis://`) keep an IP address as an opaque host name.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parse a URL the config names (`what`: the setting). A value without `scheme://` (`127.0.0.1:9000`,
/// `idp.example.com/realms/x`) is refused with the URL to write instead, with `scheme`.
pub fn parse_url(what: &str, s: &str, scheme: &str) -> Result<url::Url, String> {
    if !s.contains("://") {
        let bare = s.trim_start_matches('/');
        return Err(format!(
            "{what} {s:?} is not a URL: write {scheme}://{bare}"
        ));
    }
    url::Url::parse(s).map_err(|e| format!("{what} {s:?}: {e}"))
}

/// A URL the gateway fetches from (issuer, JWKS, introspection): https, or plain http on
/// loopback only.
pub fn check_fetch_url(what: &str, s: &str) -> Result<(), String> {
    let u = parse_url(what, s, "https")?;
    match u.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_url(&u) => Ok(()),
        "http" => Err(format!(
            "{what} {s:?}: must be https (plain http is allowed only for loopback hosts): write {}",
            s.replacen("http://", "https://", 1)
        )),
        other => Err(format!(
            "{what} {s:?}: unsupported scheme {other} (write https://)"
        )),
    }
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = strsim::osa_distance(&lower, &c.to_ascii_lowercase());
            (d, c)
        })
        .filter(|(d, c)| {
            // A third of the longer word, at least one edit, at most three.
            let limit = (word.len().max(c.len()) / 3).clamp(1, 3);
            *d <= limit
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `names` for a message: `"a", "b"`, or `none` when empty.
pub fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn paths_compose() {
        let e = CompileError::new("tools", "x").within("routes[2]");
        assert_eq!(e.at, "routes[2].tools");
        let e = CompileError::new("", "x").within("routes[2]");
        assert_eq!(e.at, "routes[2]");
        let e = CompileError::new("[1]", "x").within("issuers");
        assert_eq!(e.at, "issuers[1]");
        assert_eq!(e.to_string(), "x");
    }

    #[test]
    fn loopback_urls_of_any_scheme() {
        let lo = |s: &str| is_loopback_url(&url::Url::parse(s).unwrap());
        assert!(lo("redis://127.0.0.1:6379/0"));
        assert!(lo("redis://[::1]:6379"));
        assert!(lo("redis://localhost"));
        assert!(lo("http://127.0.0.1:1"));
        assert!(!lo("redis://10.0.0.1:6379"));
        assert!(!lo("redis://127.0.0.1.example.com"));
    }

    #[test]
    fn fetch_urls() {
        assert!(check_fetch_url("x", "https://as.example.com").is_ok());
        assert!(check_fetch_url("x", "http://127.0.0.1:4000/j").is_ok());
        assert!(check_fetch_url("x", "http://localhost/j").is_ok());
        assert!(check_fetch_url("x", "http://as.example.com/j").is_err());
        assert!(check_fetch_url("x", "ftp://as.example.com/j").is_err());
    }
}
