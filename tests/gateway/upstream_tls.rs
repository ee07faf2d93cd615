//! TLS to the upstream: a private CA and a client certificate (issue 5), against a real TLS
//! server that demands a client certificate (`openssl s_server -Verify`). The CA, server and
//! client certificates are made with the `openssl` command at test time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed for this test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ca.pem/ca.key, server.pem/server.key (localhost) and client.pem/client.key, all signed by the CA.
fn make_pki(dir: &Path) {
    openssl(
        dir,
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
            "1",
            "-subj",
            "/CN=mcpgate test CA",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -www` on a free loopback port, requiring a client certificate from our CA.
async fn s_server(dir: &Path) -> (SServer, u16) {
    let port = closed_port();
    let child = Command::new("openssl")
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (SServer(child), port)
}

fn config(port: u16, admin: u16, upstream_port: u16, dir: &Path, tls: &str) -> String {
    format!(
        r#"
listen: {{address: "127.0.0.1:{port}", public_url: "https://mcp.example.com", threads: 1}}
admin: {{address: "127.0.0.1:{admin}"}}
routes:
  - name: secure
    path_prefix: /secure
    upstream: https://localhost:{upstream_port}
    rewrite_prefix: /
    auth: none
{tls}"#,
        tls = tls.replace("{DIR}", &dir.display().to_string())
    )
}

#[tokio::test]
async fn upstream_with_private_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let (_server, up) = s_server(dir.path()).await;
    let full = "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n      client_cert: {DIR}/client.pem\n      client_key: {DIR}/client.key\n";
    let d = dir.path().to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, full)).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 200, "{r}\n{}", gw.logs());
    // s_server -www describes the session; it saw our client certificate.
    assert!(r.text().contains("s_server"), "{r}");
}

#[tokio::test]
async fn upstream_tls_failures_are_502_never_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let (_server, up) = s_server(dir.path()).await;
    // Trusts the CA but presents no client certificate: the upstream refuses the handshake.
    let ca_only = "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n";
    let d = dir.path().to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, ca_only)).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 502, "{r}");
    drop(gw);
    // No private CA: the system roots do not know the test CA.
    let d = dir.path().to_path_buf();
    let gw = Gateway::start(move |p, a| config(p, a, up, &d, "")).await;
    let r = send_to(gw.addr(), &Req::get("/secure/")).await.unwrap();
    assert_eq!(r.status, 502, "{r}");
}

#[tokio::test]
async fn bad_upstream_tls_files_are_a_rejected_config() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    std::fs::write(
        dir.path().join("garbage.pem"),
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
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, config(1, 2, 3, dir.path(), tls)).unwrap();
        let out = Command::new(gateway_bin())
            .args(["check", "--config", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("upstream_tls"), "{what}: {err}");
    }
    // and upstream_tls on a plain-http upstream is refused too
    let file = dir.path().join("c.yaml");
    let text = config(
        1,
        2,
        3,
        dir.path(),
        "    upstream_tls:\n      ca_file: {DIR}/ca.pem\n",
    )
    .replace("https://localhost:3", "http://localhost:3");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(gateway_bin())
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
