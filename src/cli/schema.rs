//! `mcpgate schema`: the JSON Schema of the config file on stdout
//! (`config::schema`). `mcpgate schema > helm/mcpgate/files/config.schema.json` regenerates
//! the committed copy the Helm chart embeds.

use std::io::Write;
use std::process::ExitCode;

pub fn run() -> ExitCode {
    let text = crate::config::schema::render();
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the schema: {e}");
            ExitCode::FAILURE
        }
    }
}
