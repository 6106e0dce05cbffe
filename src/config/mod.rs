//! Configuration: defaults, then a TOML file, then `JWKSD_` environment variables, then
//! validation into a [`Config`] that the rest of jwksd can trust. Every problem found is
//! reported at once, each at its place in the user's terms (the file's line and column, or
//! the variable) and with what to do, and no message shows a secret.
//!
//! This module owns [`Config`], [`ConfigError`] and the load pipeline (read the file,
//! overlay the environment, deserialise, validate each part). The parts, each a leaf or
//! depending only on leaves, never on this module:
//!
//! - `env`: the `JWKSD_` overlay (double-underscore paths, `_FILE` values, dashed section
//!   names, refusals);
//! - `origin`: where each value came from (the user's file, by line and column, or the
//!   variable), and every problem prefixed with that place;
//! - `shape`: the merged table read into each section key by key, so that one unknown key
//!   or wrong type neither hides the other problems nor causes knock-on ones;
//! - `report`: describing TOML and serde errors without quoting values;
//! - `values`: durations, numbers-or-strings, URLs ([`ConfigUrl`]), digests;
//! - `server`: `[server]`, with the secrets in `secrecy` types and the admin token kept
//!   only as its SHA-256;
//! - `keysets`: `[keysets.*]` and their timing rules;
//! - `clients`: `[clients.*]` and `[callers.*]`, the part a reload (SIGHUP) applies.
//!
//! `jwksd.example.toml` at the repository root documents every key; `example` (tests)
//! keeps it complete.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod clients;
mod env;
#[cfg(test)]
mod example;
mod keysets;
mod origin;
mod report;
mod server;
mod shape;
mod values;

pub use clients::{
    Access, CallerConfig, ClientConfig, MAX_ASSERTION_LIFETIME, MIN_ASSERTION_LIFETIME,
};
pub use keysets::{is_valid_keyset_name, KeysetConfig, DEFAULT_KEYSET};
pub use origin::Provenance;
pub use server::IpNetwork;
pub use server::{
    AdminTokenSource, Database, DatabaseUrl, HttpLimits, MasterKeySource, SecretDigests,
    ServerConfig, TlsFiles,
};
pub use values::{parse_bool, show as show_duration, ConfigUrl, Flag, BOOLEAN_WORDS};

pub use env::is_command_line_variable;
use env::{hide_file_contents, overlay_env, EnvSource};
use origin::Finding;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub keysets: BTreeMap<String, KeysetConfig>,
    /// Clients and callers: the part that SIGHUP reloads.
    pub access: Access,
    /// The file this configuration was read from, for reloads.
    pub source: Option<PathBuf>,
    /// Things that are allowed but probably wrong; logged at start.
    pub warnings: Vec<String>,
    /// Where each value came from (the file's line, or the variable), for `check-config`.
    pub provenance: Provenance,
}

/// The configuration could not be used. Holds every problem found, each a sentence that
/// says what to change.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration is not valid:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn hiding_file_contents(problems: Vec<String>, sources: &[EnvSource]) -> Self {
        ConfigError {
            problems: hide_file_contents(problems, sources),
        }
    }
}

/// The sections as written. The loader fills it section by section (`shape`); its
/// `Deserialize` is the list of sections that `example` checks the example file against.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    keysets: BTreeMap<String, keysets::RawKeyset>,
    #[serde(default)]
    clients: BTreeMap<String, clients::RawClient>,
    #[serde(default)]
    callers: BTreeMap<String, clients::RawCaller>,
}

impl Config {
    /// Reads the optional TOML file, overlays `env` (pairs of name and value, normally
    /// `std::env::vars()`), and validates the result. Every problem is reported at its place
    /// in the user's terms (the file's line and column, or the variable), all of them at once.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let (mut table, index) = match file {
            None => (toml::Table::new(), None),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    // The places are taken from the user's own text, before any merging.
                    Ok(table) => (table, Some(origin::FileIndex::new(path, &text))),
                    Err(e) => {
                        let origin = path.display().to_string();
                        return Err(ConfigError {
                            problems: vec![report::syntax_error(
                                &origin,
                                &text,
                                e.span(),
                                e.message(),
                            )],
                        });
                    }
                },
                Err(e) => {
                    return Err(ConfigError {
                        problems: vec![format!(
                            "cannot read the configuration file {}: {e}; check --config or JWKSD_CONFIG",
                            path.display()
                        )],
                    })
                }
            },
        };
        let keys = [
            ("server", shape::keys_of::<server::RawServer>()),
            ("keysets", shape::keys_of::<keysets::RawKeyset>()),
            ("clients", shape::keys_of::<clients::RawClient>()),
            ("callers", shape::keys_of::<clients::RawCaller>()),
        ];
        let sources = overlay_env(&mut table, env, &keys, &mut problems, &mut warnings);
        let mut findings: Vec<Finding> = problems.into_iter().map(Finding::text).collect();
        let mut refused = shape::Refused::default();
        let raw = shape_sections(table, &mut findings, &mut refused);
        let mut problems = Vec::new();
        let mut config = validate(raw, &refused, &mut problems, warnings);
        findings.extend(problems.into_iter().map(Finding::text));
        let places = origin::Places {
            file: index.as_ref(),
            env: &sources,
        };
        let problems = places.describe(findings);
        config.source = file.map(Path::to_path_buf);
        config.warnings = hide_file_contents(std::mem::take(&mut config.warnings), &sources);
        config.provenance = Provenance::new(index, &sources);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::hiding_file_contents(problems, &sources))
        }
    }

    /// The key set served at `/.well-known/jwks.json`, if configured.
    pub fn default_keyset(&self) -> Option<&KeysetConfig> {
        self.keysets.get(DEFAULT_KEYSET)
    }
}

