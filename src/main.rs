//! The `jwksd` binary: parse the command line, set up logging, run, report errors.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = jwksd::cli::Cli::parse();
    // `serve` installs the log itself once it has read `server.log_format`.
    if !matches!(cli.command, jwksd::cli::Command::Serve { .. }) {
        jwksd::logging::init(jwksd::logging::LogFormat::Text);
    }
    let json = cli.command.wants_json();
    match jwksd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Whoever asked for JSON reads stdout: the error goes there, as JSON, unless the
        // JSON printed already says it.
        Err(err) if json && err.downcast_ref::<jwksd::cli::AlreadyReported>().is_some() => {
            std::process::ExitCode::FAILURE
        }
        Err(err) if json => {
            println!("{}", jwksd::cli::json_error(&err));
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprint!("{}", jwksd::cli::error_report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
