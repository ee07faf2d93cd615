//! The `mcpgate` command: `run`, `check`, `dev`, `hash-key`, `revoke`. Parses arguments, sets up logging and
//! hands a compiled config to `mcpgate::build_server`. No request logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pingora_core::services::listening::Service;

use mcpgate::cli::dev;
use mcpgate::config::Config;

/// mimalloc rather than glibc's malloc: a request allocates and frees many small blocks
/// (headers, claims, log lines) across threads, and glibc spent ~8% of a first-seen
/// request's CPU there (bench/README.md); mimalloc also keeps no per-block header, which
/// matters for the verified-token cache's bytes per entry.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "OAuth 2.1 resource-server gateway for MCP servers"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        #[arg(long, short, default_value_os_t = mcpgate::config::default_config_path())]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exit 1 on error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded default: gateway, development issuer and demo MCP server.
    Dev,
    /// Read an API key on stdin (one trailing newline is stripped) and print the key
    /// file entry to paste under `keys:`. The key itself is never printed or stored.
    HashKey {
        /// Entry id, shown in logs (default: `key-` and the first 8 hex digits of the hash).
        #[arg(long)]
        id: Option<String>,
        /// Subject forwarded as X-Auth-Subject (default: the id).
        #[arg(long)]
        subject: Option<String>,
        /// A scope the key grants (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// RFC 3339 date-time or date after which the key is refused.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke tokens at a running gateway (`POST /revocations` on its admin listener;
    /// with `state.redis` every replica applies it), or list the revocations.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["jti", "subject", "client_id", "list"])))]
    Revoke {
        /// Take the admin address and `admin.token_file` from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The admin listener, e.g. http://127.0.0.1:9090 (default: from the config).
        #[arg(long)]
        admin_url: Option<String>,
        /// File holding the admin token (default: the config's `admin.token_file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Revoke the token with this `jti`.
        #[arg(long)]
        jti: Option<String>,
        /// Revoke every token of this subject (`sub`) issued until now.
        #[arg(long)]
        subject: Option<String>,
        /// Revoke every token of this client (`client_id`/`azp`) issued until now.
        #[arg(long)]
        client_id: Option<String>,
        /// Only tokens of this issuer (`iss`); default any issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// How long the revocation lasts: 90s, 30m, 12h, 7d (default 24h).
        #[arg(long)]
        expires_in: Option<String>,
        /// Free text kept with the revocation (shown in logs and listings).
        #[arg(long)]
        reason: Option<String>,
        /// List the current revocations instead.
        #[arg(long)]
        list: bool,
    },
}

fn init_logging(format: LogFormat) {
    mcpgate::logs::init(match format {
        LogFormat::Json => mcpgate::logs::Format::Json,
        LogFormat::Pretty => mcpgate::logs::Format::Pretty,
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.summary());
                for w in mcpgate::routing::case_warnings(&c.routes) {
                    println!("  warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            init_logging(cli.log_format);
            let config_path = config;
            let config = match Config::load(&config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = mcpgate::RunOptions {
                watch: Some(config_path),
            };
            match mcpgate::build_server(config, opts) {
                Ok((server, _)) => server.run_forever(),
                Err(e) => {
                    mcpgate::flush_logs();
                    eprintln!("mcpgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashKey {
            id,
            subject,
            scopes,
            expires,
        } => {
            use std::io::Read as _;
            let mut input = Vec::new();
            if let Err(e) = std::io::stdin().take(64 * 1024).read_to_end(&mut input) {
                eprintln!("mcpgate hash-key: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
            let key = mcpgate::auth::apikeys::strip_one_newline(&input);
            let entry = mcpgate::auth::apikeys::NewEntry {
                id: id.as_deref(),
                subject: subject.as_deref(),
                scopes: &scopes,
                expires: expires.as_deref(),
            };
            match mcpgate::auth::apikeys::render_entry(key, &entry) {
                Ok(yaml) => {
                    if key.len() < 20 {
                        eprintln!(
                            "mcpgate hash-key: warning: the key is only {} characters; an \
                             unsalted hash of a short key can be brute-forced if the key file leaks",
                            key.len()
                        );
                    }
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mcpgate hash-key: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Revoke {
            config,
            admin_url,
            token_file,
            jti,
            subject,
            client_id,
            issuer,
            expires_in,
            reason,
            list,
        } => {
            let expires_in = match expires_in
                .as_deref()
                .map(mcpgate::auth::revocation::parse_duration)
                .transpose()
            {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("mcpgate revoke: --expires-in: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let body = (!list).then(|| {
                serde_json::json!({
                    "jti": jti, "subject": subject, "client_id": client_id,
                    "issuer": issuer, "expires_in": expires_in, "reason": reason,
                })
            });
            // Absent options are left out (the endpoint refuses nulls for the names).
            let body = body.map(|mut b| {
                if let Some(m) = b.as_object_mut() {
                    m.retain(|_, v| !v.is_null());
                }
                b
            });
            let request = mcpgate::auth::revocation::CliRequest {
                config,
                admin_url,
                token_file,
                body,
            };
            match mcpgate::auth::revocation::run_cli(request) {
                Ok(answer) => {
                    println!("{}", answer.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mcpgate revoke: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev => {
            init_logging(cli.log_format);
            match run_dev() {
                Ok(never) => never,
                Err(e) => {
                    mcpgate::flush_logs();
                    eprintln!("mcpgate dev: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_dev() -> Result<ExitCode, String> {
    let config = Config::from_yaml("config/dev.yaml (embedded)", dev::DEV_CONFIG)
        .map_err(|e| e.to_string())?;
    let resources: Vec<String> = config.routes.iter().map(|r| r.resource.clone()).collect();
    let issuer = dev::DevIssuer::new(dev::ISSUER_URL, resources)?;
    let reader = issuer.mint("reader", dev::RESOURCE, "mcp:tools", 3600)?;
    let admin = issuer.mint("admin", dev::RESOURCE, "mcp:tools mcp:admin", 3600)?;
    let (mut server, _) = mcpgate::build_server(config, mcpgate::RunOptions::default())?;
    let mut issuer_svc = Service::new("dev issuer".to_string(), issuer);
    issuer_svc.add_tcp(dev::ISSUER_ADDR);
    server.add_service(issuer_svc);
    let mut demo = Service::new("demo MCP server".to_string(), dev::DemoMcp);
    demo.add_tcp(dev::DEMO_ADDR);
    server.add_service(demo);
    println!("{}", dev::banner(&reader, &admin));
    server.run_forever()
}
