//! The command line: the clap definitions (their doc comments are the `--help` text) and
//! the dispatch to one module per command. `serve`, `check-config`, `backup` and
//! `audit verify` work on the configuration and the store directly; `keys`, `token`,
//! `doctor` and `register` are clients of a running service through [`client`];
//! `healthcheck` is the container probe.
//!
//! This tree is the only part of the library that uses `anyhow`: its errors end up printed
//! for a person by `main`, cause chain included.

pub mod audit;
pub mod backup;
pub mod callers;
pub mod client;
pub mod doctor;
pub mod healthcheck;
pub mod keys;
pub mod register;
pub mod serve;
pub mod token;

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::vendor::{self, Vendor};

/// `--vendor`: the [`Vendor::id`] of a vendor of [`vendor::ALL`], in that order, read as
/// that vendor. The vendor list is `vendor`'s; how it shows in `--help` is the command
/// line's.
fn vendor_parser() -> impl TypedValueParser<Value = Vendor> {
    let values = vendor::ALL.map(|v| {
        let value = PossibleValue::new(v.id());
        match v {
            Vendor::Oracle => value.help("Oracle Health, formerly Cerner"),
            _ => value,
        }
    });
    PossibleValuesParser::new(values).map(|id| {
        vendor::ALL
            .into_iter()
            .find(|v| v.id() == id)
            // The parser admits only the ids above.
            .unwrap_or(Vendor::Generic)
    })
}

/// Every boolean flag that a variable can set (`JWKSD_INIT=1`): reads what people write,
/// with the configuration's one reading of booleans ([`crate::config::parse_bool`]).
fn boolean_parser() -> impl TypedValueParser<Value = bool> {
    clap::builder::StringValueParser::new().try_map(|text| crate::config::parse_bool(&text))
}

