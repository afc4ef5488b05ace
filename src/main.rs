//! The `mxwatch` binary: arguments, logging, the command, an exit code.
//! Every subcommand lives in `cli/`, over the library.

// Results go through `cli::Output`, which a closed pipe cannot panic.
#![warn(clippy::print_stdout)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let context = cli::init(cli::Cli::parse());
    match cli::run(context) {
        Ok(code) => code,
        Err(e) => {
            cli::fail(&e);
            // An argument that does not read is a usage error, as clap's are.
            match e.downcast_ref::<cli::Usage>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}
