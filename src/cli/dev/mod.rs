//! `mcpgate dev`: the embedded default, needing nothing else running.
//!
//! Next to the gateway it serves, on loopback, a development authorization server
//! ([`issuer`]: client credentials for two fixed clients, and the interactive login MCP
//! clients use: dynamic registration, authorization code with PKCE, a consent page that
//! approves by itself, rotating refresh tokens; rules in [`grants`]) and a demo MCP server
//! ([`demo`]). The gateway runs on `config/dev.yaml`, compiled in, with only its addresses
//! changed when other ports are asked for.
//!
//! Every port is bound before anything starts ([`crate::server::Bound`]): a busy port is
//! one error line and exit 1, and the issuer's socket already accepts connections when the
//! gateway first asks it for its keys. Port 0 picks a free port; the banner shows the real
//! ones.

pub mod demo;
pub mod grants;
pub mod issuer;
mod web;

use std::process::ExitCode;

use serde_yaml::Value as Yaml;

use crate::server::{Bound, GatewaySockets, RunOptions};
pub use issuer::{DevIssuer, CLIENTS};

/// The gateway config `mcpgate dev` runs on.
pub const DEV_CONFIG: &str = include_str!("../../../config/dev.yaml");
/// The host every dev listener binds.
pub const HOST: &str = "127.0.0.1";

/// The ports of `mcpgate dev` (`--port`, `--admin-port`, `--issuer-port`, `--demo-port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub admin: u16,
    pub issuer: u16,
    pub demo: u16,
}

impl Default for Ports {
    /// The ports `config/dev.yaml` names.
    fn default() -> Ports {
        Ports {
            gateway: 8080,
            admin: 9090,
            issuer: 8081,
            demo: 8082,
        }
    }
}

/// Where everything of a running `mcpgate dev` is.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `http://127.0.0.1:<gateway>` (the gateway's `public_url`).
    pub gateway: String,
    pub issuer: String,
    pub demo: String,
    pub admin: String,
}

impl Urls {
    pub fn new(p: Ports) -> Urls {
        let u = |port: u16| format!("http://{HOST}:{port}");
        Urls {
            gateway: u(p.gateway),
            issuer: u(p.issuer),
            demo: u(p.demo),
            admin: u(p.admin),
        }
    }
    /// The MCP route's URL (its resource).
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.gateway)
    }
}

fn set(doc: &mut Yaml, path: &[&str], value: String) -> Result<(), String> {
    let mut node = doc;
    for key in path {
        node = match key.parse::<usize>() {
            Ok(i) => node.get_mut(i),
            Err(_) => node.get_mut(*key),
        }
        .ok_or_else(|| format!("config/dev.yaml has no {}", path.join(".")))?;
    }
    *node = Yaml::String(value);
    Ok(())
}

/// `config/dev.yaml` with its addresses moved to `ports`: the listeners, the public URL,
/// the issuer and the route's upstream. Nothing else changes.
pub fn dev_config(ports: Ports) -> Result<String, String> {
    let mut doc: Yaml = serde_yaml::from_str(DEV_CONFIG).map_err(|e| e.to_string())?;
    let urls = Urls::new(ports);
    set(
        &mut doc,
        &["listen", "address"],
        format!("{HOST}:{}", ports.gateway),
    )?;
    set(&mut doc, &["listen", "public_url"], urls.gateway.clone())?;
    set(
        &mut doc,
        &["admin", "address"],
        format!("{HOST}:{}", ports.admin),
    )?;
    set(&mut doc, &["issuers", "0", "issuer"], urls.issuer.clone())?;
    set(&mut doc, &["routes", "0", "upstream"], urls.demo.clone())?;
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// What `mcpgate dev` prints once every port is bound.
pub fn banner(urls: &Urls, reader: &str, admin: &str) -> String {
    let url = urls.mcp();
    let Urls {
        gateway,
        issuer,
        demo,
        admin: admin_url,
    } = urls;
    let json =
        "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'";
    format!(
        r#"
mcpgate dev is running (nothing else needed; Ctrl-C stops everything)
  gateway          {url}  (route "mcp", requires scope mcp:tools)
  metadata         {gateway}/.well-known/oauth-protected-resource/mcp
  dev issuer       {issuer}  (clients reader/reader-secret, admin/admin-secret; interactive login)
  demo MCP server  {demo}/mcp  (tools echo, add, whoami, reset_demo [admin only])
  admin            {admin_url}/metrics  /healthz  /readyz

Tokens (valid 1 hour):
  export READER_TOKEN='{reader}'
  export ADMIN_TOKEN='{admin}'

Try it:
  # no token: 401 with the discovery challenge
  curl -si {url} -X POST -H 'Content-Type: application/json' -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
  # list tools through the gateway
  curl -s {url} -H "Authorization: Bearer $READER_TOKEN" {json} -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
  # call a tool
  curl -s {url} -H "Authorization: Bearer $READER_TOKEN" {json} -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"whoami","arguments":{{}}}}}}'
  # the admin-only tool: 403 insufficient_scope (step-up) with the reader token, allowed with the admin token
  curl -si {url} -H "Authorization: Bearer $READER_TOKEN" {json} -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"reset_demo","arguments":{{}}}}}}'
  curl -s {url} -H "Authorization: Bearer $ADMIN_TOKEN" {json} -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"reset_demo","arguments":{{}}}}}}'
  # a fresh token from the dev issuer (client_credentials with an RFC 8707 resource)
  curl -s {issuer}/token -u reader:reader-secret -d grant_type=client_credentials -d resource={url} -d scope=mcp:tools

