//! One test's world: a mock IdP, a recording upstream and a gateway whose config is a fixture
//! rendered for them ([`Env::builder`]), with the requests and assertions most tests make.

use std::path::Path;

use super::assert::{assert_invalid_token, parse_challenge};
use super::fixtures::{render, STANDARD};
use super::gateway::{Gateway, Launch, Layout, Wait};
use super::http::{send_to, Req, Resp};
use super::idp::MockIdp;
use super::metrics::Exposition;
use super::tls::Pki;
use super::tokens::Tok;
use super::upstream::Upstream;

/// Canonical public base URL of the fixtures (TLS terminated in front of the gateway).
pub const PUBLIC: &str = "https://mcp.example.com";
/// Resource identifier of the `/mcp` route of the standard fixture.
pub const R: &str = "https://mcp.example.com/mcp";
/// Its protected resource metadata URL.
pub const PRM: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
/// Resource identifier of the `/admin/mcp` route.
pub const R_ADMIN: &str = "https://mcp.example.com/admin/mcp";
/// Its protected resource metadata URL.
pub const PRM_ADMIN: &str =
    "https://mcp.example.com/.well-known/oauth-protected-resource/admin/mcp";

/// One test's world: IdP, upstream and gateway.
pub struct Env {
    pub gw: Gateway,
    pub idp: MockIdp,
    pub up: Upstream,
    /// The CA of the gateway's certificate, when it terminates TLS.
    pub pki: Option<Pki>,
    /// Files the config names (certificate, admin token).
    pub files: tempfile::TempDir,
}

/// How to start an [`Env`].
pub struct EnvBuilder {
    template: String,
    vars: Vec<(String, String)>,
    idp: Option<MockIdp>,
    up: Option<Upstream>,
    tls: bool,
    admin_token: Option<String>,
    files: Vec<(String, String, Vec<u8>)>,
    launch: Launch,
}

impl EnvBuilder {
    /// A file `name` of [`Env::files`] holding `contents`; `{var}` is its path.
    pub fn file(mut self, var: &str, name: &str, contents: impl AsRef<[u8]>) -> EnvBuilder {
        self.files
            .push((var.into(), name.into(), contents.as_ref().to_vec()));
        self
    }
    /// Fills `{name}` with `value`.
    pub fn var(mut self, name: &str, value: impl ToString) -> EnvBuilder {
        self.vars.push((name.into(), value.to_string()));
        self
    }
    /// This IdP instead of a fresh default one.
    pub fn idp(mut self, idp: MockIdp) -> EnvBuilder {
        self.idp = Some(idp);
        self
    }
    /// This upstream instead of the echo upstream.
    pub fn upstream(mut self, up: Upstream) -> EnvBuilder {
        self.up = Some(up);
        self
    }
    /// Terminate TLS with a certificate of a fresh CA (`{TLS}`; the CA is [`Env::pki`]).
    pub fn tls(mut self) -> EnvBuilder {
        self.tls = true;
        self
    }
    /// An admin token file holding `token` (`{ADMIN_TOKEN_FILE}`).
    pub fn admin_token(mut self, token: &str) -> EnvBuilder {
        self.admin_token = Some(token.into());
        self
    }
    /// Do not wait for `/readyz` (keys may be unavailable on purpose).
    pub fn not_ready(mut self) -> EnvBuilder {
        self.launch.wait = Wait::Healthy;
        self
    }
    pub fn layout(mut self, layout: Layout) -> EnvBuilder {
        self.launch.layout = layout;
        self
    }
    /// Arguments before `run`.
    pub fn args(mut self, args: &[&str]) -> EnvBuilder {
        self.launch.args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    /// An environment variable of the process.
    pub fn env(mut self, name: &str, value: &str) -> EnvBuilder {
        self.launch.envs.push((name.into(), value.into()));
        self
    }
    /// Run on the config directory before the gateway starts.
    pub fn prepare(mut self, f: impl Fn(&Path) + 'static) -> EnvBuilder {
        self.launch.prepare = Some(Box::new(f));
        self
    }

    pub async fn start(self) -> Env {
        let idp = self.idp.unwrap_or_else(MockIdp::start);
        let up = self.up.unwrap_or_else(Upstream::start);
        let files = tempfile::tempdir().unwrap();
        // The test's own values first: they win over the defaults below.
        let mut vars = self.vars;
        vars.extend([
            ("IDP".to_string(), idp.issuer()),
            ("JWKS".to_string(), idp.jwks_uri()),
            ("UP".to_string(), up.url()),
        ]);
        let pki = self.tls.then(Pki::new);
        let tls = pki
            .as_ref()
            .map(|p| p.gateway_tls(files.path()))
            .unwrap_or_default();
        vars.push(("TLS".into(), tls));
        for (var, name, contents) in &self.files {
            let path = files.path().join(name);
            std::fs::write(&path, contents).unwrap();
            vars.push((var.clone(), path.display().to_string()));
        }
        if let Some(token) = &self.admin_token {
            let file = files.path().join("admin-token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            vars.push(("ADMIN_TOKEN_FILE".into(), file.display().to_string()));
        }
        let template = self.template;
        let gw = Gateway::launch(self.launch, move |port, admin| {
            let (port, admin) = (port.to_string(), admin.to_string());
            // The listeners last: a value may name them (`http://127.0.0.1:{PORT}`).
            let mut all: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            all.extend([("PORT", port.as_str()), ("ADMIN", admin.as_str())]);
            render(&template, &all)
        })
        .await;
        Env {
            gw,
            idp,
            up,
            pki,
            files,
        }
    }
}

impl Env {
    /// A gateway on `template`, with a fresh IdP and echo upstream, once ready.
    pub fn builder(template: &str) -> EnvBuilder {
        EnvBuilder {
            template: template.to_string(),
            vars: Vec::new(),
            idp: None,
            up: None,
            tls: false,
            admin_token: None,
            files: Vec::new(),
            launch: Launch::default(),
        }
    }

    /// The standard fixture.
    pub async fn standard() -> Env {
        Env::start(STANDARD).await
    }

    /// `template` with a fresh default IdP, once ready.
    pub async fn start(template: &str) -> Env {
        Env::builder(template).start().await
    }

    /// `template` with a given IdP; `ready` waits for `/readyz` (keys loaded) as well.
    pub async fn start_with(template: &str, idp: MockIdp, ready: bool) -> Env {
        let b = Env::builder(template).idp(idp);
        if ready { b } else { b.not_ready() }.start().await
    }

    /// A good token for `/mcp` (scope `mcp:read`).
    pub fn tok(&self) -> Tok {
        Tok::new(&self.idp.issuer(), R)
    }

    pub async fn send(&self, req: Req) -> Resp {
        send_to(self.gw.addr(), &req)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.target))
    }