#[derive(Parser, Debug)]
#[command(
    name = "jwksd",
    version,
    about = "Keeps, rotates and publishes the signing keys of SMART on FHIR backend integrations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: the public JWKS listener and the private admin listener.
    Serve {
        /// TOML configuration file; without one, built-in defaults and JWKSD_ variables apply.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
        /// Create a new key store on this first start although the master key is external
        /// (never needed with the development master key in data_dir).
        #[arg(long, env = "JWKSD_INIT", value_parser = boolean_parser())]
        init: bool,
        /// Authenticate a store written by a jwksd from before key rows carried MACs (once,
        /// after checking `jwksd keys list` and `jwksd audit verify` show what you expect).
        #[arg(long, env = "JWKSD_UPGRADE_STORE", value_parser = boolean_parser())]
        upgrade_store: bool,
    },
    /// Validate the configuration and print what it resolves to, without starting.
    CheckConfig {
        /// TOML configuration file; without one, built-in defaults and JWKSD_ variables apply.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a consistent copy of the key store to FILE (safe while jwksd runs). The copy
    /// holds only sealed private keys; back up the master key separately.
    Backup {
        /// The service's configuration file, for where the store is.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
        /// Where to write the copy; must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Exit 0 when the service answers ready (for container health probes).
    Healthcheck {
        /// Readiness URL to probe (default: /readyz on the configured public listener).
        #[arg(long)]
        url: Option<String>,
        /// The service's configuration file, for the public listener's address.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect, rotate and revoke keys of a running service.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Get an access token for a client from the running service (prints the token).
    Token {
        /// The client (section name or client_id).
        #[arg(long)]
        client: String,
        /// Scopes to ask for (default: the client's configured scope).
        #[arg(long)]
        scope: Option<String>,
        /// Base URL of the private listener (default: server.private_listen of the
        /// configuration, http://127.0.0.1:8081 without one).
        #[arg(long, env = "JWKSD_SERVER")]
        server: Option<String>,
        /// The service's configuration file, for the private listener's address.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a client's whole path as the EHR sees it, and explain each failure.
    Doctor {
        /// The client to check (its [clients.NAME] section name or its client_id).
        #[arg(long)]
        client: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print (and with --out, write) what the vendor's portal asks for.
    Register {
        /// The client to register (its [clients.NAME] section name or its client_id).
        #[arg(long)]
        client: String,
        /// The EHR vendor whose portal the kit is for (its notes and accepted algorithms).
        #[arg(long, value_parser = vendor_parser(), default_value = "generic")]
        vendor: Vendor,
        /// Directory to write jwks.json, one PEM per key and a README for the ticket; it
        /// must not exist yet or be empty, unless --force.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write into an --out directory that already holds files (replacing those of the
        /// same name).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a shell completion script for SHELL to standard output, e.g.
    /// `jwksd completions bash > /etc/bash_completion.d/jwksd`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page jwksd(1), in roff, to standard output, e.g.
    /// `jwksd man > /usr/local/share/man/man1/jwksd.1`.
    Man,
    /// Read and check the audit trail: list, export (JSON lines) and verify the hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the bearer tokens of calling services.
    Callers {
        #[command(subcommand)]
        command: CallersCommand,
    },
}

/// How an admin command finds the service. Without `--server` and a token, both follow the
/// service's own configuration (see [`client`]).
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the private (admin) listener (default: server.private_listen of the
    /// configuration, http://127.0.0.1:8081 without one).
    #[arg(long, env = "JWKSD_SERVER", global = true)]
    server: Option<String>,
    /// The service's configuration file: the admin URL and token follow it.
    #[arg(long, env = "JWKSD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// File holding the admin token, when JWKSD_ADMIN_TOKEN is not set (default: where the
    /// configuration puts it: server.admin_token_file or <data_dir>/admin.token).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long, global = true)]
    json: bool,
}

impl AdminArgs {
    /// The admin client these arguments name.
    pub fn client(&self) -> anyhow::Result<client::Client> {
        client::Client::admin(&client::Target {
            server: self.server.clone(),
            config: self.config.clone(),
            admin_token_file: self.admin_token_file.clone(),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List the keys of a key set, newest first.
    List {
        /// The key set ([keysets.NAME]).
        #[arg(long, default_value = "default")]
        keyset: String,
    },
    /// Promote the published next key; refused while it is younger than `prepublish`.
    Rotate {
        /// The key set ([keysets.NAME]).
        #[arg(long, default_value = "default")]
        keyset: String,
        /// Rotate even if the next key was published too recently (verifiers with a cached
        /// JWKS may reject new assertions until their cache expires).
        #[arg(long)]
        force: bool,
    },
    /// Take a key out of the JWKS at once; it never signs again.
    Revoke {
        /// The kid of the key to revoke (see `jwksd keys list`).
        kid: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain of the store's audit trail; names the first bad record and
    /// prints the chain's head hash (compare it with the copy in the log).
    Verify {
        /// The service's configuration file, for the store and the master key.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The audit trail of a running service as a table, oldest first (default: the last
    /// 24 hours).
    List {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Show at most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit trail of a running service as JSON lines, one record per line, oldest
    /// first (default: all of it), for a log archive or a SIEM.
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Which audit records `audit list` and `audit export` show.
#[derive(Args, Debug, Clone, Default)]
pub struct AuditFilterArgs {
    /// Records from this time on: RFC 3339 (`2026-11-28T00:00:00Z`) or an age (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// A client's name or its client_id.
    #[arg(long)]
    pub client: Option<String>,
    /// A caller's name.
    #[arg(long)]
    pub caller: Option<String>,
    /// A key id.
    #[arg(long)]
    pub kid: Option<String>,
    /// An event, such as `assertion.issued` or `key.promoted`.
    #[arg(long)]
    pub event: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CallersCommand {
    /// Print a fresh 256-bit token and the SHA-256 to put in the configuration.
    NewToken {
        /// Print {"token", "token_sha256"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// An error as a person reads it: `error: ` and the message, then one `caused by:` line
/// per cause that adds something. Many errors already carry their cause's words (`cannot
/// listen on ...: Address already in use`), and saying them twice reads as two problems.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut report = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if cause.trim().is_empty() || report.contains(&cause) {
            continue;
        }
        report.push_str(&format!("  caused by: {cause}\n"));
    }
    report
}

/// A failure whose details the command already printed in its `--json` output (the
/// doctor's failed checks): the exit code says it, nothing more is printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AlreadyReported(pub String);

/// What a failed `--json` command prints on standard output.
#[derive(Debug, serde::Serialize)]
pub struct JsonError {
    /// The error and each cause that adds something, joined by ": ".
    pub error: String,
}

impl Command {
    /// Whether the command was asked for JSON, so that its errors are JSON too.
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Keys { admin, .. }
            | Command::Doctor { admin, .. }
            | Command::Register { admin, .. } => admin.json,
            Command::Token { json, .. } => *json,
            Command::Callers {
                command: CallersCommand::NewToken { json },
            } => *json,
            _ => false,
        }
    }
}

/// `err` as the one-line JSON object a `--json` command prints on failure.
pub fn json_error(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !cause.trim().is_empty() && !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    serde_json::to_string(&JsonError { error: message })
        .unwrap_or_else(|_| r#"{"error": "(unprintable)"}"#.to_owned())
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            init,
            upgrade_store,
        } => serve::serve(config, init, upgrade_store).await,
        Command::CheckConfig { config } => serve::check_config(config),
        Command::Backup { config, out } => backup::backup(config, &out).await,
        Command::Healthcheck { url, config } => healthcheck::healthcheck(url, config).await,
        Command::Keys { admin, command } => keys::run(&admin, command).await,
        Command::Token {
            client,
            scope,
            server,
            config,
            json,
        } => token::token(&client, scope, server, config, json).await,
        Command::Doctor { client, admin } => doctor::run(&admin, &client).await,
        Command::Register {
            client,
            vendor,
            out,
            force,
            admin,
        } => register::run(&admin, &client, vendor, out.as_deref(), force).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "jwksd", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Audit { command } => match command {
            AuditCommand::Verify { config } => audit::verify(config).await,
            AuditCommand::List {
                filter,
                limit,
                admin,
            } => audit::list(&admin, filter, limit).await,
            AuditCommand::Export { filter, admin } => audit::export(&admin, filter).await,
        },
        Command::Callers {
            command: CallersCommand::NewToken { json },
        } => callers::new_token(json),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every `JWKSD_` variable a flag reads, in every subcommand.
    fn flag_variables(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|n| n.to_str()) {
                out.push(name.to_owned());
            }
        }
        for sub in command.get_subcommands() {
            flag_variables(sub, out);
        }
    }

    #[test]
    fn every_vendor_is_a_value_of_register_vendor_and_reads_as_itself() {
        use clap::Parser;
        for vendor in crate::vendor::ALL {
            let cli = Cli::try_parse_from([
                "jwksd",
                "register",
                "--client",
                "c",
                "--vendor",
                vendor.id(),
            ])
            .unwrap();
            match cli.command {
                super::Command::Register { vendor: read, .. } => assert_eq!(read, vendor),
                other => panic!("{other:?}"),
            }
        }
        let cli = Cli::try_parse_from(["jwksd", "register", "--client", "c"]).unwrap();
        assert!(matches!(
            cli.command,
            super::Command::Register {
                vendor: crate::vendor::Vendor::Generic,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["jwksd", "register", "--client", "c", "--vendor", "Epic"])
                .is_err()
        );
        Cli::command().debug_assert();
    }

    /// Every flag a variable sets, in every subcommand, with the subcommand it is in.
    fn flags_with_variables(command: &clap::Command, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            if arg.get_env().is_some() && matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                out.push((command.get_name().to_owned(), arg.clone()));
            }
        }
        for sub in command.get_subcommands() {
            flags_with_variables(sub, out);
        }
    }

    #[test]
    fn every_boolean_variable_reads_the_words_people_write() {
        let mut flags = Vec::new();
        flags_with_variables(&Cli::command(), &mut flags);
        assert!(flags.len() >= 2, "--init and --upgrade-store at least");
        for (_, arg) in flags {
            // The flag's own value parser, given a value as its variable gives one.
            let id = arg.get_id().to_string();
            let long = format!("--{}", arg.get_long().unwrap());
            let command = clap::Command::new("t").arg(
                arg.clone()
                    .env(None::<&str>)
                    .action(clap::ArgAction::Set)
                    .num_args(1)
                    .default_value(None::<&str>)
                    .default_missing_value(None::<&str>),
            );
            let parse = |text: &str| {
                command
                    .clone()
                    .try_get_matches_from(["t", long.as_str(), text])
                    .map(|m| m.get_one::<bool>(&id).copied())
            };
            for (text, meant) in [("1", true), ("yes", true), ("On", true), ("TRUE", true)]
                .into_iter()
                .chain([
                    ("0", false),
                    ("no", false),
                    ("off", false),
                    ("False", false),
                ])
            {
                assert_eq!(parse(text).ok().flatten(), Some(meant), "{arg}: {text}");
            }
            let refusal = parse("maybe").unwrap_err().to_string();
            assert!(
                refusal.contains(crate::config::BOOLEAN_WORDS),
                "{arg}: {refusal}"
            );
        }
    }

    /// Every argument of every subcommand explains itself in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn missing(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                missing(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = Vec::new();
        missing(&Cli::command(), "jwksd", &mut out);
        assert!(out.is_empty(), "arguments without help: {out:?}");
    }

    #[test]
    fn an_error_report_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let err = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:8080: Address already in use")
            .context("jwksd did not start");
        assert_eq!(
            super::error_report(&err),
            "error: jwksd did not start\n  caused by: cannot listen on 127.0.0.1:8080: Address already in use\n"
        );
        let err = anyhow::anyhow!("a").context("b");
        assert_eq!(super::error_report(&err), "error: b\n  caused by: a\n");
    }

    #[test]
    fn the_configuration_knows_every_variable_the_command_line_reads() {
        let mut names = vec![
            "JWKSD_ADMIN_TOKEN".to_owned(),
            "JWKSD_CALLER_TOKEN".to_owned(),
            "JWKSD_LOG".to_owned(),
        ];
        flag_variables(&Cli::command(), &mut names);
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !crate::config::is_command_line_variable(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "the configuration would warn that it ignores {unknown:?}"
        );
    }
}
