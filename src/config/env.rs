//! The environment overlay: `JWKSD_` variables laid over the TOML table before it is
//! deserialised. A variable names a path with double underscores
//! (`JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE`); one ending in `_FILE` reads the value from that
//! file. Refused: a variable together with its `_FILE` form, an empty path segment, a
//! value that looks like a TOML list but is not one, a path written with single underscores
//! (`JWKSD_SERVER_PUBLIC_URL`, `JWKSD_PUBLIC_URL`: a section's name or a `[server]` key).
//! Other variables without `__` are the CLI's (or a typo, which is warned about). This
//! module also owns the rule that what a `_FILE` held never appears in a message.
//!
//! Section names are the operator's (`[clients.ecw-prod]`), and a variable name cannot hold
//! a dash: `JWKSD_CLIENTS__ECW_PROD__SCOPE` addresses the section whose name matches `ECW_PROD`
//! ignoring case, `-` and `_`. Two sections that both match are refused (naming the
//! variable and both); none makes a new section, marked so that its problems can say which
//! sections the file has.

use std::collections::HashSet;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::report;

/// Environment variables that are the CLI's, not configuration paths.
pub(super) const CLI_VARIABLES: &[&str] = &[
    "CONFIG",
    "SERVER",
    "ADMIN_TOKEN",
    "LOG",
    "CALLER_TOKEN",
    "INIT",
    "UPGRADE_STORE",
    "CA_FILE",
];
/// Whether `name` (`JWKSD_CONFIG`) is one of the command line's variables, which the
/// overlay leaves alone instead of warning that it names no configuration path.
pub fn is_command_line_variable(name: &str) -> bool {
    name.strip_prefix("JWKSD_")
        .is_some_and(|rest| CLI_VARIABLES.contains(&rest))
}

/// Keys that already name a file; a `_FILE` variable for them sets the path itself.
pub(super) const PATH_KEYS: &[&str] = &[
    "master_key_file",
    "admin_token_file",
    "token_file",
    "tls_cert_file",
    "tls_key_file",
    "private_tls_cert_file",
    "private_tls_key_file",
];
/// Keys whose values are lists: only these are read as TOML (`["a", "b"]`). Every other
/// value is a string as given, so `[::1]:8081` stays an address.
pub(super) const LIST_KEYS: &[&str] =
    &["audiences", "allowed_scopes", "clients", "trusted_proxies"];
/// Keys whose values are secrets: never parsed, never shown.
pub(super) const SECRET_KEYS: &[&str] =
    &["master_key", "admin_token", "token_sha256", "database_url"];

/// Where an environment variable put a value: for messages that say where it came from.
pub(super) struct EnvSource {
    /// The configuration path it set (`["server", "public_url"]`).
    pub(super) path: Vec<String>,
    pub(super) variable: String,
    /// For a `_FILE` variable: the file and what it held (never shown).
    pub(super) file: Option<(PathBuf, SecretString)>,
    /// The value as given, for messages (`JWKSD_X=abc: ...`); `None` for secrets and
    /// file contents, which are never shown.
    pub(super) value: Option<String>,
    /// Whether the variable made a section (`[clients.NAME]`) that did not exist before.
    pub(super) created_section: bool,
}

impl EnvSource {
    /// `JWKSD_X`, or `JWKSD_X_FILE (file /run/x)`.
    pub(super) fn origin(&self) -> String {
        match &self.file {
            None => self.variable.clone(),
            Some((path, _)) => format!("{} (file {})", self.variable, path.display()),
        }
    }
}