/// The merged table read into the raw sections, key by key (see `shape`).
fn shape_sections(
    mut table: toml::Table,
    findings: &mut Vec<Finding>,
    refused: &mut shape::Refused,
) -> RawConfig {
    shape::top_level(&mut table, findings);
    let server = shape::section("server", table.remove("server"), findings, refused);
    let mut raw = RawConfig {
        server,
        ..RawConfig::default()
    };
    for (name, value) in shape::named_tables("keysets", table.remove("keysets"), findings) {
        let path = format!("keysets.{name}");
        let keyset = shape::section(&path, Some(value), findings, refused);
        raw.keysets.insert(name, keyset);
    }
    for (name, value) in shape::named_tables("clients", table.remove("clients"), findings) {
        let path = format!("clients.{name}");
        let client = shape::section(&path, Some(value), findings, refused);
        raw.clients.insert(name, client);
    }
    for (name, value) in shape::named_tables("callers", table.remove("callers"), findings) {
        let path = format!("callers.{name}");
        let caller = shape::section(&path, Some(value), findings, refused);
        raw.callers.insert(name, caller);
    }
    raw
}

fn validate(
    raw: RawConfig,
    refused: &shape::Refused,
    problems: &mut Vec<String>,
    mut warnings: Vec<String>,
) -> Config {
    let server = server::validate(raw.server, refused, problems, &mut warnings);
    let (keysets, keyset_names) = keysets::validate(raw.keysets, refused, problems, &mut warnings);
    if matches!(server.database, Database::Postgres(_)) {
        keysets::check_replica_timing(&keysets, server.poll_interval, problems);
    }
    let access = clients::validate_access(
        raw.clients,
        raw.callers,
        &keyset_names,
        refused,
        problems,
        &mut warnings,
    );
    Config {
        server,
        keysets,
        access,
        source: None,
        warnings,
        provenance: Provenance::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, RsaBits};

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwksd.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env)
    }

    fn problems(toml: &str, env: &[(&str, &str)]) -> String {
        load(toml, env).unwrap_err().to_string()
    }

    #[test]
    fn no_configuration_at_all_gives_a_usable_default_key_set() {
        let config = Config::load(None, Vec::new()).unwrap();
        let keyset = config.default_keyset().unwrap();
        assert_eq!(keyset.alg, Algorithm::Rs384);
        assert_eq!(keyset.rsa_bits, RsaBits::B2048);
        assert_eq!(keyset.timing.jwks_max_age, 3600);
        assert_eq!(keyset.timing.prepublish, 75 * 60);
        assert_eq!(keyset.timing.retire_grace, 86_400);
        assert_eq!(keyset.timing.rotation_period, Some(90 * 86_400));
        assert_eq!(keyset.cert_subject, "CN=default");
        assert_eq!(config.server.public_listen, "127.0.0.1:8080");
        assert_eq!(
            config.server.database,
            Database::Sqlite("data/jwksd.db".into())
        );
    }

    #[test]
    fn environment_overrides_the_file_with_double_underscore_paths() {
        let config = load(
            "[keysets.default]\njwks_max_age = \"30m\"\nprepublish = \"40m\"\n",
            &[
                ("JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE", "10m"),
                ("JWKSD_KEYSETS__DEFAULT__RSA_BITS", "3072"),
                ("JWKSD_SERVER__PUBLIC_LISTEN", "0.0.0.0:9000"),
                ("JWKSD_SERVER", "http://127.0.0.1:8081"),
            ],
        )
        .unwrap();
        let keyset = config.default_keyset().unwrap();
        assert_eq!(keyset.timing.jwks_max_age, 600);
        assert_eq!(keyset.timing.prepublish, 2400);
        assert_eq!(keyset.rsa_bits, RsaBits::B3072);
        assert_eq!(config.server.public_listen, "0.0.0.0:9000");
    }

    #[test]
    fn an_ipv6_listen_address_from_the_environment_is_an_address_not_a_list() {
        let config = load(
            "",
            &[
                ("JWKSD_SERVER__PRIVATE_LISTEN", "[::1]:8081"),
                ("JWKSD_SERVER__PUBLIC_LISTEN", "[::]:8080"),
                ("JWKSD_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.private_listen, "[::1]:8081");
        assert_eq!(config.server.public_listen, "[::]:8080");
        assert_eq!(config.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn file_suffix_reads_secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "t".repeat(40) + "\n").unwrap();
        let config = load(
            "",
            &[(
                "JWKSD_SERVER__ADMIN_TOKEN_FILE",
                token_path.to_str().unwrap(),
            )],
        )
        .unwrap();
        match config.server.admin_token {
            AdminTokenSource::File(path) => assert_eq!(path, token_path),
            other => panic!("{other:?}"),
        }
        let config = load(
            "",
            &[(
                "JWKSD_SERVER__MASTER_KEY_FILE",
                token_path.to_str().unwrap(),
            )],
        )
        .unwrap();
        assert!(matches!(config.server.master_key, MasterKeySource::File(_)));
        let err = problems("", &[("JWKSD_SERVER__PUBLIC_URL_FILE", "/nonexistent/x")]);
        assert!(err.contains("cannot read /nonexistent/x"), "{err}");
    }

    #[test]
    fn prepublish_shorter_than_max_age_is_refused_with_advice() {
        let err = problems(
            "[keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"30m\"\n",
            &[],
        );
        assert!(
            err.contains("prepublish = 30m is shorter than jwks_max_age = 1h"),
            "{err}"
        );
        assert!(err.contains("at least"), "{err}");
    }

    #[test]
    fn on_postgres_prepublish_must_exceed_max_age_plus_the_poll_interval() {
        let postgres = "[server]\ndatabase_url = \"postgres://jwksd@db.example/keys\"\n";
        // Enough for one jwksd per store (prepublish = jwks_max_age), not for replicas.
        let timing = "[keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"1h\"\n";
        load(timing, &[]).unwrap();
        let err = problems(&format!("{postgres}{timing}"), &[]);
        assert!(
            err.contains(
                "keysets.default.prepublish = 1h does not exceed jwks_max_age = 1h plus \
                 server.poll_interval = 5s"
            ),
            "{err}"
        );
        assert!(
            err.contains("Set prepublish to more than 1h 5s (e.g. \"1h 15m 5s\")"),
            "says how to fix it: {err}"
        );
        assert_eq!(err.matches("  - ").count(), 1, "one problem: {err}");
        // The poll interval counts: 1h 5s exactly is not more than 1h plus 5s.
        let err = problems(
            &format!(
                "{postgres}[keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"1h 5s\"\n"
            ),
            &[],
        );
        assert!(err.contains("does not exceed"), "{err}");
        let config = load(
            "[server]\ndatabase_url = \"postgres://jwksd@db.example/keys\"\npoll_interval = \"2s\"\n\
             [keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"1h 3s\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.server.poll_interval,
            std::time::Duration::from_secs(2)
        );
        // The defaults pass (75m > 1h + 5s), and a prepublish below jwks_max_age is reported
        // once, by the rule that applies everywhere.
        load(postgres, &[]).unwrap();
        let err = problems(
            &format!("{postgres}[keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"30m\"\n"),
            &[],
        );
        assert!(err.contains("is shorter than jwks_max_age"), "{err}");
        assert_eq!(err.matches("  - ").count(), 1, "one problem: {err}");
        // Out of range.
        let err = problems("[server]\npoll_interval = \"100ms\"\n", &[]);
        assert!(
            err.contains("server.poll_interval = \"100ms\" must be between 1s and 5m"),
            "{err}"
        );
    }

    #[test]
    fn fetcher_window_is_compared_with_jwks_max_age_only_when_rotation_waits_for_fetches() {
        let timing = "[keysets.default]\njwks_max_age = \"8d\"\nprepublish = \"9d\"\n";
        let config = load(timing, &[]).unwrap();
        assert_eq!(
            config.default_keyset().unwrap().timing.jwks_max_age,
            8 * 86_400
        );
        load(&format!("{timing}rotation_requires_fetch = false\n"), &[]).unwrap();
        let err = problems(&format!("{timing}rotation_requires_fetch = true\n"), &[]);
        assert!(
            err.contains("keysets.default.fetcher_window = 7d is shorter than jwks_max_age = 8d"),
            "{err}"
        );
        load(
            &format!("{timing}rotation_requires_fetch = true\nfetcher_window = \"8d\"\n"),
            &[],
        )
        .unwrap();
        // Still a duration when the gate is off.
        let err = problems(&format!("{timing}fetcher_window = \"soon\"\n"), &[]);
        assert!(
            err.contains("keysets.default.fetcher_window = \"soon\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn weak_or_unknown_key_parameters_are_refused() {
        let err = problems("[keysets.default]\nrsa_bits = 1024\nalg = \"HS256\"\n", &[]);
        assert!(err.contains("rsa_bits = 1024 is not allowed"), "{err}");
        assert!(err.contains("unknown algorithm \"HS256\""), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = problems(
            "[server]\npublic_url = \"ftp://x\"\n[keysets.default]\njwks_max_age = \"10s\"\nretire_grace = \"1m\"\nrotation_period = \"soon\"\n",
            &[],
        );
        for needle in ["public_url", "below 60s", "retire_grace", "not a duration"] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        assert!(problems("[server]\npublik_url = \"x\"\n", &[])
            .contains("server.publik_url is not a known key"));
        assert!(problems("[keysets.\"../etc\"]\n", &[]).contains("must be 1-63 characters"));
    }

    #[test]
    fn rotation_can_be_turned_off_and_named_key_sets_are_exactly_those() {
        let config = load(
            "[keysets.epic-prod]\nalg = \"ES384\"\nrotation_period = \"off\"\n",
            &[],
        )
        .unwrap();
        let keyset = &config.keysets["epic-prod"];
        assert_eq!(keyset.timing.rotation_period, None);
        assert_eq!(keyset.alg, Algorithm::Es384);
        assert!(
            config.default_keyset().is_none(),
            "default is there only when no key set is configured"
        );
        let from_env = load("", &[("JWKSD_KEYSETS__EPIC__ALG", "ES384")]).unwrap();
        assert_eq!(from_env.keysets.keys().collect::<Vec<_>>(), ["epic"]);
    }

    #[test]
    fn type_errors_point_at_the_key_but_never_echo_a_secret() {
        let err = problems("[keysets.default]\nprepublish = 4500\n", &[]);
        assert!(
            err.contains("jwksd.toml: line 2, column 14: keysets.default.prepublish")
                && err.contains("expected a string, found an integer"),
            "{err}"
        );
        let err = problems("", &[("JWKSD_CALLERS__SYNC__CLIENTS", "[1]")]);
        assert!(
            err.contains("JWKSD_CALLERS__SYNC__CLIENTS: callers.sync.clients"),
            "{err}"
        );
        let err = problems("[server]\nadmin_token = 918273645546372819\n", &[]);
        assert!(!err.contains("918273645546372819"), "{err}");
        assert!(err.contains("wrong type"), "{err}");
    }

    #[test]
    fn a_list_from_the_environment_written_as_a_plain_string_is_shown_written_as_a_list() {
        let err = problems("", &[("JWKSD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8")]);
        assert!(
            err.contains(
                "JWKSD_SERVER__TRUSTED_PROXIES=10.0.0.0/8: server.trusted_proxies: wrong type: \
                 expected a sequence, found a string; a variable writes a list as TOML: \
                 JWKSD_SERVER__TRUSTED_PROXIES='[\"10.0.0.0/8\"]'"
            ),
            "{err}"
        );
        let err = problems(
            "",
            &[("JWKSD_CALLERS__SYNC__CLIENTS", "ecw-prod, epic-prod")],
        );
        assert!(
            err.contains("JWKSD_CALLERS__SYNC__CLIENTS='[\"ecw-prod\", \"epic-prod\"]'"),
            "{err}"
        );
        let err = problems(
            "",
            &[("JWKSD_CLIENTS__ECW__AUDIENCES", "https://e.example/t")],
        );
        assert!(
            err.contains("JWKSD_CLIENTS__ECW__AUDIENCES='[\"https://e.example/t\"]'"),
            "{err}"
        );
        // The file's own type error is as it was; allowed_scopes takes a string.
        let err = problems("[server]\ntrusted_proxies = \"10.0.0.0/8\"\n", &[]);
        assert!(
            err.contains("server.trusted_proxies: wrong type: expected a sequence, found a string")
                && !err.contains("as TOML"),
            "{err}"
        );
        let config = load(
            "[clients.ecw]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n",
            &[
                ("JWKSD_CLIENTS__ECW__SCOPE", "system/Patient.read"),
                ("JWKSD_CLIENTS__ECW__ALLOWED_SCOPES", "system/Patient.read"),
            ],
        );
        assert!(config.is_ok(), "{:?}", config.err());
    }

    #[test]
    fn a_variable_and_its_file_form_together_are_refused() {
        let err = problems(
            "",
            &[
                ("JWKSD_SERVER__ADMIN_TOKEN", "x"),
                ("JWKSD_SERVER__ADMIN_TOKEN_FILE", "/tmp/x"),
            ],
        );
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let err = problems("[server]\nadmin_token = \"hunter2\"\n", &[]);
        assert!(err.contains("use at least 32"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "a secret must not be echoed: {err}"
        );
    }

    const SECRET: &str = "s3cr3t-very-long-token-value-0123456789abcdef";

    /// Asserts that `err` names no part of `SECRET` (not even a long fragment of it).
    fn assert_no_secret(err: &str) {
        for window in SECRET.as_bytes().windows(8) {
            let fragment = std::str::from_utf8(window).unwrap();
            assert!(
                !err.contains(fragment),
                "{fragment:?} of the secret is echoed: {err}"
            );
        }
    }

    #[test]
    fn an_unterminated_secret_is_reported_by_position_without_its_text() {
        let err = problems(
            &format!("[server]\npublic_listen = \"127.0.0.1:8080\"\nadmin_token = \"{SECRET}\n"),
            &[],
        );
        assert_no_secret(&err);
        assert!(err.contains("jwksd.toml"), "names the file: {err}");
        assert!(err.contains("line 3, column"), "names the position: {err}");
        assert!(err.contains("server.admin_token"), "names the key: {err}");
        let err = problems(&format!("[server]\nadmin_token = '{SECRET}\n"), &[]);
        assert_no_secret(&err);
        assert!(err.contains("line 2, column"), "{err}");
        let err = problems(&format!("[server]\nadmin_token = \"\"\"{SECRET}\n"), &[]);
        assert_no_secret(&err);
    }

    #[test]
    fn an_invalid_escape_inside_a_secret_is_reported_without_its_text() {
        let (head, tail) = SECRET.split_at(20);
        for escape in ["\\q", "\\uZZZZ", "\\U0011FFFF", "\\x41"] {
            let err = problems(
                &format!("[server]\nadmin_token = \"{head}{escape}{tail}\"\n"),
                &[],
            );
            assert_no_secret(&err);
            assert!(err.contains("line 2, column"), "{escape}: {err}");
            assert!(err.contains("server.admin_token"), "{escape}: {err}");
        }
        // A control character (a raw tab is fine, a raw NUL is not) inside the secret.
        let err = problems(
            &format!("[server]\nadmin_token = \"{head}\u{1}{tail}\"\n"),
            &[],
        );
        assert_no_secret(&err);
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_misplaced_or_mistyped_secret_is_never_echoed() {
        // A typo in the key: the unknown field is named, its value is not.
        let err = problems(&format!("[server]\nadmin_tokn = \"{SECRET}\"\n"), &[]);
        assert_no_secret(&err);
        assert!(err.contains("admin_tokn"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // A string where a section belongs (from the environment).
        let err = problems("", &[("JWKSD_CLIENTS__ECW", SECRET)]);
        assert_no_secret(&err);
        assert!(err.contains("clients.ecw"), "{err}");
        // A list from the environment that is not valid TOML: not echoed either.
        let err = problems(
            "",
            &[("JWKSD_SERVER__TRUSTED_PROXIES", &format!("[\"{SECRET}"))],
        );
        assert_no_secret(&err);
        assert!(err.contains("JWKSD_SERVER__TRUSTED_PROXIES"), "{err}");
        // A secret from the environment is taken as it is, never parsed as TOML.
        let bracketed = format!("[{SECRET}");
        let config = load("", &[("JWKSD_SERVER__ADMIN_TOKEN", &bracketed)]).unwrap();
        match config.server.admin_token {
            // Only the hash is kept: it is the hash of exactly what was given.
            AdminTokenSource::Inline(sha256) => {
                assert_eq!(sha256, values::sha256(bracketed.as_bytes()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_file_variable_names_the_variable_and_path_but_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let bad_utf8 = dir.path().join("latin1");
        std::fs::write(&bad_utf8, b"s3cr3t-very-long\xff-token-value").unwrap();
        let err = problems(
            "",
            &[("JWKSD_SERVER__PUBLIC_URL_FILE", bad_utf8.to_str().unwrap())],
        );
        assert!(err.contains("JWKSD_SERVER__PUBLIC_URL_FILE"), "{err}");
        assert!(err.contains(bad_utf8.to_str().unwrap()), "{err}");
        assert!(err.contains("UTF-8"), "says why: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");

        let wrong = dir.path().join("wrong");
        for (variable, content) in [
            ("JWKSD_SERVER__PUBLIC_URL_FILE", format!("ftp://{SECRET}")),
            ("JWKSD_KEYSETS__DEFAULT__RSA_BITS_FILE", SECRET.to_owned()),
            ("JWKSD_KEYSETS__DEFAULT__PREPUBLISH_FILE", SECRET.to_owned()),
            ("JWKSD_CLIENTS__ECW__AUDIENCES_FILE", format!("[\"{SECRET}")),
            ("JWKSD_CLIENTS__ECW_FILE", SECRET.to_owned()),
        ] {
            std::fs::write(&wrong, format!("{content}\n")).unwrap();
            let err = problems("", &[(variable, wrong.to_str().unwrap())]);
            assert_no_secret(&err);
            assert!(err.contains(variable), "{variable}: {err}");
            assert!(err.contains(wrong.to_str().unwrap()), "{variable}: {err}");
        }
    }

    /// A file whose line 17 holds `key`, as in issue 11's report.
    fn client_file_with(line_17: &str) -> String {
        let mut text = String::from("[server]\npublic_url = \"https://keys.example.org\"\n");
        for i in 0..12 {
            text.push_str(&format!("# comment {i}\n"));
        }
        text.push_str("[clients.ecw]\nclient_id = \"abc\"\n");
        text.push_str(line_17);
        text.push('\n');
        assert_eq!(text.lines().nth(16), Some(line_17));
        text
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_line_in_the_users_file_with_a_suggestion() {
        let err = problems(
            &client_file_with("token_endpiont = \"https://ehr.example/token\""),
            &[],
        );
        assert!(
            err.contains(
                "jwksd.toml: line 17, column 1: clients.ecw.token_endpiont is not a known key; \
                 did you mean `token_endpoint`?"
            ),
            "{err}"
        );
        let err = problems("[sever]\npublic_url = \"https://keys.example.org\"\n", &[]);
        assert!(
            err.contains(
                "jwksd.toml: line 1, column 2: `sever` is not a known section; did you mean \
                 `server`?"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_hides_no_other_problem_and_each_is_at_its_own_line() {
        let err = problems(
            "[server]\npublik_url = \"x\"\n[keysets.default]\nprepublish = 4500\nretire_grace = \"1m\"\n\
             [clients.ecw]\nclient_id = \"abc\"\ntoken_endpoint = \"http://ehr.example/t\"\n",
            &[],
        );
        for needle in [
            "jwksd.toml: line 2, column 1: server.publik_url is not a known key; did you mean `public_url`?",
            "jwksd.toml: line 4, column 14: keysets.default.prepublish: wrong type",
            "jwksd.toml: line 5, column 16: keysets.default.retire_grace = 1m is too short",
            "jwksd.toml: line 8, column 18: clients.ecw.token_endpoint = \"http://ehr.example/t\" must be an https:// URL",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        assert_eq!(
            err.matches("\n  - ").count(),
            4,
            "no knock-on problem: {err}"
        );
    }

    #[test]
    fn a_problem_from_the_environment_names_the_variable_not_a_line() {
        let err = problems(
            "[keysets.default]\nalg = \"ES256\"\n",
            &[("JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE", "abc")],
        );
        assert!(
            err.contains(
                "JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE=abc: keysets.default.jwks_max_age = \"abc\" \
                 is not a duration"
            ),
            "{err}"
        );
        assert!(!err.contains("line"), "{err}");
        let err = problems(
            "",
            &[("JWKSD_CLIENTS__ECW__TOKEN_ENDPIONT", "https://e.example/t")],
        );
        assert!(
            err.contains(
                "JWKSD_CLIENTS__ECW__TOKEN_ENDPIONT=https://e.example/t: \
                 clients.ecw.token_endpiont is not a known key; did you mean `token_endpoint`?"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_key_set_or_client_with_a_bad_value_still_counts_as_configured() {
        let caller = "a".repeat(64);
        let err = problems(
            &format!(
                "[keysets.epic]\nalg = \"ES256\"\njwks_max_age = \"soon\"\n\
                 [clients.ecw]\nclient_id = \"abc\"\nkeyset = \"epic\"\ntoken_endpoint = \"https://e.example/t\"\n\
                 [clients.bad]\nclient_id = \"def\"\nkeyset = \"epic\"\ntoken_endpoint = \"ftp://e.example/t\"\n\
                 [callers.sync]\ntoken_sha256 = \"{caller}\"\nclients = [\"ecw\", \"bad\"]\n"
            ),
            &[],
        );
        assert!(err.contains("keysets.epic.jwks_max_age"), "{err}");
        assert!(err.contains("clients.bad.token_endpoint"), "{err}");
        assert_eq!(
            err.matches("\n  - ").count(),
            2,
            "no knock-on problem: {err}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_adds_no_knock_on_problem() {
        let err = problems(
            "[keysets.default]\njwks_max_age = \"2h\"\nprepublish = 9000\n\
             [clients.ecw]\nclient_id = 5\ntoken_endpoint = [\"https://e.example/t\"]\n",
            &[],
        );
        assert!(
            err.contains("keysets.default.prepublish: wrong type"),
            "{err}"
        );
        assert!(err.contains("clients.ecw.client_id: wrong type"), "{err}");
        assert!(
            err.contains("clients.ecw.token_endpoint: wrong type"),
            "{err}"
        );
        assert_eq!(
            err.matches("\n  - ").count(),
            3,
            "no knock-on problem: {err}"
        );
    }

    #[test]
    fn a_misspelt_required_key_is_not_also_reported_missing() {
        let err = problems(
            "[clients.ecw]\nclient_id = \"abc\"\ntoken_endpiont = \"https://e.example/t\"\n",
            &[],
        );
        assert!(err.contains("did you mean `token_endpoint`?"), "{err}");
        assert!(!err.contains("is required"), "{err}");
        assert_eq!(err.matches("\n  - ").count(), 1, "{err}");
    }

    #[test]
    fn duplicate_client_ids_are_refused_naming_both_sections() {
        let err = problems(
            "[clients.ecw-prod]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n\
             [clients.ecw-copy]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n",
            &[],
        );
        assert!(
            err.contains("[clients.ecw-copy]") && err.contains("[clients.ecw-prod]"),
            "{err}"
        );
        // Placed at the client_id of the section read second.
        assert!(
            err.contains("jwksd.toml: line 2, column 13: clients.ecw-prod.client_id")
                || err.contains("jwksd.toml: line 5, column 13: clients.ecw-copy.client_id"),
            "{err}"
        );
    }

    #[test]
    fn environment_variables_address_dashed_sections_ignoring_case_and_dashes() {
        let file =
            "[clients.ecw-prod]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n\
                    [keysets.epic-prod]\nalg = \"ES256\"\n[keysets.default]\n";
        let config = load(
            file,
            &[
                ("JWKSD_CLIENTS__ECW_PROD__SCOPE", "system/Patient.read"),
                ("JWKSD_KEYSETS__EPIC_PROD__JWKS_MAX_AGE", "30m"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.access.clients["ecw-prod"].scope.as_deref(),
            Some("system/Patient.read")
        );
        assert_eq!(config.access.clients.len(), 1, "no new section");
        assert_eq!(config.keysets["epic-prod"].timing.jwks_max_age, 1800);
        // A variable that matches no section and would make a client that cannot work.
        let err = problems(
            file,
            &[("JWKSD_CLIENTS__ECWPROD__SCOPE", "system/Patient.read")],
        );
        assert!(err.contains("JWKSD_CLIENTS__ECWPROD__SCOPE"), "{err}");
        assert!(err.contains("ecw-prod"), "names the candidates: {err}");
        // Two sections the variable could mean.
        let err = problems(
            &format!("{file}[clients.ecw_prod]\nclient_id = \"x\"\ntoken_endpoint = \"https://e.example/t\"\n"),
            &[("JWKSD_CLIENTS__ECW_PROD__SCOPE", "system/Patient.read")],
        );
        assert!(
            err.contains("JWKSD_CLIENTS__ECW_PROD__SCOPE")
                && err.contains("ecw-prod")
                && err.contains("ecw_prod"),
            "{err}"
        );
    }

    #[test]
    fn a_configuration_path_written_with_single_underscores_is_refused_saying_what_to_write() {
        for (variable, instead) in [
            ("JWKSD_SERVER_PUBLIC_URL", "JWKSD_SERVER__PUBLIC_URL"),
            ("JWKSD_PUBLIC_URL", "JWKSD_SERVER__PUBLIC_URL"),
            ("JWKSD_MASTER_KEY_FILE", "JWKSD_SERVER__MASTER_KEY_FILE"),
            ("JWKSD_SERVER_PUBLIK_URL", "JWKSD_SERVER__PUBLIK_URL"),
            (
                "JWKSD_KEYSETS_DEFAULT_JWKS_MAX_AGE",
                "JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE",
            ),
            (
                "JWKSD_CLIENTS_ECW_PROD_TOKEN_ENDPOINT",
                "JWKSD_CLIENTS__ECW_PROD__TOKEN_ENDPOINT",
            ),
            (
                "JWKSD_CALLERS_SYNC_TOKEN_FILE",
                "JWKSD_CALLERS__SYNC__TOKEN_FILE",
            ),
            ("JWKSD_CLIENTS_ECW", "JWKSD_CLIENTS__<NAME>__<KEY>"),
        ] {
            let err = problems("", &[(variable, "https://k.example.org")]);
            assert!(
                err.contains(&format!(
                    "{variable} is not read: configuration variables take double underscores \
                     between levels; write {instead}"
                )),
                "{variable}: {err}"
            );
            assert!(
                !err.contains("k.example.org"),
                "the value is not shown: {err}"
            );
            assert_eq!(err.matches("\n  - ").count(), 1, "{err}");
        }
        // The command line's variables, the test harness's, and other variables that look
        // like no configuration path are not refused.
        let config = load(
            "",
            &[
                ("JWKSD_CONFIG", "jwksd.toml"),
                ("JWKSD_SERVER", "http://127.0.0.1:8081"),
                ("JWKSD_ADMIN_TOKEN", "not-a-path"),
                ("JWKSD_CALLER_TOKEN", "not-a-path"),
                ("JWKSD_LOG", "debug"),
                ("JWKSD_INIT", "1"),
                ("JWKSD_UPGRADE_STORE", "0"),
                ("JWKSD_CA_FILE", "/etc/ssl/ca.pem"),
                ("JWKSD_TEST_POSTGRES", "postgres://localhost/x"),
                ("JWKSD_TEST_SERVER_PUBLIC_URL", "x"),
                ("JWKSD_URL", "http://127.0.0.1:8081"),
                ("JWKSD_UPDATE_SCREENSHOT", "1"),
            ],
        )
        .unwrap();
        assert!(config.server.public_url.is_none());
    }

    #[test]
    fn the_default_key_set_exists_only_when_no_key_set_is_configured() {
        let config = load("[keysets.epic-prod]\nalg = \"ES384\"\n", &[]).unwrap();
        assert_eq!(config.keysets.keys().collect::<Vec<_>>(), ["epic-prod"]);
        let config = load("", &[]).unwrap();
        assert_eq!(config.keysets.keys().collect::<Vec<_>>(), ["default"]);
    }

    #[test]
    fn urls_with_a_user_name_or_password_are_refused_without_showing_them() {
        let err = problems(
            "[clients.ecw]\nclient_id = \"abc\"\ntoken_endpoint = \"https://me:hunter22@e.example/t\"\n\
             fhir_base_url = \"https://me@e.example/fhir\"\n",
            &[],
        );
        assert!(err.contains("clients.ecw.token_endpoint"), "{err}");
        assert!(err.contains("clients.ecw.fhir_base_url"), "{err}");
        assert!(err.contains("user name or password"), "{err}");
        assert!(!err.contains("hunter22"), "{err}");
    }

    #[test]
    fn public_url_takes_no_credentials_query_or_fragment() {
        let err = problems(
            "",
            &[(
                "JWKSD_SERVER__PUBLIC_URL",
                "https://u:hunter22@keys.example.org/x?y",
            )],
        );
        assert!(
            err.contains(
                "JWKSD_SERVER__PUBLIC_URL: server.public_url holds a user name or password \
                 (`user:password@` before the host, not shown here); remove it"
            ),
            "{err}"
        );
        assert!(!err.contains("hunter22"), "{err}");
        assert!(err.contains("server.public_url has a query"), "{err}");
        assert_eq!(err.matches("\n  - ").count(), 2, "{err}");
        // Nor is a URL jwksd calls shown as the variable's value when it holds a password.
        let err = problems(
            "",
            &[
                ("JWKSD_CLIENTS__ECW__CLIENT_ID", "abc"),
                (
                    "JWKSD_CLIENTS__ECW__TOKEN_ENDPOINT",
                    "https://me:hunter22@e.example/t",
                ),
            ],
        );
        assert!(
            err.contains(
                "JWKSD_CLIENTS__ECW__TOKEN_ENDPOINT: clients.ecw.token_endpoint holds a user name"
            ),
            "{err}"
        );
        assert!(!err.contains("hunter22"), "{err}");
        let err = problems(
            "[server]\npublic_url = \"https://keys.example.org/jwksd?v=1\"\n",
            &[],
        );
        assert!(
            err.contains(
                "jwksd.toml: line 2, column 14: server.public_url has a query (`?v=1`); remove \
                 it: jwksd appends the JWKS and certificate paths to public_url"
            ),
            "{err}"
        );
        let err = problems(
            "[server]\npublic_url = \"https://keys.example.org/#jwks\"\n",
            &[],
        );
        assert!(
            err.contains("server.public_url has a fragment (`#jwks`); remove it"),
            "{err}"
        );
        // A path prefix stays allowed, without its trailing slash.
        let config = load(
            "[server]\npublic_url = \"https://keys.example.org/jwksd/\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.server.public_url.unwrap().as_str(),
            "https://keys.example.org/jwksd"
        );
    }

    #[test]
    fn durations_in_messages_are_written_as_people_write_them() {
        let err = problems(
            "[keysets.default]\nrotation_period = \"90d\"\nprepublish = \"100d\"\njwks_max_age = \"2h\"\n",
            &[],
        );
        assert!(
            err.contains("rotation_period = 90d is shorter than prepublish = 100d"),
            "{err}"
        );
    }
}
