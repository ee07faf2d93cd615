//! `mcpgate hash-key`: read an API key on stdin (one trailing newline stripped) and print
//! the key file entry to paste under `keys:`. The key itself is never printed or stored.

use std::io::Read as _;
use std::process::ExitCode;

use crate::auth::apikeys::{render_entry, NewEntry};
use crate::compile::strip_one_newline;

/// Most bytes read from stdin: a key is at most the 16 KiB the gateway reads from a
/// request, so anything much larger is not a key.
const MAX_INPUT: u64 = 64 * 1024;
/// Keys shorter than this get a warning: an unsalted hash of a short key can be
/// brute-forced if the key file leaks.
const SHORT_KEY: usize = 20;

/// `--id`, `--subject`, `--scope`, `--expires`.
pub struct Args {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    pub expires: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_INPUT).read_to_end(&mut input) {
        eprintln!("mcpgate hash-key: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let key = strip_one_newline(&input);
    let entry = NewEntry {
        id: args.id.as_deref(),
        subject: args.subject.as_deref(),
        scopes: &args.scopes,
        expires: args.expires.as_deref(),
    };
    match render_entry(key, &entry) {
        Ok(yaml) => {
            if key.len() < SHORT_KEY {
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
