//! Build script: the git revision for `mcpgate --version`.
//!
//! `MCPGATE_REVISION` from the environment wins (the Dockerfile's `REVISION` build
//! argument: its build context has no `.git`); otherwise `git rev-parse --short=12 HEAD`,
//! and "unknown" outside a git checkout or without git.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MCPGATE_REVISION");
    let from_env = std::env::var("MCPGATE_REVISION")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "unknown");
    let revision = match from_env {
        Some(r) => r,
        None => {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs. Only
            // files that exist: cargo reruns a build script on every build while one of
            // its `rerun-if-changed` paths is missing (a worktree or a repository without
            // `packed-refs`), and that recompiled the whole crate every time.
            let watch = |p: PathBuf| {
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            };
            if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
                watch(dir.join("HEAD"));
                if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
                    watch(common.join("packed-refs"));
                    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                        watch(common.join(branch));
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=MCPGATE_REVISION={revision}");
}
