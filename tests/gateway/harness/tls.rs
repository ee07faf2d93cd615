//! TLS and HTTP/2: a throw-away CA made with the `openssl` command ([`Pki`]) and every client
//! the suite speaks TLS with: a raw TLS connection with the ALPN of choice ([`tls_connect`],
//! [`tls_h1`], for the raw HTTP/1.1 client of [`super::http`]), the `h2` crate over it
//! ([`h2_connect`], [`h2_send`]: frames and pseudo-headers reqwest would normalise), and a
//! reqwest client pinned to the CA and to the gateway's address ([`https_client`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;

use super::http::IO_TIMEOUT;
use super::tokens::random_hex;

/// The TLS name every gateway certificate carries (and the clients ask for).
pub const TLS_NAME: &str = "mcp.example.com";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS tests need the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA made with openssl, and the certificates it signs, as files in its own
/// temporary directory (`ca.pem`, `<name>.pem`, `<name>.key`).
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mcpgate test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        Pki { dir, ca_pem }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `<name>.pem` and `<name>.key` (P-256) with the X.509 extensions `ext` (one per
    /// line, openssl `-extfile` syntax); returns the certificate (PEM, leaf only) and key paths.
    pub fn issue(&self, name: &str, ext: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let cn = format!("/CN={name}");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &cn,
            ],
        );
        let serial = format!("0x{}", random_hex(8));
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
        (d.join(pem), d.join(key))
    }

    /// A server certificate for mcp.example.com (and localhost): (chain PEM, key PEM, leaf
    /// DER).
    pub fn leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        let (pem, key) = self.issue(
            name,
            "subjectAltName=DNS:mcp.example.com,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        let cert = std::fs::read_to_string(pem).unwrap();
        let b64: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        (
            format!("{cert}{}", self.ca_pem),
            std::fs::read_to_string(key).unwrap(),
            der,
        )
    }

    /// A TLS acceptor for a mock server presenting a certificate of this CA with the
    /// X.509 extensions `ext` (e.g. `subjectAltName=IP:127.0.0.1`), under `name`.
    pub fn acceptor(&self, name: &str, ext: &str) -> tokio_rustls::TlsAcceptor {
        use rustls_pki_types::pem::PemObject as _;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (pem, key) = self.issue(name, ext);
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(pem)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }

    /// The CA certificate's file (`ca.pem`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf certificate for the gateway written to `dir` as `cert.pem`/`key.pem`, and the
    /// `tls:` lines of `listen` that name them.
    pub fn gateway_tls(&self, dir: &Path) -> String {
        let (cert, key, _) = self.leaf("gateway");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        format!(
            "  tls:\n    cert: {}\n    key: {}\n",
            c.display(),
            k.display()
        )
    }
}

/// A TLS connection to the gateway at `addr` trusting `ca_pem`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(TLS_NAME).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A TLS connection for HTTP/1.1 (ALPN `http/1.1`), for [`super::http::exchange`].
pub async fn tls_h1(addr: SocketAddr, ca_pem: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_connect(addr, ca_pem, b"http/1.1").await
}

/// An HTTP/2 answer.
#[derive(Debug)]
pub struct H2Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl H2Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {} {:?} {:?}",
                self.status,
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A TLS connection speaking HTTP/2 to the gateway, the connection driven on a task.
pub async fn h2_connect(addr: SocketAddr, ca_pem: &str) -> h2::client::SendRequest<Bytes> {
    let tls = tls_connect(addr, ca_pem, b"h2").await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A request for `https://mcp.example.com<path>`.
pub fn h2_req(method: &str, path: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(format!("https://{TLS_NAME}{path}"))
}

/// Sends `req` with `body` (none: END_STREAM on the HEADERS) and reads the whole answer.
pub async fn h2_send(
    send: &mut h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    body: Option<&[u8]>,
) -> Result<H2Resp, String> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut ready = send.clone().ready().await.map_err(|e| e.to_string())?;
        let (resp, mut stream) = ready
            .send_request(req, body.is_none())
            .map_err(|e| format!("send_request: {e}"))?;
        if let Some(b) = body {
            // Errors here surface on the response.
            let _ = stream.send_data(Bytes::copy_from_slice(b), true);
        }
        let resp = resp.await.map_err(|e| format!("response: {e:?}"))?;
        let (parts, mut recv) = resp.into_parts();
        let mut out = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| format!("body: {e:?}"))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        *send = ready;
        Ok(H2Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: out,
        })
    })
    .await
    .map_err(|_| "timeout".to_string())?
}

/// A reqwest client for the TLS gateway at `addr` (as `mcp.example.com`), trusting the CA of
/// `pki`: HTTP/1.1 only when `h1`, else HTTP/2 by ALPN. No connection pooling, no proxy.
pub fn https_client(pki: &Pki, addr: SocketAddr, h1: bool) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .resolve(TLS_NAME, addr)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(IO_TIMEOUT);
    if h1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}
