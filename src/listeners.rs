//! The listeners and the process around them: the `listen`, `admin` and `shutdown` sections.
//!
//! A domain module (it owns its part of the configuration and imports only the bottom
//! layer): the public listener's address, its public URL (the origin every resource,
//! metadata URL and DPoP `htu` derives from, never the request's `Host`), its worker
//! threads and TLS certificate; the admin listener's address and the admin token
//! `POST /revocations` requires; the shutdown grace period.
//!
//! The certificate and key are loaded when a config is compiled, so a config whose files
//! are missing or do not match is rejected like any other bad config and the running
//! certificate stays (`server` serves the certificate of the current snapshot at each
//! handshake, so a reload swaps it without a restart).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::compile::{check_socket_addr, relative_to, strip_one_newline, At, CompileError};

// ---------------------------------------------------------------------------------------------
// File layer
// ---------------------------------------------------------------------------------------------

/// `listen`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileListen {
    pub address: String,
    pub public_url: String,
    pub threads: Option<usize>,
    pub tls: Option<FileTls>,
}

/// `listen.tls`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `admin`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: String,
    /// File holding the token that `POST /revocations` requires (relative to the config).
    pub token_file: Option<PathBuf>,
}

/// `shutdown`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileShutdown {
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
}

impl Default for FileShutdown {
    fn default() -> Self {
        FileShutdown {
            grace_seconds: default_grace(),
        }
    }
}

fn default_grace() -> u64 {
    30
}

/// Longest `shutdown.grace_seconds`: an orchestrator waits no longer before killing.
const MAX_GRACE_SECONDS: u64 = 3600;

// ---------------------------------------------------------------------------------------------
// Compiled layer
// ---------------------------------------------------------------------------------------------

/// The gateway's public base URL, split once.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    pub url: String,
    pub scheme: String,
    /// `host[:port]` as it appears in the URL (port omitted when default).
    pub authority: String,
}

/// TLS certificate and key files of the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin token: only its SHA-256 is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub file: PathBuf,
    pub sha256: [u8; 32],
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl AdminToken {
    /// Whether `presented` is the admin token (constant time over the digests).
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest as _;
        let d: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        aws_lc_rs::constant_time::verify_slices_are_equal(&d, &self.sha256).is_ok()
    }
}

/// The compiled `listen`, `admin` and `shutdown` sections.
#[derive(Debug)]
pub struct Listeners {
    /// `listen.address`.
    pub address: String,
    pub public: PublicUrl,
    pub threads: usize,
    /// TLS certificate and key files for the public listener, and what they hold
    /// (loaded by [`Listeners::load_tls`]).
    pub tls: Option<TlsFiles>,
    pub tls_key: Option<Arc<CertifiedKey>>,
    /// `admin.address`.
    pub admin_address: String,
    /// `admin.token_file`: what `POST /revocations` requires.
    pub admin_token: Option<AdminToken>,
    /// After SIGTERM, how long in-flight requests and streams may take to finish.
    pub shutdown_grace_seconds: u64,
}

impl Listeners {
    /// Check and compile the three sections; `source` is the config file (relative paths).
    pub fn compile(
        source: &str,
        listen: FileListen,
        admin: FileAdmin,
        shutdown: FileShutdown,
    ) -> Result<Listeners, CompileError> {
        let public = parse_public_url(&listen.public_url).at("listen.public_url")?;
        check_socket_addr(&listen.address)
            .map_err(|e| format!("listen.address: {e}"))
            .at("listen.address")?;
        check_socket_addr(&admin.address)
            .map_err(|e| format!("admin.address: {e}"))
            .at("admin.address")?;
        if listen.address == admin.address {
            return Err(CompileError::new(
                "admin.address",
                "admin.address must differ from listen.address: the admin listener is never public",
            ));
        }
        let threads = match listen.threads {
            Some(0) => {
                return Err(CompileError::new(
                    "listen.threads",
                    "listen.threads must be at least 1",
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        if shutdown.grace_seconds > MAX_GRACE_SECONDS {
            return Err(CompileError::new(
                "shutdown.grace_seconds",
                "shutdown.grace_seconds must be at most 3600",
            ));
        }
        let admin_token = admin
            .token_file
            .map(|f| load_admin_token(relative_to(source, f)))
            .transpose()
            .at("admin.token_file")?;
        let tls = listen.tls.map(|t| TlsFiles {
            cert: relative_to(source, t.cert),
            key: relative_to(source, t.key),
        });
        Ok(Listeners {
            address: listen.address,
            public,
            threads,
            tls,
            tls_key: None,
            admin_address: admin.address,
            admin_token,
            shutdown_grace_seconds: shutdown.grace_seconds,
        })
    }

    /// Load the certificate and key named by `listen.tls` (last, once every other setting
    /// passed: reading files is the slowest check).
    pub fn load_tls(&mut self) -> Result<(), CompileError> {
        if let Some(t) = &self.tls {
            self.tls_key = Some(load_certified_key(&t.cert, &t.key).at("listen.tls")?);
        }
        Ok(())
    }
}

/// Read `admin.token_file`: one line (a trailing newline is stripped), at least 16
/// visible ASCII characters.
fn load_admin_token(file: PathBuf) -> Result<AdminToken, String> {
    use sha2::Digest as _;
    let raw =
        std::fs::read(&file).map_err(|e| format!("admin.token_file {}: {e}", file.display()))?;
    let token = strip_one_newline(&raw);
    if token.len() < 16 || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!(
            "admin.token_file {}: the token must be at least 16 visible ASCII characters, \
             without spaces, on one line",
            file.display()
        ));
    }
    Ok(AdminToken {
        sha256: sha2::Sha256::digest(token).into(),
        file,
    })
}

fn parse_public_url(s: &str) -> Result<PublicUrl, String> {
    let u = crate::compile::parse_url("listen.public_url", s, "https")?;
    match u.scheme() {
        "https" => {}
        // Like an issuer: clients send their tokens to this origin, so plain http only
        // where nothing leaves the machine.
        "http" if crate::compile::is_loopback_url(&u) => {}
        "http" => {
            return Err(format!(
                "listen.public_url {s:?}: must be https (plain http is allowed only for \
                 loopback hosts; with TLS terminated in front of the gateway, the public URL \
                 is still https): write {}",
                s.replacen("http://", "https://", 1)
            ))
        }
        _ => {
            return Err(format!(
                "listen.public_url {s:?}: scheme must be http or https"
            ))
        }
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "listen.public_url {s:?}: must be an origin (scheme, host, port) with no path"
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("listen.public_url {s:?}: no host"))?;
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(PublicUrl {
        url: format!("{}://{}", u.scheme(), authority),
        scheme: u.scheme().to_string(),
        authority,
    })
}

/// Load a PEM certificate chain and private key, and check that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("listen.tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("listen.tls.cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "listen.tls.cert {}: no certificate found",
            cert.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("listen.tls.key {}: {e}", key.display()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| format!("listen.tls.key {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("listen.tls: certificate and key do not match: {e}"))?;
    Ok(Arc::new(ck))
}
