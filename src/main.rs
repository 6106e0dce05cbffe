//! The `jwksd` binary: parse the command line, set up logging, run, report errors.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = jwksd::cli::Cli::parse();
    jwksd::logging::init();
    match jwksd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", jwksd::cli::error_report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
