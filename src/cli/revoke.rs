//! `mcpgate revoke`: a client of the admin endpoint `POST /revocations` (and `GET` for
//! `--list`), with the admin address and token taken from a config file or given directly.

use std::time::Duration;

use crate::compile::strip_one_newline;
use crate::config::Config;

/// Deadline of the one call to the admin listener (it answers at once, or within the
/// Redis write's own bounds).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `90`, `90s`, `30m`, `12h`, `7d` → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (90s, 30m, 12h, 7d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} is not a duration (90s, 30m, 12h, 7d)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

// ---------------------------------------------------------------------------------------------
// `mcpgate revoke`: a client of the admin endpoint.
// ---------------------------------------------------------------------------------------------

/// What `mcpgate revoke` was asked.
pub struct CliRequest {
    pub config: Option<std::path::PathBuf>,
    pub admin_url: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    /// `None`: list the current revocations.
    pub body: Option<serde_json::Value>,
}

/// The admin URL for a listen address (`0.0.0.0` and `::` are reached on loopback).
pub fn admin_url_for(address: &str) -> Result<String, String> {
    let a: std::net::SocketAddr = address
        .parse()
        .map_err(|_| format!("admin.address {address:?} is not ip:port"))?;
    let ip = match a.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, a.port())
    ))
}

/// Post (or list) revocations at a gateway's admin listener; returns the answer body.
pub fn run_cli(req: CliRequest) -> Result<String, String> {
    crate::server::install_crypto_provider();
    let config = req
        .config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    let admin_url = match (&req.admin_url, &config) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(c)) => admin_url_for(&c.listeners.admin_address)?,
        (None, None) => return Err("give --config or --admin-url".into()),
    };
    let token_file = match (&req.token_file, &config) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c
            .listeners
            .admin_token
            .as_ref()
            .map(|t| t.file.clone())
            .ok_or("the config has no admin.token_file (or give --token-file)")?,
        (None, None) => return Err("give --config or --token-file".into()),
    };
    let raw = std::fs::read(&token_file)
        .map_err(|e| format!("cannot read {}: {e}", token_file.display()))?;
    let token = String::from_utf8(strip_one_newline(&raw).to_vec())
        .map_err(|_| format!("{} does not hold a text token", token_file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{admin_url}/revocations");
        let request = match &req.body {
            Some(body) => client.post(&url).json(body),
            None => client.get(&url),
        };
        let resp = request
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{url}: HTTP {}: {}", status.as_u16(), text.trim()))
        }
    })
}

/// What `mcpgate revoke` was given on its command line.
pub struct Args {
    pub config: Option<std::path::PathBuf>,
    pub admin_url: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    pub jti: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub expires_in: Option<String>,
    pub reason: Option<String>,
    pub list: bool,
}

/// Run `mcpgate revoke`: print the gateway's JSON answer, exit 1 on any refusal.
pub fn run(args: Args) -> std::process::ExitCode {
    let expires_in = match args.expires_in.as_deref().map(parse_duration).transpose() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mcpgate revoke: --expires-in: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let body = (!args.list).then(|| {
        let mut b = serde_json::json!({
            "jti": args.jti, "subject": args.subject, "client_id": args.client_id,
            "issuer": args.issuer, "expires_in": expires_in, "reason": args.reason,
        });
        // Absent options are left out (the endpoint refuses nulls for the names).
        if let Some(m) = b.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        b
    });
    let request = CliRequest {
        config: args.config,
        admin_url: args.admin_url,
        token_file: args.token_file,
        body,
    };
    match run_cli(request) {
        Ok(answer) => {
            println!("{}", answer.trim_end());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcpgate revoke: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn admin_url_reaches_wildcard_binds_on_loopback() {
        assert_eq!(
            admin_url_for("0.0.0.0:9090").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(admin_url_for("[::]:9090").unwrap(), "http://[::1]:9090");
        assert_eq!(
            admin_url_for("10.0.0.5:9090").unwrap(),
            "http://10.0.0.5:9090"
        );
    }
}