/// The keys each section takes (`server`: `public_url`, ...), for recognising a path
/// written with single underscores.
pub(super) type SectionKeys = [(&'static str, Vec<String>)];

/// For `rest` of a variable `JWKSD_<rest>` without `__`: when it looks like a configuration
/// path written with single underscores (it starts with a section's name, `SERVER_...`, or
/// is a `[server]` key, `PUBLIC_URL`, or its `_FILE` form), the variable meant. The command
/// line's variables and the test harness's (`JWKSD_TEST_...`) are never taken for one.
fn single_underscore_path(rest: &str, keys: &SectionKeys) -> Option<String> {
    if CLI_VARIABLES.contains(&rest) || rest.to_ascii_uppercase().starts_with("TEST_") {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    let keys_of = |section: &str| {
        keys.iter()
            .find(|(name, _)| *name == section)
            .map_or(&[][..], |(_, keys)| keys.as_slice())
    };
    let is_key = |section: &str, word: &str| {
        keys_of(section)
            .iter()
            .any(|k| k == word || word.strip_suffix("_file") == Some(k.as_str()))
    };
    if is_key("server", &lower) {
        return Some(format!("JWKSD_SERVER__{rest}"));
    }
    let (section, tail) = ["server"]
        .iter()
        .chain(NAMED_SECTIONS)
        .find_map(|section| {
            let tail = lower.strip_prefix(section)?.strip_prefix('_')?;
            Some((*section, &rest[rest.len() - tail.len()..]))
        })?;
    let upper = section.to_ascii_uppercase();
    if section == "server" {
        if tail.is_empty() {
            return Some("JWKSD_SERVER__<KEY>".to_owned());
        }
        return Some(format!("JWKSD_SERVER__{tail}"));
    }
    // NAME_KEY: the longest known key that ends it, after a name of at least one character.
    let tail_lower = tail.to_ascii_lowercase();
    let key_start = (2..tail.len())
        .filter(|&i| tail.as_bytes()[i - 1] == b'_')
        .find(|&i| is_key(section, &tail_lower[i..]));
    Some(match key_start {
        Some(i) => format!("JWKSD_{upper}__{}__{}", &tail[..i - 1], &tail[i..]),
        None => format!("JWKSD_{upper}__<NAME>__<KEY>"),
    })
}

/// Lays the `JWKSD_` variables of `env` over `table`; returns where each value came from.
pub(super) fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    keys: &SectionKeys,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<EnvSource> {
    let mut sources = Vec::new();
    let mut vars: Vec<_> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("JWKSD_"))
        .collect();
    vars.sort();
    let names: HashSet<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    // Sections the variables made (no such section before them).
    let mut made_sections: HashSet<String> = HashSet::new();
    for (name, value) in vars {
        if let Some(stem) = name.strip_suffix("_FILE") {
            if names.contains(stem) {
                problems.push(format!("{stem} and {name} are both set; keep one"));
                continue;
            }
        }
        let rest = &name["JWKSD_".len()..];
        if !rest.contains("__") {
            if let Some(instead) = single_underscore_path(rest, keys) {
                // The value is not shown: the variable may be meant for a secret.
                problems.push(format!(
                    "{name} is not read: configuration variables take double underscores \
                     between levels; write {instead}"
                ));
            } else if !CLI_VARIABLES.contains(&rest) {
                warnings.push(format!(
                    "ignoring {name}: configuration variables name a path with double \
                     underscores, like JWKSD_SERVER__PUBLIC_URL"
                ));
            }
            continue;
        }
        let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            problems.push(format!("{name} has an empty path segment"));
            continue;
        }
        let mut source = EnvSource {
            path: Vec::new(),
            variable: name.clone(),
            file: None,
            value: None,
            created_section: false,
        };
        match address_section(table, &mut path) {
            Ok(created) => {
                let section = path[..2.min(path.len())].join(".");
                if created {
                    made_sections.insert(section.clone());
                }
                source.created_section = made_sections.contains(&section);
            }
            Err(candidates) => {
                problems.push(format!(
                    "{name}: the section name matches {} (ignoring case, '-' and '_'); rename \
                     one of them so that a variable can address it",
                    candidates.join(" and ")
                ));
                continue;
            }
        }
        let mut value = value;
        let last = path.len() - 1;
        if path[last].ends_with("_file") && !PATH_KEYS.contains(&path[last].as_str()) {
            // The error names the variable, the path and why (e.g. not UTF-8); never the
            // content, which may be a secret.
            match std::fs::read_to_string(&value) {
                Ok(content) => {
                    let file =
                        PathBuf::from(std::mem::replace(&mut value, content.trim().to_owned()));
                    source.file = Some((file, SecretString::from(value.as_str())));
                    let stem_len = path[last].len() - "_file".len();
                    path[last].truncate(stem_len);
                }
                Err(e) => {
                    problems.push(format!(
                        "{name}: cannot read {value}: {e}; name a readable UTF-8 text file"
                    ));
                    continue;
                }
            }
        }
        source.path = path.clone();
        // Only lists are written as TOML; a secret or an address is taken exactly as
        // given, even if it starts with `[`.
        let key = path[path.len() - 1].as_str();
        let is_secret = SECRET_KEYS.contains(&key);
        let is_list = LIST_KEYS.contains(&key);
        if source.file.is_none() && !is_secret {
            source.value = Some(value.clone());
        }
        let parsed = if value.trim_start().starts_with('[') && is_list && !is_secret {
            let text = format!("v = {value}");
            match text.parse::<toml::Table>() {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value)),
                Err(e) => {
                    let at = e.span().map_or(String::new(), |span| {
                        let (_, column) = report::position(&text, span.start);
                        format!(" at column {}", column.saturating_sub("v = ".len()))
                    });
                    problems.push(format!(
                        "{} looks like a list but is not valid TOML{at}: {}; write it like \
                         [\"a\", \"b\"] (the value is not shown, it may hold a secret)",
                        source.origin(),
                        report::safe_message(e.message(), &value)
                    ));
                    continue;
                }
            }
        } else {
            toml::Value::String(value)
        };
        if let Err(e) = set_path(table, &path, parsed) {
            problems.push(format!("{name}: {e}"));
        }
        sources.push(source);
    }
    sources
}

