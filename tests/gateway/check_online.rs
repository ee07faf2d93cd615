//! `mcpgate check --online`: each issuer's metadata, key set and introspection endpoint are
//! fetched with the gateway's own client, and a failure names its precise cause (DNS,
//! connect, TLS with the certificate problem, HTTP status, JSON, issuer mismatch, empty
//! key set, credentials refused). Every server is a loopback mock.

use serde_json::json;

use crate::harness::*;

/// `mcpgate check --online` on a config whose one issuer is `issuer` plus `extra` lines
/// (indented under the entry): (exit code, stdout, stderr).
fn check_online(issuer: &str, extra: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let [port, admin] = free_ports(2)[..] else {
        unreachable!()
    };
    let config = format!(
        "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://mcp.example.com\n\
         admin:\n  address: 127.0.0.1:{admin}\n\
         issuers:\n  - name: as\n    issuer: {issuer}\n{extra}\n\
         routes:\n  - name: mcp\n    path_prefix: /mcp\n    upstream: http://127.0.0.1:9\n"
    );
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, config).unwrap();
    run_cli(&["check", "--online", "--config", f.to_str().unwrap()], "")
}

/// The run failed, and one `FAIL` line holds every one of `want`.
fn assert_fails_with(r: &(i32, String, String), want: &[&str]) {
    let (code, out, err) = r;
    assert_eq!(*code, 1, "exit code; stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("FAIL") && want.iter().all(|w| l.contains(w))),
        "no FAIL line with {want:?} in:\n{out}"
    );
    assert!(out.contains("check(s) failed"), "{out}");
}

fn introspection_block(secret: &str) -> String {
    format!(
        "    introspection:\n      client_id: {CLIENT_ID}\n      client_secret: {}\n",
        serde_json::to_string(secret).unwrap()
    )
}

#[test]
fn a_working_issuer_passes_every_step() {
    let idp = MockIdp::start();
    let r = check_online(&idp.issuer(), &introspection_block(CLIENT_SECRET));
    let (code, out, err) = &r;
    assert_eq!(*code, 0, "{out}\n{err}");
    let meta = format!(
        "ok    metadata {}/.well-known/oauth-authorization-server: issuer matches",
        idp.issuer()
    );
    assert!(out.contains(&meta), "{out}");
    assert!(
        out.contains(&format!("ok    JWKS {}: ", idp.jwks_uri())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ok    introspection {}: reachable, the gateway's credentials are accepted",
            idp.endpoint()
        )),
        "{out}"
    );
    assert!(out.contains("online: all checks passed"), "{out}");
    // It asked the IdP what the gateway asks it, through the gateway's own calls.
    assert!(idp.jwks_fetches() >= 1);
    assert_eq!(idp.calls(), 1, "one introspection probe");
    // Without --online, nothing is fetched.
    let before = idp.total_requests();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "listen: {{address: 127.0.0.1:1, public_url: https://mcp.example.com}}\n\
             admin: {{address: 127.0.0.1:2}}\n\
             issuers: [{{name: as, issuer: \"{}\"}}]\n\
             routes: [{{name: mcp, path_prefix: /mcp, upstream: \"http://127.0.0.1:9\"}}]\n",
            idp.issuer()
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check", "--config", f.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("online"), "{out}");
    assert_eq!(idp.total_requests(), before);
}

#[test]
fn dns_failure_is_named() {
    // A label longer than 63 bytes cannot be put in a DNS query: the resolver refuses it
    // locally, so no query leaves the machine.
    let host = format!("{}.example", "a".repeat(70));
    let r = check_online(&format!("https://{host}"), "");
    assert_fails_with(&r, &[&format!("DNS {host}: the host does not resolve")]);
    assert!(r.1.contains("not checked (DNS failed)"), "{}", r.1);
    // A name that resolves (localhost, from /etc/hosts) is shown with its addresses.
    let idp = MockIdp::start();
    let (_, out, _) = check_online(
        &idp.issuer(),
        &format!("    jwks_uri: http://localhost:{}/jwks", idp.addr().port()),
    );
    assert!(out.contains("ok    DNS localhost: "), "{out}");
}

#[test]
fn connect_failure_is_named() {
    let port = free_port();
    let r = check_online(&format!("http://127.0.0.1:{port}"), "");
    assert_fails_with(
        &r,
        &[
            &format!("http://127.0.0.1:{port}/.well-known/"),
            "connect: ",
            "refused",
        ],
    );
}

