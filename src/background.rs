//! Side work: the small dedicated runtime every outbound HTTP call runs on (JWKS fetches,
//! introspection, metadata discovery) and the HTTP client with its bounds.
//!
//! One runtime, so the reqwest connection pool is never shared across pingora's
//! per-service runtimes, and no request-path worker ever blocks on the network for side
//! work. Also where the gateway's own background tasks (signal handlers) run.

use std::sync::Arc;
use std::time::Duration;

/// Deadline of one outbound fetch (a JWKS, a metadata document).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of connecting to an authorization server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest document fetched: a JWKS or a metadata document is a few kilobytes.
const MAX_BODY: usize = 1024 * 1024;
/// Redirects followed (same origin only).
const MAX_REDIRECTS: usize = 3;

/// The outbound HTTP client and the runtime it lives on.
pub struct Fetcher {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// The same without following any redirect (token endpoint calls).
    unredirected: reqwest::Client,
}

impl Fetcher {
    pub fn new() -> Result<Arc<Fetcher>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcpgate-fetch")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start fetch runtime: {e}"))?;
        let client = http_client(None)?;
        let unredirected = build(None, reqwest::redirect::Policy::none())?;
        Ok(Arc::new(Fetcher {
            runtime,
            client,
            unredirected,
        }))
    }

    /// Run a future on the fetch runtime and await it from any runtime.
    pub async fn run<F, T>(&self, fut: F) -> Option<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(fut).await.ok()
    }

    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(fut);
    }

    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The client for requests that carry a secret in their body or headers to one URL (a
    /// token endpoint): it follows no redirect, so a 3xx is the answer and nothing is sent
    /// again elsewhere.
    pub fn unredirected_client(&self) -> reqwest::Client {
        self.unredirected.clone()
    }

    /// [`Fetcher::unredirected_client`] trusting `roots` (an issuer's `ca_file`) when given:
    /// for calls that carry the gateway's client secret and a caller's token
    /// (introspection). Should the client not build, the shared unredirected one is returned
    /// and its calls fail verification, which is logged.
    pub fn unredirected_client_for(&self, roots: Option<&TrustRoots>) -> reqwest::Client {
        match roots {
            None => self.unredirected_client(),
            Some(r) => build(Some(r), reqwest::redirect::Policy::none()).unwrap_or_else(|e| {
                tracing::error!(ca_file = %r.file.display(), error = %e, "cannot build an HTTP client with this CA");
                self.unredirected_client()
            }),
        }
    }

    /// The client for fetches that trust `roots` (an issuer's `ca_file`) instead of the
    /// system roots; the shared client without. The roots were checked when the config
    /// compiled ([`TrustRoots::load`]); should the client still not build, the shared one
    /// is returned and its fetches fail verification, which is logged.
    pub fn client_for(&self, roots: Option<&TrustRoots>) -> reqwest::Client {
        match roots {
            None => self.client(),
            Some(r) => http_client(Some(r)).unwrap_or_else(|e| {
                tracing::error!(ca_file = %r.file.display(), error = %e, "cannot build an HTTP client with this CA");
                self.client()
            }),
        }
    }
}

/// PEM CA certificates an issuer's fetches (discovery, JWKS, introspection) trust instead
/// of the system roots: a private CA (`issuers[].ca_file`).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustRoots {
    pub file: std::path::PathBuf,
    pub pem: Arc<[u8]>,
}

impl std::fmt::Debug for TrustRoots {
    // The file and a digest of its contents: a changed CA changes every fingerprint built
    // from `Debug` (the issuer's key store and cached verdicts are then renewed).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(&self.pem);
        write!(f, "TrustRoots({}, sha256:", self.file.display())?;
        for b in &d[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl TrustRoots {
    /// Read and check a PEM CA bundle: at least one certificate, each one X.509, and a
    /// client that trusts them builds.
    pub fn load(file: std::path::PathBuf) -> Result<TrustRoots, String> {
        let pem = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let roots = TrustRoots {
            file,
            pem: Arc::from(pem),
        };
        use rustls_pki_types::pem::PemObject as _;
        let name = roots.file.display();
        let ders = rustls_pki_types::CertificateDer::pem_slice_iter(&roots.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{name}: not a PEM certificate bundle: {e}"))?;
        if ders.is_empty() {
            return Err(format!("{name}: no PEM certificate found"));
        }
        for der in &ders {
            x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("{name}: not an X.509 certificate: {e}"))?;
        }
        http_client(Some(&roots))?;
        Ok(roots)
    }

    fn certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let certs = reqwest::Certificate::from_pem_bundle(&self.pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", self.file.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate found", self.file.display()));
        }
        Ok(certs)
    }
}

