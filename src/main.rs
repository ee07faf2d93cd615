//! The `mcpgate` command: `run`, `check`, `dev`, `hash-key`, `pin`, `revoke`. Parses arguments,
//! sets up logging and dispatches to `mcpgate::server::run` or `mcpgate::cli`. No logic
//! lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use mcpgate::cli;

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
    /// Ask a route's MCP server for its tools and write the pinned file for the route's
    /// `pin_tools.file` (SHA-256 of each tool's definition).
    Pin {
        #[arg(long, short)]
        config: PathBuf,
        /// The route whose server is asked (its upstream and the path it forwards to).
        #[arg(long)]
        route: String,
        /// Ask this URL instead (e.g. the gateway's URL of the route).
        #[arg(long)]
        url: Option<String>,
        /// A file holding a token sent as `Authorization: Bearer`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A further request header, `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Write the file here (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
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
        Command::Check { config } => cli::check::run(&config),
        Command::Run { config } => {
            init_logging(cli.log_format);
            mcpgate::server::run(&config)
        }
        Command::HashKey {
            id,
            subject,
            scopes,
            expires,
        } => cli::hash_key::run(cli::hash_key::Args {
            id,
            subject,
            scopes,
            expires,
        }),
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
        } => cli::revoke::run(cli::revoke::Args {
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
        }),
        Command::Pin {
            config,
            route,
            url,
            token_file,
            headers,
            out,
        } => cli::pin::run(cli::pin::Args {
            config,
            route,
            url,
            token_file,
            headers,
            out,
        }),
        Command::Dev => {
            init_logging(cli.log_format);
            cli::dev::run()
        }
    }
}
