//! `mcpgate doctor --route NAME --token FILE`: the gateway's own verdict on a token for a
//! route, explained check by check (expected and actual values), exit 0 when accepted and 1
//! when refused, and the token never printed.

use serde_json::json;

use crate::harness::*;

const RESOURCE: &str = "https://mcp.example.com/mcp";

struct Doctor {
    idp: MockIdp,
    dir: tempfile::TempDir,
}

impl Doctor {
    fn new(extra_issuer: &str) -> Doctor {
        let idp = MockIdp::start();
        let dir = tempfile::tempdir().unwrap();
        let [port, admin] = free_ports(2)[..] else {
            unreachable!()
        };
        let config = format!(
            "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://mcp.example.com\n\
             admin:\n  address: 127.0.0.1:{admin}\n\
             issuers:\n  - name: corp\n    issuer: {}\n{extra_issuer}\n\
             routes:\n  - name: mcp\n    path_prefix: /mcp\n    upstream: http://127.0.0.1:9\n\
             \x20   scopes: [mcp:read]\n    tools:\n      \"delete_*\": [mcp:admin]\n\
             \x20 - name: bound\n    path_prefix: /bound\n    upstream: http://127.0.0.1:9\n\
             \x20   dpop: required\n",
            idp.issuer()
        );
        std::fs::write(dir.path().join("c.yaml"), config).unwrap();
        Doctor { idp, dir }
    }

    fn tok(&self) -> Tok {
        Tok::new(&self.idp.issuer(), RESOURCE)
    }

    /// `mcpgate doctor` for `token` on `route`: (exit code, stdout, stderr). Checks that no
    /// part of the token appears in either output.
    fn run(&self, route: &str, token: &str) -> (i32, String, String) {
        let f = self.dir.path().join("token");
        std::fs::write(&f, format!("{token}\n")).unwrap();
        let config = self.dir.path().join("c.yaml");
        let r = run_cli(
            &[
                "doctor",
                "--config",
                config.to_str().unwrap(),
                "--route",
                route,
                "--token",
                f.to_str().unwrap(),
            ],
            "",
        );
        for part in token.split('.').filter(|p| p.len() >= 8) {
            assert!(
                !r.1.contains(part) && !r.2.contains(part),
                "a token segment was printed:\n{}\n{}",
                r.1,
                r.2
            );
        }
        r
    }
}

fn assert_line(out: &str, prefix: &str, want: &[&str]) {
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with(prefix) && want.iter().all(|w| l.contains(w))),
        "no {prefix:?} line with {want:?} in:\n{out}"
    );
}

