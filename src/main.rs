//! The `jwksd` binary: parse the command line, set up logging, run, report errors.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = jwksd::cli::Cli::parse();
    // `serve` installs the log itself once it has read `server.log_format`.
    if !matches!(cli.command, jwksd::cli::Command::Serve { .. }) {
        jwksd::logging::init(jwksd::logging::LogFormat::Text);
        end_quietly_when_the_reader_goes();
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

/// `jwksd check-config | head -2`: Rust ignores SIGPIPE, so `println!` into a pipe whose
/// reader has gone panics. A command that prints ends there the way Unix tools do, with
/// status 141 (128 + SIGPIPE) and nothing on stderr; every other panic is reported as usual.
fn end_quietly_when_the_reader_goes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}
