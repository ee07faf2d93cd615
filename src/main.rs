//! The `mcpgate` command: `run`, `check`, `dev`, `hash-key`. Parses arguments, sets up logging and
//! hands a compiled config to `mcpgate::build_server`. No request logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pingora_core::services::listening::Service;

use mcpgate::config::Config;
use mcpgate::dev;

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
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // pingora logs whole request headers (Authorization, the query) at trace level:
    // tokens never reach a log, whatever RUST_LOG asks for.
    let filter = ["pingora_proxy", "pingora_core", "pingora"]
        .iter()
        .filter_map(|t| format!("{t}=debug").parse().ok())
        .fold(filter, |f, d| f.add_directive(d));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.summary());
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
            let key = mcpgate::apikeys::strip_one_newline(&input);
            let entry = mcpgate::apikeys::NewEntry {
                id: id.as_deref(),
                subject: subject.as_deref(),
                scopes: &scopes,
                expires: expires.as_deref(),
            };
            match mcpgate::apikeys::render_entry(key, &entry) {
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
        Command::Dev => {
            init_logging(cli.log_format);
            match run_dev() {
                Ok(never) => never,
                Err(e) => {
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
