//! The one launcher of the `mcpgate` binary: `mcpgate [args] run --config <file>` on free
//! loopback ports with a config the test renders for those ports, laid out on disk as the test
//! asks (a plain file, a Kubernetes ConfigMap's `..data` symlinks, or a symlink into a
//! directory nobody watches). Its output is captured to a file outside the watched directory;
//! the test can rewrite the config the ways an operator does, signal the process and wait for
//! its exit. When dropped, the process is killed and its whole log is checked for every
//! credential the test binary sent or built ([`super::tokens::assert_no_tokens`]); on a failed
//! test the log's tail is printed instead.
//!
//! [`run_cli`] runs the binary's one-shot commands (`check`, `hash-key`, `revoke`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::http::{send, send_to, Req, Resp};
use super::metrics::{parse_exposition, Exposition};
use super::poll::{within, within_blocking};
use super::ports::{address_in_use, free_ports, ATTEMPTS};
use super::tokens::assert_no_tokens;

/// How long a gateway may take to come up (a debug build on a loaded machine).
pub const START_LIMIT: Duration = Duration::from_secs(20);

pub fn gateway_bin() -> PathBuf {
    std::env::var_os("MCPGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mcpgate")))
}

/// A command for the binary with the test environment: no proxy variables.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(gateway_bin());
    c.args(args);
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

/// The Python of the integration tests (Flask, jsonschema, PyYAML): `MCPGATE_TEST_PYTHON`,
/// else the venv `.ci/test` makes (`tests/gateway/.venv`, from
/// `tests/gateway/requirements.txt`), else `python3`.
pub fn test_python() -> PathBuf {
    if let Some(p) = std::env::var_os("MCPGATE_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// Runs `mcpgate <args>` to its end with `stdin`: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", gateway_bin().display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The status of an admin listener request, if one came back.
async fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    send_to(admin, &Req::get(path).host("localhost"))
        .await
        .ok()
        .map(|r| r.status)
}

/// How the config file sits on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `<dir>/config.yaml`, a regular file.
    Plain,
    /// A Kubernetes ConfigMap volume: `config.yaml -> ..data/config.yaml`, `..data -> ..gen0`.
    Kube,
    /// `<dir>/config.yaml -> <dir>/real/config.yaml` (the target's directory is not watched).
    Linked,
}

/// What the launcher waits for before handing the gateway to the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Nothing (the test watches the process itself, e.g. for a failed start).
    Nothing,
    /// The public port accepts TCP and `/healthz` answers 200.
    Healthy,
    /// That, and `/readyz` answers 200 (every issuer's keys loaded).
    Ready,
}

/// Run on the config directory before the gateway starts.
pub type Prepare = Box<dyn Fn(&Path)>;

/// Options of a launch.
pub struct Launch {
    pub layout: Layout,
    /// Arguments before `run` (`--log-format json`).
    pub args: Vec<String>,
    /// Environment of the process (`RUST_LOG` here overrides the default).
    pub envs: Vec<(String, String)>,
    /// Run on the config directory before the gateway starts (to put the files the config
    /// names next to it).
    pub prepare: Option<Prepare>,
    pub wait: Wait,
}

impl Default for Launch {
    fn default() -> Launch {
        Launch {
            layout: Layout::Plain,
            args: Vec::new(),
            envs: Vec::new(),
            prepare: None,
            wait: Wait::Ready,
        }
    }
}

