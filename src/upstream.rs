//! Upstream addresses (a route's `upstream` and `upstream_tls`): parsed and loaded once
//! from the config, resolved when a request needs them.
//!
//! An IP literal is used as is. A host name is resolved asynchronously at request time
//! through a small cache (30 s), so a config naming a Kubernetes Service passes
//! `mcpgate check` anywhere and follows DNS changes without a reload, and no request
//! blocks a worker on the system resolver.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::compile::{relative_to, CompileError};

/// Deadline of resolving an upstream host name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a resolved address is used before resolving again (follows DNS changes).
const RESOLVE_TTL: Duration = Duration::from_secs(30);
/// Host names whose addresses are cached at once (routes name a handful).
const RESOLVE_CACHE_ENTRIES: u64 = 1024;

/// A route's `upstream_tls`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// PEM CA certificates that verify the upstream (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key presented to the upstream (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Where a route forwards: its `upstream`, and the TLS settings for an `https://` one.
#[derive(Debug)]
pub struct RouteUpstream {
    pub addr: Upstream,
    /// Private CA and client certificate for an `https://` upstream.
    pub tls: Option<UpstreamTls>,
    /// The files `tls` came from (watched for reloads).
    pub tls_files: Vec<PathBuf>,
}

impl RouteUpstream {
    /// Check and compile `upstream` and `upstream_tls` (files relative to `source`, the
    /// config file, loaded and checked now).
    pub fn compile(
        upstream: &str,
        tls: Option<FileUpstreamTls>,
        source: &str,
    ) -> Result<RouteUpstream, CompileError> {
        let addr = Upstream::parse(upstream).map_err(|e| CompileError::new("upstream", e))?;
        let (tls, tls_files) = match tls {
            None => (None, Vec::new()),
            Some(_) if !addr.tls => {
                return Err(CompileError::new(
                    "upstream_tls",
                    "upstream_tls needs an https:// upstream",
                ));
            }
            Some(t) => {
                let ca = t.ca_file.map(|p| relative_to(source, p));
                let cert = t.client_cert.map(|p| relative_to(source, p));
                let key = t.client_key.map(|p| relative_to(source, p));
                let loaded = UpstreamTls::load(ca.as_deref(), cert.as_deref(), key.as_deref())
                    .map_err(|e| CompileError::new("upstream_tls", e))?;
                let files = [ca, cert, key].into_iter().flatten().collect();
                (Some(loaded), files)
            }
        };
        Ok(RouteUpstream {
            addr,
            tls,
            tls_files,
        })
    }
}

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
    /// `scheme://host:port` with the port always written: the upstream's identity for
    /// session bindings (two routes with this origin reach the same server).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    pub fn parse(s: &str) -> Result<Upstream, String> {
        let u = crate::compile::parse_url("upstream", s, "http")?;
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

/// TLS to an `https://` upstream beyond the system roots: a private CA and a client
/// certificate. Everything is loaded and checked when the config compiles, so a bad file
/// is a rejected config, never a failure (or a pingora panic) on a request.
pub struct UpstreamTls {
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    pub client: Option<Arc<pingora_core::utils::tls::CertKey>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client.is_some())
            .finish()
    }
}

fn pem_certs(path: &Path, what: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate found", path.display()));
    }
    certs
        .into_iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .map(|_| c.as_ref().to_vec())
                .map_err(|e| {
                    format!(
                        "{what} {}: not a valid X.509 certificate: {e}",
                        path.display()
                    )
                })
        })
        .collect()
}

impl UpstreamTls {
    pub fn load(
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<UpstreamTls, String> {
        use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
        let ca = match ca_file {
            Some(p) => {
                let list: Vec<WrappedX509> = pem_certs(p, "upstream_tls.ca_file")?
                    .into_iter()
                    .map(|der| WrappedX509::new(der, parse_x509))
                    .collect();
                Some(Arc::from(list.into_boxed_slice()))
            }
            None => None,
        };
        let client = match (client_cert, client_key) {
            (Some(c), Some(k)) => {
                let certs = pem_certs(c, "upstream_tls.client_cert")?;
                let key = PrivateKeyDer::from_pem_file(k)
                    .map_err(|e| format!("upstream_tls.client_key {}: {e}", k.display()))?;
                let raw = key.secret_der().to_vec();
                // pingora converts the key back the same way and unwraps it: check now.
                PrivateKeyDer::try_from(raw.clone())
                    .map_err(|e| format!("upstream_tls.client_key {}: {e}", k.display()))?;
                Some(Arc::new(CertKey::new(certs, raw)))
            }
            (None, None) => None,
            _ => return Err("upstream_tls: client_cert and client_key go together".into()),
        };
        Ok(UpstreamTls { ca, client })
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
                .max_capacity(RESOLVE_CACHE_ENTRIES)
                .time_to_live(RESOLVE_TTL)
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
                    RESOLVE_TIMEOUT,
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
