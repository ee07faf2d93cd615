//! Hot reload: watch the config file (and the files it references) and SIGHUP; parse,
//! validate, swap. A bad file never replaces a good one.
//!
//! Side work of the gateway: a watcher thread receives file events for the directories
//! holding the config, its TLS files and its API key file (watching directories, not
//! files, is what survives a Kubernetes ConfigMap `..data` symlink swap and editors that
//! write a temp file and rename it), waits for the burst of events to settle, and
//! reloads when the content actually changed. The swap is `GatewayState::apply`: atomic, and requests in
//! flight finish on the snapshot they started with.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::metrics;
use crate::state::GatewayState;

const SETTLE: Duration = Duration::from_millis(150);

/// Every file a config depends on.
fn inputs(path: &Path, config: &Config) -> Vec<PathBuf> {
    config.inputs(path)
}

fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
    }
    h.finalize().into()
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Watch the directory of each file (once).
/// File names whose events matter: the inputs, and what they resolve to through links.
type Names = std::sync::Arc<std::sync::Mutex<HashSet<std::ffi::OsString>>>;

/// Watch the directory of each file, and of the file a symlink points to (once each).
fn watch_dirs(
    files: &[PathBuf],
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<PathBuf>,
    names: &Names,
) {
    for f in files {
        let resolved = std::fs::canonicalize(f).ok();
        for p in std::iter::once(f.clone()).chain(resolved) {
            if let (Some(name), Ok(mut set)) = (p.file_name(), names.lock()) {
                set.insert(name.to_os_string());
            }
            let dir = parent_dir(&p);
            if watched.insert(dir.clone()) {
                if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; use SIGHUP to reload");
                }
            }
        }
    }
}

/// Whether a file event concerns our inputs: one of their names, or a Kubernetes
/// ConfigMap/Secret swap (`..data`, `..2024_...`). Other files in the directory (a log
/// file, say) are ignored.
fn relevant(event: &notify::Event, names: &Names) -> bool {
    let Ok(set) = names.lock() else { return true };
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| set.contains(n) || n.to_str().is_some_and(|s| s.starts_with("..")))
    })
}

/// Start watching. Returns once the watcher is in place.
pub fn spawn(path: PathBuf, state: Arc<GatewayState>) -> Result<(), String> {
    // `true`: forced (SIGHUP) — reload even if the files look unchanged.
    let (tx, rx) = mpsc::channel::<bool>();
    let events = tx.clone();
    let names: Names = Default::default();
    let filter = names.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| relevant(&e, &filter)) {
            // A send fails only when the reload thread is gone (the process is ending).
            let _ = events.send(false);
        }
    })
    .map_err(|e| format!("cannot watch config files: {e}"))?;

    let mut watched: HashSet<PathBuf> = HashSet::new();
    let config = state.config();
    watch_dirs(&inputs(&path, &config), &mut watcher, &mut watched, &names);

    // SIGHUP asks for a reload too.
    let hup = tx;
    state.fetcher.spawn(async move {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot install a SIGHUP handler");
            return;
        };
        while sig.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration");
            if hup.send(true).is_err() {
                return;
            }
        }
    });

    std::thread::Builder::new()
        .name("mcpgate-reload".into())
        .spawn(move || {
            let mut last = fingerprint(&inputs(&path, &config));
            while let Ok(first) = rx.recv() {
                // Let a burst of events (rename, symlink swap, several writes) settle.
                std::thread::sleep(SETTLE);
                let mut forced = first;
                while let Ok(f) = rx.try_recv() {
                    forced |= f;
                }
                let current = state.config();
                let files = inputs(&path, &current);
                let fp = fingerprint(&files);
                if fp == last && !forced {
                    continue;
                }
                last = fp;
                if let Some(new_files) = reload(&path, &state) {
                    watch_dirs(&new_files, &mut watcher, &mut watched, &names);
                    last = fingerprint(&new_files);
                }
            }
        })
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    Ok(())
}

/// Load, validate and apply the config at `path`. Returns its input files on success.
pub fn reload(path: &Path, state: &GatewayState) -> Option<Vec<PathBuf>> {
    match Config::load(path) {
        Ok(config) => {
            let files = inputs(path, &config);
            let routes = config.routes.len();
            crate::config::log_warnings(&config);
            for note in state.apply(config) {
                tracing::warn!("{note}");
            }
            metrics::config_reload(true);
            tracing::info!(file = %path.display(), routes, "configuration reloaded");
            Some(files)
        }
        Err(e) => {
            metrics::config_reload(false);
            tracing::error!(file = %e.file, line = e.line, column = e.column, reason = %e.reason,
                "configuration rejected; the previous configuration keeps serving");
            None
        }
    }
}