/// A running `mcpgate run` that the test owns; killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    /// The directory holding the config (watched by the gateway).
    pub dir: PathBuf,
    /// The path given to `--config`.
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    layout: Layout,
    generation: usize,
    /// A discarded start attempt: no checks on drop.
    quiet: bool,
    _tmp: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The process is gone: the file holds everything it wrote.
        if self.quiet {
            return;
        }
        let logs = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        if std::thread::panicking() {
            eprintln!(
                "---- mcpgate stderr ({}) ----\n{}",
                self.log_path.display(),
                tail(&logs, 8000)
            );
        } else {
            assert_no_tokens(&logs);
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl Gateway {
    /// Starts the gateway with the config `config(port, admin_port)` (a plain file) and waits
    /// until it is healthy.
    pub async fn start(config: impl Fn(u16, u16) -> String) -> Gateway {
        let opts = Launch {
            wait: Wait::Healthy,
            ..Launch::default()
        };
        Gateway::launch(opts, config).await
    }

    /// Starts `mcpgate <args> run --config <path>` with the config `config(port, admin_port)`
    /// laid out as `opts.layout`, and waits as `opts.wait` says. Retries with fresh ports when
    /// the chosen ones were taken in the meantime.
    pub async fn launch(opts: Launch, config: impl Fn(u16, u16) -> String) -> Gateway {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let ports = free_ports(2);
            let (port, admin_port) = (ports[0], ports[1]);
            let mut gw = Gateway::spawn(&opts, port, admin_port, &config(port, admin_port));
            match gw.wait_up(opts.wait).await {
                Ok(()) => return gw,
                Err(e) => {
                    let logs = std::fs::read_to_string(&gw.log_path).unwrap_or_default();
                    last = format!("{e}\n---- stderr ----\n{}", tail(&logs, 8000));
                    // A failed attempt: dropped without the checks (its log is in `last`).
                    gw.quiet = true;
                    drop(gw);
                    if !address_in_use(&logs) {
                        break;
                    }
                }
            }
        }
        panic!("mcpgate did not start: {last}");
    }

    fn spawn(opts: &Launch, port: u16, admin_port: u16, text: &str) -> Gateway {
        let tmp = tempfile::tempdir().unwrap();
        // The config directory is watched: keep the log out of it.
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        let config_path = dir.join("config.yaml");
        match opts.layout {
            Layout::Plain => std::fs::write(&config_path, text).unwrap(),
            Layout::Kube => {
                std::fs::create_dir(dir.join("..gen0")).unwrap();
                std::fs::write(dir.join("..gen0/config.yaml"), text).unwrap();
                std::os::unix::fs::symlink("..gen0", dir.join("..data")).unwrap();
                std::os::unix::fs::symlink("..data/config.yaml", &config_path).unwrap();
            }
            Layout::Linked => {
                std::fs::create_dir(dir.join("real")).unwrap();
                std::fs::write(dir.join("real/config.yaml"), text).unwrap();
                std::os::unix::fs::symlink(dir.join("real/config.yaml"), &config_path).unwrap();
            }
        }
        if let Some(prepare) = &opts.prepare {
            prepare(&dir);
        }
        let log_path = tmp.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let log2 = log.try_clone().unwrap();
        let args: Vec<&str> = opts.args.iter().map(String::as_str).collect();
        let child = command(&args)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("MCPGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(opts.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", gateway_bin().display()));
        Gateway {
            child,
            port,
            admin_port,
            dir,
            config_path,
            log_path,
            layout: opts.layout,
            generation: 0,
            quiet: false,
            _tmp: tmp,
        }
    }

    async fn wait_up(&mut self, wait: Wait) -> Result<(), String> {
        if wait == Wait::Nothing {
            return Ok(());
        }
        let started = Instant::now();
        let (addr, admin) = (self.addr(), self.admin_addr());
        let child = &mut self.child;
        let mut exited = None;
        let healthy = within(START_LIMIT, || {
            exited = child.try_wait().ok().flatten();
            let gone = exited.is_some();
            async move {
                gone || (TcpStream::connect(addr).await.is_ok()
                    && admin_status(admin, "/healthz").await == Some(200))
            }
        })
        .await;
        if let Some(status) = exited {
            return Err(format!("mcpgate exited early with {status}"));
        }
        if healthy.is_err() {
            return Err(format!("not healthy within {START_LIMIT:?}"));
        }
        if wait == Wait::Ready {
            return self
                .wait_ready(START_LIMIT.saturating_sub(started.elapsed()))
                .await;
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (keys loaded), bounded.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let admin = self.admin_addr();
        within(limit, || async move {
            admin_status(admin, "/readyz").await == Some(200)
        })
        .await
        .map(|_| ())
        .map_err(|_| format!("/readyz not 200 within {limit:?}"))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// The gateway's log so far, once settled: lines are written by a background thread
    /// every 50 ms, so this polls (at most 1.5 s) until the file has been still for 120 ms.
    pub fn logs(&self) -> String {
        let read = || std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut last = read();
        let mut still_since = Instant::now();
        let _ = within_blocking(Duration::from_millis(1500), || {
            let now = read();
            if now.len() != last.len() {
                last = now;
                still_since = Instant::now();
            }
            still_since.elapsed() >= Duration::from_millis(120)
        });
        last
    }

    /// The log once `needle` appears in it `n` times (bounded wait; panics otherwise).
    pub async fn wait_log(&self, needle: &str, n: usize) -> String {
        let read = || std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let found = within(Duration::from_secs(10), || async {
            read().matches(needle).count() >= n
        })
        .await;
        let logs = read();
        found.unwrap_or_else(|_| panic!("{n} × {needle:?} not logged:\n{logs}"));
        logs
    }

    /// Checks the log now for every credential sent or built so far (as `Drop` does).
    pub fn assert_no_tokens(&self) {
        assert_no_tokens(&self.logs());
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -s {sig} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        let _ = within(limit, || {
            status = self.child.try_wait().ok().flatten();
            std::future::ready(status.is_some())
        })
        .await;
        status
    }

    /// An admin listener request.
    pub async fn admin(&self, path: &str) -> Resp {
        send(self.admin_addr(), &Req::get(path).host("localhost")).await
    }

    /// `/metrics`, strictly parsed.
    pub async fn metrics(&self) -> Exposition {
        let r = self.admin("/metrics").await;
        assert_eq!(r.status, 200, "{r}");
        parse_exposition(&r.text()).unwrap_or_else(|e| panic!("bad /metrics: {e}\n{}", r.text()))
    }

    /// The value of one series (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.value(name, labels)
    }

    /// Waits (bounded) until the gateway has counted `n` successful reloads.
    pub async fn wait_reloads(&self, n: f64) {
        let ok = [("result", "success")];
        let reached = within(Duration::from_secs(10), || async {
            self.metric("mcpgate_config_reloads_total", &ok).await >= n
        })
        .await;
        if reached.is_err() {
            panic!("no reload:\n{}", self.logs());
        }
    }

    /// Rewrites the config file with `edit` and waits (bounded) until the gateway counted one
    /// more successful reload.
    pub async fn reload(&self, edit: impl Fn(&str) -> String) {
        let ok = [("result", "success")];
        let before = self.metric("mcpgate_config_reloads_total", &ok).await;
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let next = edit(&text);
        assert_ne!(text, next, "the edit changed nothing");
        std::fs::write(&self.config_path, next).unwrap();
        self.wait_reloads(before + 1.0).await;
    }

    /// The file the gateway eventually reads.
    fn real_file(&self) -> PathBuf {
        match self.layout {
            Layout::Linked => self.dir.join("real/config.yaml"),
            _ => self.config_path.clone(),
        }
    }

    /// `truncate + write` on the file itself (what `echo > file` does). With
    /// [`Layout::Linked`] this writes the symlink's target, in a directory the gateway does not
    /// watch.
    pub fn write_in_place(&self, text: &str) {
        std::fs::write(self.real_file(), text).unwrap();
    }

    /// What editors do: write a temporary file next to it, then rename it over the config.
    /// (On a Kubernetes layout this replaces the `config.yaml` symlink with a regular file.)
    pub fn write_rename(&self, text: &str) {
        let tmp = self.dir.join(".config.yaml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// What the kubelet does for a ConfigMap: a new timestamped directory, a `..data_tmp`
    /// symlink to it renamed over `..data`, the old directory removed. `config.yaml` is (made)
    /// a symlink to `..data/config.yaml`, atomically.
    pub fn kube_swap(&mut self, text: &str) {
        self.generation += 1;
        let gen = format!("..gen{}", self.generation);
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::create_dir(self.dir.join(&gen)).unwrap();
        std::fs::write(self.dir.join(&gen).join("config.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&gen, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let is_link = std::fs::symlink_metadata(&self.config_path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            let l = self.dir.join("config.yaml.lnk");
            std::os::unix::fs::symlink("..data/config.yaml", &l).unwrap();
            std::fs::rename(&l, &self.config_path).unwrap();
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
    }
}

/// Runs `mcpgate <args>` with no input until it exits, at most `limit`: (exit code, stdout,
/// stderr), or `None` (and the process killed) when it is still running then.
pub async fn run_cli_within(args: &[&str], limit: Duration) -> Option<(i32, String, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let mut child = command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", gateway_bin().display()));
    let mut status = None;
    let _ = within(limit, || {
        status = child.try_wait().ok().flatten();
        std::future::ready(status.is_some())
    })
    .await;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    status.map(|s| (s.code().unwrap_or(-1), read(&out_path), read(&err_path)))
}

/// A running `mcpgate dev` that the test owns (killed on drop, its log checked for
/// credentials as [`Gateway`]'s is), on ports the kernel picked (`--port 0` and the others),
/// which the test reads from the banner.
pub struct Dev {
    child: Child,
    /// What it printed on stdout: the banner.
    pub banner: String,
    /// `http://127.0.0.1:<port>`: the gateway's public URL.
    pub gateway: String,
    /// The MCP route's URL (`<gateway>/mcp`).
    pub mcp: String,
    pub issuer: String,
    pub demo: String,
    pub admin: String,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let logs = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        if std::thread::panicking() {
            eprintln!("---- mcpgate dev stdout ----\n{}", self.banner);
            eprintln!("---- mcpgate dev stderr ----\n{}", tail(&logs, 8000));
        } else {
            assert_no_tokens(&logs);
        }
    }
}

/// The URL that follows `label` at the start of a banner line (`  dev issuer       http://…`).
fn banner_url(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} line in the banner:\n{banner}"))
        .to_string()
}

/// `scheme://host:port` of a URL.
fn origin_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    format!("http://{host}")
}

impl Dev {
    /// Starts `mcpgate dev` with every port 0 plus `args`, waits (bounded) for the whole
    /// banner and for `/readyz` to answer 200.
    pub async fn start(args: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let out_path = tmp.path().join("stdout");
        let log_path = tmp.path().join("stderr.log");
        let mut all = vec![
            "dev",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--issuer-port",
            "0",
            "--demo-port",
            "0",
        ];
        all.extend_from_slice(args);
        let child = command(&all)
            .env(
                "RUST_LOG",
                std::env::var("MCPGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", gateway_bin().display()));
        let mut dev = Dev {
            child,
            banner: String::new(),
            gateway: String::new(),
            mcp: String::new(),
            issuer: String::new(),
            demo: String::new(),
            admin: String::new(),
            log_path,
            _tmp: tmp,
        };
        // The banner's last line marks it complete.
        let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
        let printed = within(START_LIMIT, || async {
            read().contains("--tool-name whoami")
        })
        .await;
        dev.banner = read();
        if printed.is_err() {
            panic!("mcpgate dev printed no banner within {START_LIMIT:?}");
        }
        dev.mcp = banner_url(&dev.banner, "gateway");
        dev.gateway = origin_of(&dev.mcp);
        dev.issuer = banner_url(&dev.banner, "dev issuer");
        dev.demo = origin_of(&banner_url(&dev.banner, "demo MCP server"));
        dev.admin = origin_of(&banner_url(&dev.banner, "admin"));
        for t in [dev.token("READER_TOKEN"), dev.token("ADMIN_TOKEN")] {
            super::tokens::remember(&t);
        }
        let admin = dev.admin_addr();
        let ready = within(START_LIMIT, || async move {
            admin_status(admin, "/readyz").await == Some(200)
        })
        .await;
        if ready.is_err() {
            panic!("mcpgate dev: /readyz not 200 within {START_LIMIT:?}");
        }
        dev
    }

    /// The value the banner exports as `name`.
    pub fn token(&self, name: &str) -> String {
        let prefix = format!("export {name}='");
        self.banner
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.strip_suffix('\''))
            .unwrap_or_else(|| panic!("no {name} in the banner:\n{}", self.banner))
            .to_string()
    }

    fn addr_of(url: &str) -> SocketAddr {
        origin_of(url)
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }
    pub fn gateway_addr(&self) -> SocketAddr {
        Dev::addr_of(&self.gateway)
    }
    pub fn issuer_addr(&self) -> SocketAddr {
        Dev::addr_of(&self.issuer)
    }
    pub fn admin_addr(&self) -> SocketAddr {
        Dev::addr_of(&self.admin)
    }

    /// Its log (stderr) so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
