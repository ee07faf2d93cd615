//! `mcpgate check`: exactly the validation `mcpgate run` does, then a summary; errors as
//! `FILE:LINE:COLUMN: reason`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// Validate the config at `path`, print its summary and warnings (stdout) or the error
/// (stderr).
pub fn run(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            print!("{}", c.summary());
            for w in crate::config::case_warnings(&c.routes) {
                println!("  warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