/// The outbound HTTP client with its bounds: timeouts, same-origin redirects, the user
/// agent; trusting `roots` only when given.
pub fn http_client(roots: Option<&TrustRoots>) -> Result<reqwest::Client, String> {
    build(
        roots,
        reqwest::redirect::Policy::custom(|attempt| {
            // Follow at most 3 redirects, and only on the same origin: scheme, host and
            // port.
            let same = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > MAX_REDIRECTS || !same {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }),
    )
}

/// The outbound HTTP client with its bounds and `redirects`.
fn build(
    roots: Option<&TrustRoots>,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirects)
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
    if let Some(r) = roots {
        builder = builder.tls_certs_only(r.certificates()?);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// GET a JSON document with a size cap. Returns the body and the Cache-Control max-age.
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<u64>), String> {
    let mut resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
    }
    let max_age = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("GET {url}: body larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `Authorization: Basic` for a client at an authorization server (RFC 6749 §2.3.1: the id
/// and the secret each form-encoded before Base64).
pub fn client_secret_basic(client_id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Why [`post_form`] got no complete answer.
pub enum PostError {
    /// The deadline passed (reqwest's own, or the whole call's).
    Timeout,
    /// The request failed before an answer or while reading it.
    Transport(reqwest::Error),
    /// The answer's body is over the bound.
    TooLarge,
}

/// POST a form (`application/x-www-form-urlencoded`, asking for JSON) to an authorization
/// server endpoint with an optional `Authorization`, within `timeout` for the whole call:
/// the status and the body, at most `max` bytes. Introspection and token requests.
pub async fn post_form(
    client: &reqwest::Client,
    endpoint: &str,
    body: String,
    authorization: Option<String>,
    timeout: Duration,
    max: usize,
) -> Result<(u16, Vec<u8>), PostError> {
    let mut req = client
        .post(endpoint)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .timeout(timeout);
    if let Some(a) = authorization {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            PostError::Timeout
        } else {
            PostError::Transport(e)
        }
    };
    let call = async {
        let mut resp = req.body(body).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max {
                return Err(PostError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(PostError::Timeout))
}

/// The cause of a failed outbound request, named by kind so an operator knows where to
/// look: `DNS: …` (the host does not resolve), `connect: …` (refused, unreachable),
/// `TLS: …` (with the certificate problem: unknown CA, wrong host, expired), `timed out`,
/// else reqwest's own chain. The URL is left out (callers name it).
pub fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    // The chain, each error's own message; an io::Error's inner error is reached through
    // get_ref (its source() skips it).
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = next {
        chain.push(err);
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    for err in &chain {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return format!("TLS: {}", tls_problem(t));
        }
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    let innermost = chain
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string());
    if chain.iter().any(|c| c.to_string().starts_with("dns error")) {
        return format!("DNS: the host does not resolve ({innermost})");
    }
    if e.is_connect() {
        return format!("connect: {innermost}");
    }
    let mut out = without_url(e);
    for c in &chain {
        out.push_str(": ");
        out.push_str(&c.to_string());
    }
    out
}

/// reqwest's message without the URL it appends (callers name the URL themselves).
fn without_url(e: &reqwest::Error) -> String {
    let s = e.to_string();
    match e.url() {
        Some(u) => s.replace(&format!(" ({u})"), ""),
        None => s,
    }
}

/// A TLS failure in words, the certificate problem first.
fn tls_problem(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                C::UnknownIssuer => {
                    "the server's certificate is signed by an unknown CA (a private CA? set the \
                     issuer's ca_file)"
                        .to_string()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("the server's certificate is not valid for this host name ({c:?})")
                }
                C::Expired | C::ExpiredContext { .. } => {
                    format!("the server's certificate has expired ({c:?})")
                }
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    format!("the server's certificate is not valid yet ({c:?})")
                }
                C::BadSignature => "the server's certificate does not verify with the trusted CA \
                                    of its issuer's name (another CA of the same name? check \
                                    ca_file)"
                    .to_string(),
                other => format!("the server's certificate is refused: {other:?}"),
            };
            format!("certificate problem: {what}")
        }
        other => other.to_string(),
    }
}

fn parse_max_age(cc: &str) -> Option<u64> {
    cc.split(',').find_map(|d| {
        let d = d.trim();
        let v = d
            .strip_prefix("max-age=")
            .or_else(|| d.strip_prefix("s-maxage="))?;
        v.trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(600));
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("s-maxage=30, max-age=10"), Some(30));
    }
}
