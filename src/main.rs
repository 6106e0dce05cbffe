//! The `jwksd` binary: parse the command line, set up logging, run, report errors.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = jwksd::cli::Cli::parse();
    // `serve` installs the log itself once it has read `server.log_format`.
    if !matches!(cli.command, jwksd::cli::Command::Serve { .. }) {
        jwksd::logging::init(jwksd::logging::LogFormat::Text);
    }
    match jwksd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