/// Replaces, in each message, what a `_FILE` variable's file held by a reference to the
/// file; a message that still shares a run of characters with such content is replaced
/// as a whole.
pub(super) fn hide_file_contents(messages: Vec<String>, sources: &[EnvSource]) -> Vec<String> {
    messages
        .into_iter()
        .map(|mut message| {
            for source in sources {
                let Some((path, content)) = &source.file else {
                    continue;
                };
                let content = content.expose_secret();
                if content.is_empty() {
                    continue;
                }
                let reference = format!(
                    "(the content of {}, from {})",
                    path.display(),
                    source.variable
                );
                let trimmed = content.trim_end_matches('/');
                for shown in [format!("{content:?}"), format!("{trimmed:?}")] {
                    message = message.replace(&shown, &reference);
                }
                if content.chars().count() >= 8 {
                    message = message.replace(content, &reference);
                }
                if report::echoes(&message, content) {
                    message = format!(
                        "{}: the content is not a valid {} (not shown, it may be a secret)",
                        source.origin(),
                        source.path.join(".")
                    );
                }
            }
            message
        })
        .collect()
}

/// The sections whose keys are names the operator chooses.
pub(super) const NAMED_SECTIONS: &[&str] = &["keysets", "clients", "callers"];

/// Normalises `path[1]` of a named section (`clients`, `keysets`, `callers`) to the name of
/// the one existing section it matches ignoring case, `-` and `_`. `Ok(true)`: none matches,
/// the variable makes a new section; `Err`: several match (their `[kind.name]`s).
fn address_section(table: &toml::Table, path: &mut [String]) -> Result<bool, Vec<String>> {
    let kind = path[0].as_str();
    if path.len() < 2 || !NAMED_SECTIONS.contains(&kind) {
        return Ok(false);
    }
    let fold = |name: &str| name.to_ascii_lowercase().replace('-', "_");
    let wanted = fold(&path[1]);
    let existing: Vec<&String> = table
        .get(kind)
        .and_then(toml::Value::as_table)
        .map(|sections| sections.keys().filter(|n| fold(n) == wanted).collect())
        .unwrap_or_default();
    match existing.as_slice() {
        [] => Ok(true),
        [one] => {
            path[1] = (*one).clone();
            Ok(false)
        }
        several => Err(several.iter().map(|n| format!("[{kind}.{n}]")).collect()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is a value in the file, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}
