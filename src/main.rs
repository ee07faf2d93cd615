//! The `mcpgate` command: `run`, `check`, `doctor`, `dev`, `schema`, `hash-key`, `pin`,
//! `revoke`, `completions`. Parses arguments, sets up logging and dispatches to
//! `mcpgate::server::run` or `mcpgate::cli`. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};

use mcpgate::cli;

/// mimalloc rather than glibc's malloc: a request allocates and frees many small blocks
/// (headers, claims, log lines) across threads, and glibc spent ~8% of a first-seen
/// request's CPU there (bench/README.md); mimalloc also keeps no per-block header, which
/// matters for the verified-token cache's bytes per entry.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the package version and the git revision it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("MCPGATE_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "mcpgate",
    version = VERSION,
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
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file; reload it when it changes or on SIGHUP.
    Run {
        /// The config file (YAML; see the README's configuration reference).
        #[arg(long, short, value_hint = ValueHint::FilePath, default_value_os_t = mcpgate::config::default_config_path())]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exit 1 on error.
    Check {
        /// The config file to validate.
        #[arg(long, short, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// Then fetch each issuer's metadata, key set and introspection endpoint, and
        /// report the precise cause of each failure (DNS, connect, TLS, HTTP status, JSON,
        /// issuer mismatch, no usable key).
        #[arg(long)]
        online: bool,
    },
    /// Explain, check by check, why a token would be accepted or refused on a route
    /// (never printing the token); exit 0 when accepted, 1 when refused.
    Doctor {
        /// The config file the route is read from.
        #[arg(long, short, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// The route's `name`.
        #[arg(long)]
        route: String,
        /// A file holding the access token (one trailing newline is ignored).
        #[arg(long)]
        token: PathBuf,
    },
    /// Run the embedded default: gateway, development issuer and demo MCP server, on
    /// 127.0.0.1. Port 0 picks a free port; the banner shows the ports in use.
    Dev {
        /// The gateway's port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The admin listener's port (/metrics, /healthz, /readyz).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// The development issuer's port.
        #[arg(long, default_value_t = 8081)]
        issuer_port: u16,
        /// The demo MCP server's port.
        #[arg(long, default_value_t = 8082)]
        demo_port: u16,
    },
    /// Print the JSON Schema of the config file (generated from the types the parser uses).
    Schema,
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
        /// The config file the route is read from.
        #[arg(long, short, value_hint = ValueHint::FilePath)]
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
        #[arg(long, short, value_hint = ValueHint::FilePath)]
        config: Option<PathBuf>,
        /// The admin listener, e.g. http://127.0.0.1:9090 (default: from the config).
        #[arg(long)]
        admin_url: Option<String>,
        /// File holding the admin token (default: the config's `admin.token_file`).
        #[arg(long, value_hint = ValueHint::FilePath)]
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
    /// Print a shell completion script, e.g. `mcpgate completions bash >
    /// /etc/bash_completion.d/mcpgate`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        Command::Check { config, online } => cli::check::run(&config, online),
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
        Command::Schema => cli::schema::run(),
        Command::Doctor {
            config,
            route,
            token,
        } => cli::doctor::run(cli::doctor::Args {
            config,
            route,
            token_file: token,
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
        Command::Dev {
            port,
            admin_port,
            issuer_port,
            demo_port,
        } => {
            init_logging(cli.log_format);
            cli::dev::run(cli::dev::Ports {
                gateway: port,
                admin: admin_port,
                issuer: issuer_port,
                demo: demo_port,
            })
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "mcpgate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Every subcommand, flag and positional argument of the whole command tree, with the
    /// help text it lacks: none may lack one.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            // clap's own --help and --version carry their help.
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(name.clone());
            }
            missing_help(sub, &name, out);
        }
    }

    #[test]
    fn every_flag_and_subcommand_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        missing_help(&cmd, "mcpgate", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        // The check itself finds a missing help.
        let bare = clap::Command::new("x")
            .arg(clap::Arg::new("flag").long("flag"))
            .subcommand(clap::Command::new("sub"));
        let mut found = Vec::new();
        missing_help(&bare, "x", &mut found);
        assert_eq!(found, vec!["x flag", "x sub"]);
    }
}