    /// Sends and returns an error instead of panicking when no response arrives.
    pub async fn try_send(&self, req: Req) -> Result<Resp, String> {
        send_to(self.gw.addr(), &req).await
    }

    pub async fn admin(&self, path: &str) -> Resp {
        self.gw.admin(path).await
    }

    /// `/metrics`, strictly parsed.
    pub async fn metrics(&self) -> Exposition {
        self.gw.metrics().await
    }

    /// The value of one series (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.gw.metric(name, labels).await
    }

    /// POST /mcp with the token; returns the response.
    pub async fn post_mcp(&self, token: &str) -> Resp {
        self.send(Req::post("/mcp").bearer(token)).await
    }

    /// Asserts the upstream saw nothing (used after every refusal).
    pub fn assert_nothing_forwarded(&self) {
        let reqs = self.up.requests();
        assert!(
            reqs.is_empty(),
            "upstream must not receive anything, got {reqs:#?}"
        );
    }

    /// Asserts `token` is refused on POST /mcp with `invalid_token` and nothing is forwarded.
    pub async fn assert_rejected(&self, token: &str, what: &str) {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        assert_eq!(r.status, 401, "{what}: expected 401, got {r}");
        assert_invalid_token(&r, super::env::PRM);
        assert_eq!(
            self.up.count(),
            before,
            "{what}: refused request reached the upstream"
        );
    }

    /// Like [`Env::assert_rejected`] but returns the failure instead of panicking, so a test
    /// can report every failing case at once.
    pub async fn check_rejected(&self, token: &str, what: &str) -> Option<String> {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        let err = r
            .header("www-authenticate")
            .and_then(|v| parse_challenge(v).ok())
            .and_then(|c| c.param("error").map(str::to_string));
        if r.status != 401 || err.as_deref() != Some("invalid_token") || self.up.count() != before {
            return Some(format!(
                "{what}: want 401 invalid_token, nothing forwarded; got {} {} (forwarded: {})",
                r.status,
                r.text(),
                self.up.count() - before
            ));
        }
        None
    }

    /// Asserts `token` is accepted on POST /mcp and reaches the upstream.
    pub async fn assert_accepted(&self, token: &str, what: &str) {
        let before = self.up.count();
        let r = self.post_mcp(token).await;
        assert_eq!(r.status, 200, "{what}: expected 200, got {r}");
        assert_eq!(self.up.count(), before + 1, "{what}: upstream count");
    }

    /// `https://mcp.example.com:<port><path>` for the TLS clients.
    pub fn url(&self, path: &str) -> String {
        format!("https://mcp.example.com:{}{path}", self.gw.port)
    }

    /// The CA of a TLS gateway.
    pub fn ca(&self) -> &str {
        &self.pki.as_ref().expect("a TLS env").ca_pem
    }
}
