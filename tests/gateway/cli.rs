//! `mcpgate check` / `mcpgate run` on good and bad configs, and `${ENV}` expansion.

use std::time::Duration;

use crate::harness::*;

/// The standard fixture with fixed placeholder values (nothing needs to listen for `check`).
fn good_config() -> String {
    render(
        STANDARD,
        &[
            ("PORT", "18080"),
            ("ADMIN", "19090"),
            ("IDP", "http://127.0.0.1:4000"),
            ("JWKS", "http://127.0.0.1:4000/jwks"),
            ("UP", "http://127.0.0.1:3001"),
            ("TLS", ""),
        ],
    )
}

/// Runs `mcpgate check --config <file>`; returns (exit code, stdout+stderr, path).
fn check(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], "");
    (code, format!("{out}{err}"), path.display().to_string())
}

/// 1-based line of the first line containing `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Asserts `FILE:LINE:COL: reason` with the given line (if any) and a non-empty reason.
fn assert_located(out: &str, path: &str, line: Option<usize>) {
    let prefix = format!("{path}:");
    let at = out
        .find(&prefix)
        .unwrap_or_else(|| panic!("no `{path}:LINE:COL:` in output:\n{out}"));
    let rest = &out[at + prefix.len()..];
    let mut parts = rest.splitn(3, ':');
    let l: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no line number:\n{out}"));
    let c: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no column number:\n{out}"));
    let reason = parts
        .next()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    assert!(l >= 1 && c >= 1, "{out}");
    assert!(!reason.is_empty(), "no reason after FILE:LINE:COL:\n{out}");
    if let Some(want) = line {
        assert_eq!(l, want, "wrong line in:\n{out}");
    }
}

#[test]
fn check_good_config_exits_0() {
    let (code, out, _) = check(&good_config());
    assert_eq!(code, 0, "{out}");
    assert!(!out.trim().is_empty(), "check should print a summary");
}

#[test]
fn check_bad_value_exits_1_with_line_and_column() {
    let yaml = good_config().replace("threads: 1", "threads: many");
    let (code, out, path) = check(&yaml);
    assert_eq!(code, 1, "{out}");
    assert_located(&out, &path, Some(line_of(&yaml, "threads: many")));
}

#[test]
fn check_unknown_key_rejected() {
    let yaml = good_config().replace(
        "    scopes: [admin]\n",
        "    scopes: [admin]\n    scopez: [typo]\n",
    );
    let (code, out, path) = check(&yaml);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("scopez"), "reason should name the key:\n{out}");
    assert_located(&out, &path, Some(line_of(&yaml, "scopez")));
    // Top-level and nested unknown keys too.
    for yaml in [
        good_config() + "bogus: 1\n",
        good_config().replace("  threads: 1\n", "  threads: 1\n  tls: yes\n"),
        good_config().replace("    jwks_uri:", "    jwks_url: x\n    jwks_uri:"),
    ] {
        let (code, out, path) = check(&yaml);
        assert_eq!(code, 1, "{out}");
        assert_located(&out, &path, None);
    }
}

#[test]
fn check_semantic_errors_exit_1() {
    let base = good_config();
    let cases = [
        ("unknown issuer reference", base.replace("    scopes: [admin]\n", "    scopes: [admin]\n    issuers: [nope]\n")),
        ("duplicate route name", base.replace("name: admin", "name: mcp")),
        ("missing upstream", base.replace("    upstream: http://127.0.0.1:3001\n    auth: none\n", "    auth: none\n")),
        ("bad auth mode", base.replace("auth: none", "auth: maybe")),
        ("http issuer off loopback", base.replace("issuer: http://127.0.0.1:4000", "issuer: http://idp.example.com").replace("jwks_uri: http://127.0.0.1:4000/jwks", "jwks_uri: http://idp.example.com/jwks")),
        ("bad path prefix", base.replace("path_prefix: /open", "path_prefix: open")),
        ("two root_metadata routes", base.replace("    scopes: [mcp:read]\n", "    scopes: [mcp:read]\n    root_metadata: true\n").replace("    scopes: [admin]\n", "    scopes: [admin]\n    root_metadata: true\n")),
        ("missing listen", base.replace("listen:\n  address: 127.0.0.1:18080\n  public_url: https://mcp.example.com\n  threads: 1\n", "")),
        ("not yaml", "listen: [\n".to_string()),
    ];
    for (what, yaml) in cases {
        assert_ne!(yaml, base, "{what}: fixture edit did not apply");
        let (code, out, path) = check(&yaml);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.contains(&path),
            "{what}: output should name the file:\n{out}"
        );
    }
}

#[test]
fn check_missing_file_fails() {
    let (code, _, _) = run_cli(&["check", "--config", "/nonexistent/mcpgate.yaml"], "");
    assert_ne!(code, 0);
}

#[tokio::test]
async fn run_with_bad_config_exits_nonzero() {
    let opts = Launch {
        wait: Wait::Nothing,
        ..Launch::default()
    };
    let mut gw = Gateway::launch(opts, |_, _| good_config() + "bogus: 1\n").await;
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("`mcpgate run` kept running with an invalid config");
    assert!(!status.success());
}

#[tokio::test]
async fn config_values_expand_env_vars() {
    // The upstream URL comes from the environment of the gateway process.
    let up = Upstream::start();
    let url = up.url();
    let env = Env::builder(STANDARD)
        .upstream(up)
        .var("UP", "${MCPGATE_TEST_UPSTREAM}")
        .env("MCPGATE_TEST_UPSTREAM", &url)
        .not_ready()
        .start()
        .await;
    let r = env.send(Req::get("/open/x")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.only().target, "/open/x");
}