#[test]
fn tls_failures_name_the_certificate_problem() {
    let pki = Pki::new();
    let idp = MockIdp::start_tls(&pki);
    // System roots: the mock's CA is unknown.
    let r = check_online(&idp.issuer(), "");
    assert_fails_with(
        &r,
        &[
            "TLS: certificate problem: the server's certificate is signed by an unknown CA",
            "ca_file",
        ],
    );
    // With its CA every step passes.
    let ca = format!("    ca_file: {}", pki.ca_file().display());
    let (code, out, err) = check_online(&idp.issuer(), &ca);
    assert_eq!(code, 0, "{out}\n{err}");
    // The right CA but another name: the certificate is for 127.0.0.1 only.
    let issuer = format!("https://localhost:{}", idp.addr().port());
    let r = check_online(&issuer, &ca);
    assert_fails_with(
        &r,
        &["TLS: certificate problem: the server's certificate is not valid for this host name"],
    );
}

#[test]
fn http_status_is_named() {
    let server = Server::start(|_| Reply::json(404, &json!({"error": "not_found"})));
    let r = check_online(&server.url(), "");
    assert_fails_with(
        &r,
        &[
            &format!("{}/.well-known/openid-configuration", server.url()),
            "HTTP 404",
        ],
    );
    // A key set URL that answers 500.
    let idp = MockIdp::start();
    idp.set_mode(IdpMode::Fail500);
    let r = check_online(&idp.issuer(), &format!("    jwks_uri: {}", idp.jwks_uri()));
    assert_fails_with(&r, &["JWKS: GET ", &idp.jwks_uri(), "HTTP 500"]);
    assert!(r.1.contains("metadata: not needed"), "{}", r.1);
}

#[test]
fn json_problems_are_named() {
    // Metadata that is not JSON.
    let server = Server::start(|_| Reply::full(200, "text/html", b"<html>login</html>".to_vec()));
    let r = check_online(&server.url(), "");
    assert_fails_with(&r, &["/.well-known/oauth-authorization-server: not JSON"]);
    // A key set that is not a JWK Set.
    let r = check_online(
        &server.url(),
        &format!("    jwks_uri: {}/jwks", server.url()),
    );
    assert_fails_with(&r, &["JWKS: ", "/jwks: JWKS is not a JWK Set"]);
}

#[test]
fn issuer_mismatch_shows_both_values() {
    // The Auth0 mistake the other way round: a trailing slash the IdP does not write.
    let idp = MockIdp::start();
    let configured = format!("{}/", idp.issuer());
    let r = check_online(&configured, "");
    assert_fails_with(
        &r,
        &[
            "issuer mismatch: the metadata says",
            &format!("{:?}", idp.issuer()),
            &format!("the config says {configured:?}"),
        ],
    );
}

#[test]
fn an_empty_key_set_is_named() {
    let idp = MockIdp::start();
    idp.set_jwks(json!({"keys": []}));
    let r = check_online(&idp.issuer(), "");
    assert_fails_with(
        &r,
        &[
            "JWKS at ",
            &idp.jwks_uri(),
            "no usable signing key (the key set is empty)",
        ],
    );
    // Keys that exist but none for the configured algorithms.
    idp.set_jwks(default_jwks());
    let r = check_online(&idp.issuer(), "    algorithms: [PS512]");
    assert_fails_with(&r, &["no usable signing key", "key #0"]);
}

#[test]
fn refused_introspection_credentials_are_named() {
    let idp = MockIdp::start();
    let r = check_online(&idp.issuer(), &introspection_block("wr0ng-secret-9f"));
    assert_fails_with(
        &r,
        &[
            &format!("introspection {}", idp.endpoint()),
            "HTTP 401: the AS refuses the gateway's client credentials",
            "client_secret_basic",
        ],
    );
    // The secret itself is never printed.
    assert!(
        !r.1.contains("wr0ng-secret-9f") && !r.2.contains("wr0ng-secret-9f"),
        "{}",
        r.1
    );
    // An unreachable configured endpoint.
    let port = free_port();
    let block = format!(
        "{}      endpoint: http://127.0.0.1:{port}/introspect\n",
        introspection_block(CLIENT_SECRET)
    );
    let r = check_online(&idp.issuer(), &block);
    assert_fails_with(&r, &["introspection http://127.0.0.1:", "connect: "]);
}
