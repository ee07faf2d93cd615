//! `mcpgate schema`: the committed copy the Helm chart embeds is current, and every shipped
//! config (config/*.yaml, config/idp/*.yaml, the Helm examples' `config:`) validates
//! against it with a JSON Schema validator (Python `jsonschema`, `check_schema.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `mcpgate schema`'s output.
fn generated() -> String {
    let (code, out, err) = run_cli(&["schema"], "");
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn committed_schema_is_current() {
    let path = repo().join("helm/mcpgate/files/config.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated(),
        "{} is stale: regenerate it with `mcpgate schema > helm/mcpgate/files/config.schema.json`",
        path.display()
    );
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
}

/// Runs check_schema.py with the generated schema on `files`: (exit code, output).
fn validate(files: &[PathBuf]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, generated()).unwrap();
    let out = Command::new(test_python())
        .arg(repo().join("tests/gateway/check_schema.py"))
        .arg(&schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run tests/gateway/venv.sh)",
                test_python().display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError"),
        "jsonschema/PyYAML missing: run tests/gateway/venv.sh\n{text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn shipped_configs_validate_against_the_schema() {
    let r = repo();
    let mut files = yaml_files(&r.join("config"));
    let idp = yaml_files(&r.join("config/idp"));
    assert!(idp.len() >= 4, "the IdP guides: {idp:?}");
    files.extend(idp);
    files.extend(yaml_files(&r.join("helm/mcpgate/examples")));
    files.push(r.join("tests/packaging/ci-values-all.yaml"));
    let (code, out) = validate(&files);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{out}"
    );
}

#[test]
fn the_schema_refuses_what_check_refuses_by_shape() {
    let dir = tempfile::tempdir().unwrap();
    let good = "listen: {address: '127.0.0.1:1', public_url: 'https://m.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as.example.com', scope_claims: [roles]}]\nroutes: [{name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3'}]\n";
    let cases = [
        ("good", good.to_string(), None),
        (
            "unknown route key",
            good.replace("path_prefix", "scopez: [], path_prefix"),
            Some("routes/0: Additional properties are not allowed ('scopez' was unexpected)"),
        ),
        (
            "unknown top-level key",
            format!("{good}bogus: 1\n"),
            Some("(top): Additional properties are not allowed ('bogus' was unexpected)"),
        ),
        (
            "missing upstream",
            good.replace(", upstream: 'http://127.0.0.1:3'", ""),
            Some("routes/0: 'upstream' is a required property"),
        ),
        (
            "bad enum",
            good.replace("[roles]", "[role]"),
            Some("issuers/0/scope_claims/0: 'role' is not valid under any of the given schemas"),
        ),
        (
            "wrong type",
            good.replace(
                "path_prefix: /mcp",
                "path_prefix: /mcp, forward_token: maybe",
            ),
            Some("routes/0/forward_token: 'maybe' is not of type 'boolean'"),
        ),
    ];
    for (what, text, want) in cases {
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, &text).unwrap();
        let (code, out) = validate(std::slice::from_ref(&f));
        // mcpgate check agrees with the schema on each of them.
        let (check, _, _) = run_cli(&["check", "--config", f.to_str().unwrap()], "");
        match want {
            None => {
                assert_eq!((code, check), (0, 0), "{what}: {out}");
            }
            Some(msg) => {
                assert_eq!(code, 1, "{what}: {out}");
                assert!(out.contains(msg), "{what}: {out}");
                assert_eq!(check, 1, "{what}: mcpgate check accepted it");
            }
        }
    }
}
