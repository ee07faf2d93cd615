//! `mcpgate check`: exactly the validation `mcpgate run` does, then a summary; errors as
//! `FILE:LINE:COLUMN: reason`. With `--online`, then asks each issuer (see [`super::online`]).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// Validate the config at `path`, print its summary and warnings (stdout) or the error
/// (stderr); with `online`, then check each issuer's endpoints.
pub fn run(path: &Path, online: bool) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            print!("{}", c.summary());
            for w in crate::config::warnings(&c.routes) {
                println!("  warning: {w}");
            }
            if online && !super::online::run(&c) {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