Interactive login: give {url} to an MCP client that does OAuth (authorization code + PKCE).
  It finds the dev issuer through the metadata, registers itself (RFC 7591, loopback redirect URIs only),
  and the issuer's consent page approves it as user dev-user; access tokens last 15 minutes and are refreshed.

MCP Inspector, CLI mode (Inspector 2 needs Node >= 22.19):
  npx -y @modelcontextprotocol/inspector@2 --cli {url} --transport http --header "Authorization: Bearer $READER_TOKEN" --method tools/list
  npx -y @modelcontextprotocol/inspector@2 --cli {url} --transport http --header "Authorization: Bearer $READER_TOKEN" --method tools/call --tool-name whoami
"#
    )
}

/// Lifetime of the two tokens `mcpgate dev` prints.
const BANNER_TOKEN_TTL: i64 = 3600;

/// Run `mcpgate dev`: the gateway on the embedded `config/dev.yaml`, the development
/// issuer and the demo MCP server, until the process is stopped.
pub fn run(ports: Ports) -> ExitCode {
    match serve(ports) {
        Ok(never) => never,
        Err(e) => {
            crate::logs::flush();
            eprintln!("mcpgate dev: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `127.0.0.1:<port>`; port 0 becomes the port the kernel chose.
fn bind(port: u16, what: &str, flag: &str) -> Result<(Bound, u16), String> {
    let b = Bound::bind(&format!("{HOST}:{port}"))
        .map_err(|e| format!("{e} (the {what}; choose another port with {flag} PORT)"))?;
    let real = b.local_addr()?.port();
    Ok((b.rename(format!("{HOST}:{real}")), real))
}

fn serve(ports: Ports) -> Result<ExitCode, String> {
    let (public, gateway) = bind(ports.gateway, "gateway", "--port")?;
    let (admin_socket, admin) = bind(ports.admin, "admin listener", "--admin-port")?;
    let (issuer_socket, issuer_port) = bind(ports.issuer, "dev issuer", "--issuer-port")?;
    let (demo_socket, demo_port) = bind(ports.demo, "demo MCP server", "--demo-port")?;
    let ports = Ports {
        gateway,
        admin,
        issuer: issuer_port,
        demo: demo_port,
    };
    let urls = Urls::new(ports);
    let config =
        crate::config::Config::from_yaml("config/dev.yaml (embedded)", &dev_config(ports)?)
            .map_err(|e| e.to_string())?;
    let resources: Vec<String> = config
        .routes
        .iter()
        .map(|r| r.resource.resource.clone())
        .collect();
    let issuer = DevIssuer::new(&urls.issuer, resources)?;
    let mcp = urls.mcp();
    let reader = issuer.mint("reader", "reader", &mcp, "mcp:tools", BANNER_TOKEN_TTL)?;
    let admin_token = issuer.mint(
        "admin",
        "admin",
        &mcp,
        "mcp:tools mcp:admin",
        BANNER_TOKEN_TTL,
    )?;
    // The issuer's socket listens already: the gateway's first key fetch waits in its
    // backlog until the issuer serves, instead of failing.
    let opts = RunOptions {
        watch: None,
        sockets: Some(GatewaySockets {
            public,
            admin: admin_socket,
        }),
    };
    let (mut server, _) = crate::server::build_server(config, opts)?;
    crate::server::add_service(&mut server, "dev issuer", issuer, issuer_socket);
    crate::server::add_service(&mut server, "demo MCP server", demo::DemoMcp, demo_socket);
    println!("{}", banner(&urls, &reader, &admin_token));
    server.run_forever()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_the_shipped_config() {
        let shipped: Yaml = serde_yaml::from_str(DEV_CONFIG).unwrap();
        let rendered: Yaml = serde_yaml::from_str(&dev_config(Ports::default()).unwrap()).unwrap();
        assert_eq!(shipped, rendered);
    }

    #[test]
    fn other_ports_move_every_address() {
        let ports = Ports {
            gateway: 1001,
            admin: 1002,
            issuer: 1003,
            demo: 1004,
        };
        let text = dev_config(ports).unwrap();
        for old in ["8080", "8081", "8082", "9090"] {
            assert!(!text.contains(old), "{old} left in:\n{text}");
        }
        let c = crate::config::Config::from_yaml("dev", &text).unwrap();
        assert_eq!(c.listeners.address, "127.0.0.1:1001");
        assert_eq!(c.listeners.admin_address, "127.0.0.1:1002");
        assert_eq!(c.routes[0].resource.resource, "http://127.0.0.1:1001/mcp");
        let urls = Urls::new(ports);
        let b = banner(&urls, "R", "A");
        for old in ["8080", "8081", "8082", "9090"] {
            assert!(!b.contains(old), "{old} left in the banner:\n{b}");
        }
        assert!(b.contains("Node >= 22.19"));
    }
}
