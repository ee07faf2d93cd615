//! TLS to the upstream: a private CA and a client certificate (issue 5), against a real TLS
//! server that demands a client certificate (`openssl s_server -Verify`). The CA, server and
//! client certificates are made with the `openssl` command at test time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// The CA (`ca.pem`), a server certificate for localhost (`server.pem`/`server.key`) and a
/// client certificate (`client.pem`/`client.key`), in the CA's directory.
fn make_pki() -> Pki {
    let pki = Pki::new();
    pki.issue("server", "subjectAltName=DNS:localhost\n");
    pki.issue("client", "extendedKeyUsage=clientAuth\n");
    pki
}

/// `openssl s_server -www`, killed on drop.
struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -www` on a free loopback port, requiring a client certificate from our
/// CA. Retries on fresh ports when the chosen one was taken in the meantime.
async fn s_server(dir: &Path) -> (SServer, u16) {
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-CAfile",
                "ca.pem",
                "-Verify",
                "1",
                "-verify_return_error",
                "-www",
                "-quiet",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        // Up when it accepts connections, or gone (its port was taken: try another).
        let up = within(Duration::from_secs(10), || {
            let exited = !matches!(child.try_wait(), Ok(None));
            async move {
                exited
                    || tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
            }
        })
        .await;
        let running = matches!(child.try_wait(), Ok(None));
        let server = SServer(child);
        if up.is_ok() && running {
            return (server, port);
        }
    }
    panic!("s_server did not start");
}

/// The [`UPSTREAM_TLS`] fixture for a gateway on `port`/`admin` in front of the upstream on
/// `upstream_port`, with the `upstream_tls` lines `tls` (`{DIR}`: the PKI's directory).
fn config(port: u16, admin: u16, upstream_port: u16, dir: &Path, tls: &str) -> String {
    let tls = tls.replace("{DIR}", &dir.display().to_string());
    let (port, admin, upstream_port) = (
        port.to_string(),
        admin.to_string(),
        upstream_port.to_string(),
    );
    render(
        UPSTREAM_TLS,
        &[
            ("PORT", &port),
            ("ADMIN", &admin),
            ("UPSTREAM_PORT", &upstream_port),
            ("UPSTREAM_TLS", &tls),
        ],
    )
}

#[tokio::test]
async fn upstream_with_private_ca_and_client_certificate() {
    let pki = make_pki();
    let dir = pki.dir();
    let (_server, up) = s_server(dir).await;
    let full = "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n      client_cert: {DIR}/client.pem\n      client_key: {DIR}/client.key\n";
    let d = dir.to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, full)).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    // s_server -www describes the session; it saw our client certificate.
    assert!(r.text().contains("s_server"), "{r}");
}

#[tokio::test]
async fn upstream_tls_failures_are_502_never_plaintext() {
    let pki = make_pki();
    let dir = pki.dir();
    let (_server, up) = s_server(dir).await;
    // Trusts the CA but presents no client certificate: the upstream refuses the handshake.
    let ca_only = "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n";
    let d = dir.to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, ca_only)).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 502, "{r}");
    drop(gw);
    // No private CA: the system roots do not know the test CA.
    let d = dir.to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, "")).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 502, "{r}");
}

#[tokio::test]
async fn bad_upstream_tls_files_are_a_rejected_config() {
    let pki = make_pki();
    let dir = pki.dir();
    std::fs::write(
        dir.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases = [
        ("a CA file that is not a certificate", "    upstream_tls:\n      ca_file: {DIR}/garbage.pem\n"),
        ("a missing CA file", "    upstream_tls:\n      ca_file: {DIR}/nope.pem\n"),
        ("a certificate without its key", "    upstream_tls:\n      client_cert: {DIR}/client.pem\n"),
        ("a key that is not a key", "    upstream_tls:\n      client_cert: {DIR}/client.pem\n      client_key: {DIR}/ca.pem\n"),
    ];
    for (what, tls) in cases {
        let file = dir.join("c.yaml");
        std::fs::write(&file, config(1, 2, 3, dir, tls)).unwrap();
        let (code, _, err) = run_cli(&["check", "--config", file.to_str().unwrap()], "");
        assert_ne!(code, 0, "{what}: accepted");
        assert!(err.contains("upstream_tls"), "{what}: {err}");
    }
    // and upstream_tls on a plain-http upstream is refused too
    let file = dir.join("c.yaml");
    let text = config(
        1,
        2,
        3,
        dir,
        "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n",
    )
    .replace("https://localhost:3", "http://localhost:3");
    std::fs::write(&file, text).unwrap();
    let (code, _, _) = run_cli(&["check", "--config", file.to_str().unwrap()], "");
    assert_ne!(code, 0);
}