#[test]
fn a_good_token_is_accepted_check_by_check() {
    let d = Doctor::new("");
    let t = d.tok().build();
    let (code, out, err) = d.run("mcp", &t);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_line(&out, "ok", &["header: Authorization: Bearer"]);
    assert_line(
        &out,
        "ok",
        &["JWT header: alg ES256, kid \"k1\", typ \"at+jwt\""],
    );
    assert_line(
        &out,
        "ok",
        &["iss: expected one of", &d.idp.issuer(), "actual"],
    );
    assert_line(&out, "ok", &["signature: verified with key \"k1\" ES256"]);
    assert_line(&out, "ok", &["exp: "]);
    assert_line(&out, "ok", &["scopes from [scope, scp]: \"mcp:read\""]);
    assert_line(&out, "ok", &["token step: accepted by issuer \"corp\""]);
    assert_line(&out, "ok", &["aud: expected one of", RESOURCE]);
    assert_line(
        &out,
        "ok",
        &["route scopes: required [mcp:read], granted [mcp:read]"],
    );
    assert_line(
        &out,
        "--",
        &["tools \"delete_*\": need [mcp:admin]: refused"],
    );
    assert_line(&out, "ok", &["DPoP: a Bearer token"]);
    assert!(out.contains("verdict: accepted"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn each_refusal_names_its_check_with_expected_and_actual() {
    let d = Doctor::new("");
    let now = now();
    // Expired.
    let t = d.tok().c("exp", json!(now - 3600)).build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &[&format!("exp: {}", now - 3600), "must be ≥ now − skew"],
    );
    assert_line(
        &out,
        "FAIL",
        &["token step: refused: HTTP 401 invalid_token: token is expired"],
    );
    // Another audience.
    let t = Tok::new(&d.idp.issuer(), "https://other.example.com/mcp").build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &[
            "aud: expected one of",
            RESOURCE,
            "actual \"https://other.example.com/mcp\"",
        ],
    );
    assert!(out.contains("verdict: refused"), "{out}");
    // Missing scope.
    let t = d.tok().scope("mcp:write").build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &["route scopes: required [mcp:read], granted [mcp:write]"],
    );
    // Signed by a key the issuer does not have (the kid exists: the signature fails).
    let t = d.tok().signer(Signer::Evil).build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(&out, "FAIL", &["signature: invalid for key \"k1\" ES256"]);
    // An unknown kid: the key set is listed.
    let t = d.tok().h("kid", json!("nope")).build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &["key: no key for kid \"nope\" and alg ES256; the key set has: \"k1\" ES256"],
    );
    // Another issuer.
    let t = Tok::new("https://evil.example.com", RESOURCE).build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &[&format!(
            "iss: expected one of {:?} (corp), actual \"https://evil.example.com\"",
            d.idp.issuer()
        )],
    );
    // A Bearer token on a route that requires DPoP.
    let bound = "https://mcp.example.com/bound";
    let (code, out, _) = d.run("bound", &Tok::new(&d.idp.issuer(), bound).build());
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &["DPoP: this resource requires a DPoP-bound token"],
    );
    // A DPoP-bound token is noted, its proof being per request.
    let t = Tok::new(&d.idp.issuer(), bound)
        .c("cnf", json!({"jkt": jkt(p_key())}))
        .build();
    let (code, out, _) = d.run("bound", &t);
    assert_eq!(code, 0, "{out}");
    assert_line(&out, "--", &["cnf.jkt", "DPoP-bound"]);
}

#[test]
fn scope_claims_and_typ_are_explained() {
    let d = Doctor::new("    scope_claims: [roles]\n    require_at_jwt: true");
    let t = d
        .tok()
        .no_c("scope")
        .c("roles", json!(["mcp:read"]))
        .build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 0, "{out}");
    assert_line(&out, "ok", &["scopes from [roles]: \"mcp:read\""]);
    assert_line(
        &out,
        "ok",
        &["jti: required by RFC 9068 (require_at_jwt), present"],
    );
    let t = d.tok().h("typ", json!("JWT")).no_c("jti").build();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(&out, "FAIL", &["typ: ", "(require_at_jwt: true)"]);
    assert_line(
        &out,
        "FAIL",
        &["jti: required by RFC 9068 (require_at_jwt), absent"],
    );
}

#[test]
fn a_wrong_route_or_token_file_is_a_clear_error() {
    let d = Doctor::new("");
    let (code, _, err) = d.run("mpc", "abc");
    assert_eq!(code, 1);
    assert!(
        err.contains("route \"mpc\" is not configured (did you mean \"mcp\"?); the routes are: \"mcp\", \"bound\""),
        "{err}"
    );
    // Not a JWT, and no introspecting issuer.
    let (code, out, _) = d.run("mcp", "not-a-jwt-at-all");
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &[
            "token: ",
            "no issuer of the route introspects opaque tokens",
        ],
    );
}

#[test]
fn an_opaque_token_gets_the_introspection_verdict() {
    let d = Doctor::new(&format!(
        "    introspection:\n      client_id: {CLIENT_ID}\n      client_secret: {}",
        serde_json::to_string(CLIENT_SECRET).unwrap()
    ));
    let t = opaque();
    d.idp.active(&t, good(json!({})));
    let (code, out, err) = d.run("mcp", &t);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_line(
        &out,
        "--",
        &["not a JWT we can read", "introspected by issuer \"corp\""],
    );
    assert_line(&out, "ok", &["token step: accepted by issuer \"corp\""]);
    assert_eq!(d.idp.calls(), 1, "the gateway's own introspection call");
    // Inactive at the AS.
    let t = opaque();
    let (code, out, _) = d.run("mcp", &t);
    assert_eq!(code, 1, "{out}");
    assert_line(
        &out,
        "FAIL",
        &["token step: refused: HTTP 401 invalid_token"],
    );
}
