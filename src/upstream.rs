//! Upstream addresses: parsed once from the config, resolved when a request needs them.
//!
//! An IP literal is used as is. A host name is resolved asynchronously at request time
//! through a small cache (30 s), so a config naming a Kubernetes Service passes
//! `mcpgate check` anywhere and follows DNS changes without a reload, and no request
//! blocks a worker on the system resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use moka::future::Cache;

#[derive(Debug)]
pub struct Upstream {
    pub tls: bool,
    /// Host without brackets, for SNI and resolution.
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the upstream `Host` header.
    pub authority: String,
    /// Set when `host` is an IP literal.
    pub literal: Option<SocketAddr>,
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Upstream, String> {
        let u = url::Url::parse(s).map_err(|e| format!("upstream {s:?}: {e}"))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "upstream {s:?}: scheme {other} is not http or https"
                ))
            }
        };
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
            return Err(format!(
                "upstream {s:?}: must be an origin with no path (use rewrite_prefix to change paths)"
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("upstream {s:?}: must not contain credentials"));
        }
        let host_str = u
            .host_str()
            .ok_or_else(|| format!("upstream {s:?}: no host"))?;
        let host = host_str
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = match u.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_string(),
        };
        let literal = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(Upstream {
            tls,
            host,
            port,
            authority,
            literal,
        })
    }
}

/// Host-name resolution with a short-lived cache shared by all routes.
pub struct Resolver {
    cache: Cache<(String, u16), SocketAddr>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            cache: Cache::builder()
                .max_capacity(1024)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }
}

impl Resolver {
    pub async fn resolve(&self, up: &Upstream) -> Result<SocketAddr, String> {
        if let Some(a) = up.literal {
            return Ok(a);
        }
        let key = (up.host.clone(), up.port);
        self.cache
            .try_get_with(key, async {
                let lookup = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::lookup_host((up.host.as_str(), up.port)),
                )
                .await
                .map_err(|_| format!("resolving {} timed out", up.host))?
                .map_err(|e| format!("cannot resolve {}: {e}", up.host))?;
                let mut addrs: Vec<SocketAddr> = lookup.collect();
                // Prefer IPv4 when both exist: loopback services often bind v4 only.
                addrs.sort_by_key(|a| a.is_ipv6());
                addrs
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("{} resolves to no address", up.host))
            })
            .await
            .map_err(|e: std::sync::Arc<String>| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_origins() {
        let u = Upstream::parse("http://127.0.0.1:3001").unwrap();
        assert_eq!(u.literal, Some("127.0.0.1:3001".parse().unwrap()));
        assert_eq!(u.authority, "127.0.0.1:3001");
        let u = Upstream::parse("https://github-mcp.tools.svc").unwrap();
        assert!(u.tls && u.literal.is_none() && u.port == 443);
        let u = Upstream::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.host, "::1");
        assert!(Upstream::parse("http://h/path").is_err());
        assert!(Upstream::parse("ftp://h").is_err());
        assert!(Upstream::parse("http://u:p@h").is_err());
    }

    #[tokio::test]
    async fn resolves_localhost() {
        let r = Resolver::default();
        let u = Upstream::parse("http://localhost:1234").unwrap();
        assert_eq!(r.resolve(&u).await.unwrap().port(), 1234);
    }
}
